package attest

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

const (
	hex64  = "3f1d2c9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e"
	hex64b = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
)

func TestParseSelectorValid(t *testing.T) {
	tests := []struct {
		in   string
		want Selector
		kind Kind
	}{
		{"unix:uid:0", Selector{"unix", "uid", "0"}, KindUID},
		{"unix:uid:1001", Selector{"unix", "uid", "1001"}, KindUID},
		{"unix:uid:4294967294", Selector{"unix", "uid", "4294967294"}, KindUID},
		{"unix:gid:65534", Selector{"unix", "gid", "65534"}, KindGID},
		{"unix:supplementary_gid:27", Selector{"unix", "supplementary_gid", "27"}, KindSupplementaryGID},
		{"unix:user:root", Selector{"unix", "user", "root"}, KindUser},
		{"unix:user:svc-web_1.x", Selector{"unix", "user", "svc-web_1.x"}, KindUser},
		{"unix:user:alice@corp.example", Selector{"unix", "user", "alice@corp.example"}, KindUser},
		{"unix:user:machine$", Selector{"unix", "user", "machine$"}, KindUser},
		{"unix:user:jürgen", Selector{"unix", "user", "jürgen"}, KindUser},
		{"unix:group:docker", Selector{"unix", "group", "docker"}, KindGroup},
		{"unix:path:/usr/bin/nginx", Selector{"unix", "path", "/usr/bin/nginx"}, KindPath},
		{"unix:path:/", Selector{"unix", "path", "/"}, KindPath},
		{"unix:path:/opt/a:b/c d", Selector{"unix", "path", "/opt/a:b/c d"}, KindPath},
		{"unix:path:/opt/x (deleted)", Selector{"unix", "path", "/opt/x (deleted)"}, KindPath},
		{"unix:sha256:" + hex64, Selector{"unix", "sha256", hex64}, KindSHA256},
		{"systemd:unit:nginx.service", Selector{"systemd", "unit", "nginx.service"}, KindSystemdUnit},
		{"systemd:unit:getty@tty1.service", Selector{"systemd", "unit", "getty@tty1.service"}, KindSystemdUnit},
		{"systemd:unit:user@1000.service", Selector{"systemd", "unit", "user@1000.service"}, KindSystemdUnit},
		{`systemd:unit:systemd-fsck@dev-disk-by\x2duuid-1234.service`, Selector{"systemd", "unit", `systemd-fsck@dev-disk-by\x2duuid-1234.service`}, KindSystemdUnit},
		{"systemd:unit:a:b.service", Selector{"systemd", "unit", "a:b.service"}, KindSystemdUnit},
		{"docker:container_id:" + hex64, Selector{"docker", "container_id", hex64}, KindDockerContainer},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSelector(tt.in)
			if err != nil {
				t.Fatalf("ParseSelector(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseSelector(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
			if k := KindOf(got); k != tt.kind {
				t.Errorf("KindOf = %b, want %b", k, tt.kind)
			}
		})
	}
}

func TestParseSelectorInvalid(t *testing.T) {
	long := "unix:path:/" + strings.Repeat("a", maxPath)
	tests := []struct {
		name, in string
		want     error
	}{
		{"empty", "", ErrSelectorSyntax},
		{"no colon", "unix", ErrSelectorSyntax},
		{"one colon", "unix:uid", ErrSelectorSyntax},
		{"empty type", ":uid:1", ErrSelectorSyntax},
		{"empty key", "unix::1", ErrSelectorSyntax},
		{"unknown type", "k8s:ns:default", ErrUnknownType},
		{"type case", "Unix:uid:1", ErrUnknownType},
		{"type space", " unix:uid:1", ErrUnknownType},
		{"unknown unix key", "unix:pid:1", ErrUnknownKey},
		{"key of other type", "unix:unit:a.service", ErrUnknownKey},
		{"unknown systemd key", "systemd:slice:system.slice", ErrUnknownKey},
		{"unknown docker key", "docker:image_id:" + hex64, ErrUnknownKey},
		{"empty uid", "unix:uid:", ErrEmptyValue},
		{"empty path", "unix:path:", ErrEmptyValue},
		{"uid not a number", "unix:uid:root", ErrInvalidValue},
		{"uid negative", "unix:uid:-1", ErrInvalidValue},
		{"uid plus", "unix:uid:+1", ErrInvalidValue},
		{"uid leading zero", "unix:uid:01", ErrInvalidValue},
		{"uid no-id", "unix:uid:4294967295", ErrInvalidValue},
		{"uid overflow", "unix:uid:99999999999", ErrInvalidValue},
		{"uid space", "unix:uid: 1", ErrInvalidValue},
		{"gid hex", "unix:gid:0x10", ErrInvalidValue},
		{"supplementary gid", "unix:supplementary_gid:1.5", ErrInvalidValue},
		{"user with colon", "unix:user:a:b", ErrInvalidValue},
		{"user with space", "unix:user:a b", ErrInvalidValue},
		{"user with slash", "unix:user:a/b", ErrInvalidValue},
		{"user leading dash", "unix:user:-rf", ErrInvalidValue},
		{"user newline", "unix:user:a\nb", ErrInvalidValue},
		{"user bad utf8", "unix:user:\xff", ErrInvalidValue},
		{"user too long", "unix:user:" + strings.Repeat("a", 257), ErrInvalidValue},
		{"group tab", "unix:group:a\tb", ErrInvalidValue},
		{"relative path", "unix:path:usr/bin/x", ErrInvalidValue},
		{"dot path", "unix:path:./x", ErrInvalidValue},
		{"unclean path dotdot", "unix:path:/usr/../bin/x", ErrInvalidValue},
		{"unclean path double slash", "unix:path://usr/bin/x", ErrInvalidValue},
		{"unclean path trailing slash", "unix:path:/usr/bin/", ErrInvalidValue},
		{"path newline", "unix:path:/usr/bin/x\n", ErrInvalidValue},
		{"path nul", "unix:path:/usr/bin/x\x00y", ErrInvalidValue},
		{"path bad utf8", "unix:path:/usr/bin/\xff", ErrInvalidValue},
		{"path too long", long, ErrInvalidValue},
		{"sha256 upper", "unix:sha256:" + strings.ToUpper(hex64), ErrInvalidValue},
		{"sha256 short", "unix:sha256:" + hex64[:63], ErrInvalidValue},
		{"sha256 long", "unix:sha256:" + hex64 + "0", ErrInvalidValue},
		{"sha256 not hex", "unix:sha256:" + strings.Repeat("g", 64), ErrInvalidValue},
		{"unit not service", "systemd:unit:session-1.scope", ErrInvalidValue},
		{"unit suffix only", "systemd:unit:.service", ErrInvalidValue},
		{"unit bad char", "systemd:unit:a b.service", ErrInvalidValue},
		{"unit slash", "systemd:unit:a/b.service", ErrInvalidValue},
		{"unit leading at", "systemd:unit:@x.service", ErrInvalidValue},
		{"unit too long", "systemd:unit:" + strings.Repeat("a", 248) + ".service", ErrInvalidValue},
		{"container short id", "docker:container_id:" + hex64[:12], ErrInvalidValue},
		{"container upper", "docker:container_id:" + strings.ToUpper(hex64), ErrInvalidValue},
		{"container name", "docker:container_id:web", ErrInvalidValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSelector(tt.in)
			if err == nil {
				t.Fatalf("ParseSelector(%q) = %#v, want error %v", tt.in, got, tt.want)
			}
			if got != (Selector{}) {
				t.Errorf("ParseSelector(%q) returned %#v with its error", tt.in, got)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("ParseSelector(%q) error %v, want errors.Is %v", tt.in, err, tt.want)
			}
			if !errors.Is(err, ErrInvalidSelector) {
				t.Errorf("error %v does not match ErrInvalidSelector", err)
			}
			var se *SelectorError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not a *SelectorError", err)
			}
			if se.Input != tt.in || se.Err != tt.want || se.Reason == "" {
				t.Errorf("SelectorError = %+v", se)
			}
			if !utf8.ValidString(err.Error()) || strings.ContainsAny(err.Error(), "\n\x00") {
				t.Errorf("error message is not one clean line: %q", err.Error())
			}
		})
	}
}

func TestKindsOf(t *testing.T) {
	sels := []Selector{
		{"unix", "uid", "1"}, {"unix", "sha256", hex64}, {"docker", "container_id", hex64},
		{"nope", "x", "y"},
	}
	if got, want := KindsOf(sels), KindUID|KindSHA256|KindDockerContainer; got != want {
		t.Errorf("KindsOf = %b, want %b", got, want)
	}
	if KindsOf(nil) != 0 {
		t.Error("KindsOf(nil) != 0")
	}
	// Every kind bit has exactly one type:key.
	var seen Kind
	for _, s := range []string{"unix:uid", "unix:user", "unix:gid", "unix:group", "unix:supplementary_gid",
		"unix:path", "unix:sha256", "systemd:unit", "docker:container_id"} {
		typ, key, _ := strings.Cut(s, ":")
		k := KindOf(Selector{Type: typ, Key: key})
		if k == 0 || k&(k-1) != 0 || seen&k != 0 {
			t.Errorf("KindOf(%s) = %b", s, k)
		}
		seen |= k
	}
	if seen != KindAll {
		t.Errorf("kinds of all keys = %b, want KindAll %b", seen, KindAll)
	}
}

func TestSetMatches(t *testing.T) {
	uid := Selector{"unix", "uid", "1001"}
	path := Selector{"unix", "path", "/usr/bin/web"}
	unit := Selector{"systemd", "unit", "web.service"}
	set := Set{uid: {}, path: {}}
	tests := []struct {
		name string
		want []Selector
		ok   bool
	}{
		{"nil", nil, false},
		{"empty", []Selector{}, false},
		{"one", []Selector{uid}, true},
		{"all", []Selector{path, uid}, true},
		{"duplicate", []Selector{uid, uid}, true},
		{"missing one", []Selector{uid, unit}, false},
		{"other value", []Selector{{"unix", "uid", "1002"}}, false},
	}
	for _, tt := range tests {
		if got := set.Matches(tt.want); got != tt.ok {
			t.Errorf("%s: Matches(%v) = %v, want %v", tt.name, tt.want, got, tt.ok)
		}
	}
	if (Set{}).Matches([]Selector{uid}) || Set(nil).Matches([]Selector{uid}) || Set(nil).Matches(nil) {
		t.Error("an empty set matched")
	}
}

func TestSetSelectorsSorted(t *testing.T) {
	set := Set{
		{"unix", "uid", "2"}: {}, {"docker", "container_id", hex64}: {}, {"unix", "gid", "5"}: {},
		{"unix", "uid", "10"}: {}, {"systemd", "unit", "a.service"}: {},
	}
	got := set.Selectors()
	want := []Selector{
		{"docker", "container_id", hex64}, {"systemd", "unit", "a.service"}, {"unix", "gid", "5"},
		{"unix", "uid", "10"}, {"unix", "uid", "2"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Selectors() = %v, want %v", got, want)
	}
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{
		"unix:uid:0", "unix:uid:01", "unix:user:root", "unix:path:/a:b", "unix:path:/a/../b",
		"unix:sha256:" + hex64, "systemd:unit:getty@tty1.service", "docker:container_id:" + hex64,
		"docker:container_id:" + hex64[:12], "unix::", "::", ":", "", "unix:supplementary_gid:4294967294",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSelector(in)
		if err != nil {
			var se *SelectorError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSelector) || s != (Selector{}) {
				t.Fatalf("ParseSelector(%q): bad failure %#v, %v", in, s, err)
			}
			return
		}
		if s.String() != in {
			t.Fatalf("ParseSelector(%q).String() = %q", in, s.String())
		}
		again, err := ParseSelector(s.String())
		if err != nil || again != s {
			t.Fatalf("round trip of %q: %#v, %v", in, again, err)
		}
		if KindOf(s) == 0 {
			t.Fatalf("valid selector %q has no kind", in)
		}
	})
}
