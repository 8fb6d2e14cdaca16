package untrusted

import (
	"strings"
	"testing"
)

func TestClip(t *testing.T) {
	long := strings.Repeat("a", MaxLen)
	tests := []struct{ in, want string }{
		{"", ""},
		{"kid", "kid"},
		{long, long},
		{long + "b", long + "..."},
	}
	for _, tt := range tests {
		if got := Clip(tt.in); got != tt.want {
			t.Errorf("Clip(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
