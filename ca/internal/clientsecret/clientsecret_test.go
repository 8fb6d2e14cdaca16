package clientsecret

import (
	"strings"
	"testing"
)

func TestDecodePHCBounds(t *testing.T) {
	good := encodePHC(defaultArgon, make([]byte, 16), make([]byte, 32))
	if _, _, _, err := decodePHC(good); err != nil {
		t.Fatalf("decodePHC(%q): %v", good, err)
	}
	for _, bad := range []string{
		"", "$argon2i$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$" + strings.Repeat("A", 43),
		"$argon2id$v=16$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=4000000,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=19456,t=99,p=1$AAAAAAAAAAAAAAAAAAAAAA$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=19456,t=2,p=1$AAAA$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAA",
	} {
		if _, _, _, err := decodePHC(bad); err == nil {
			t.Errorf("decodePHC(%q) accepted it", bad)
		}
	}
}

func TestCheck(t *testing.T) {
	secret, hash, err := New()
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := New()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, hash, secret string
		ok, err            bool
	}{
		{"right secret", hash, secret, true, false},
		{"wrong secret", hash, other, false, false},
		{"no stored hash", "", secret, false, false},
		{"unreadable hash", "$argon2id$broken", secret, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := Check(tt.hash, tt.secret)
			if ok != tt.ok || (err != nil) != tt.err {
				t.Errorf("Check = %v, %v; want %v, error %v", ok, err, tt.ok, tt.err)
			}
		})
	}
}
