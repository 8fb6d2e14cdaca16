package attest

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestParseCgroupFixtures(t *testing.T) {
	tests := []struct {
		file, unit, container string
	}{
		{"v2-systemd-service.txt", "nginx.service", ""},
		{"v2-systemd-service-nested.txt", "containerd.service", ""},
		{"v2-systemd-template-instance.txt", "getty@tty1.service", ""},
		// A user's own systemd names its units freely: only the
		// system-assigned user@UID.service is trusted.
		{"v2-user-unit.txt", "user@1000.service", ""},
		{"v2-session-scope.txt", "", ""},
		{"v2-docker-systemd-driver.txt", "", hex64},
		{"v2-docker-cgroupfs-driver.txt", "", hex64},
		// Cgroups a container (or a delegated service) creates below its
		// own prove nothing.
		{"v2-docker-nested-systemd.txt", "", hex64},
		{"v2-delegated-spoof.txt", "delegated.service", ""},
		{"v2-delegated-spoof-cgroupfs.txt", "delegated.service", ""},
		{"v2-root.txt", "", ""},
		{"v2-init-scope.txt", "", ""},
		{"v2-outside-namespace.txt", "", ""},
		{"v1-docker-cgroupfs.txt", "", hex64},
		{"v1-systemd-service.txt", "postgresql@16-main.service", ""},
		{"hybrid-docker-systemd-driver.txt", "", hex64},
		{"v1-none.txt", "", ""},
		{"conflict-units.txt", "", ""},
		{"conflict-containers.txt", "", ""},
		{"malformed.txt", "", ""},
		{"empty.txt", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "cgroup", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			unit, container := parseCgroup(data)
			if string(unit) != tt.unit || string(container) != tt.container {
				t.Errorf("parseCgroup = unit %q, container %q; want %q, %q", unit, container, tt.unit, tt.container)
			}
		})
	}
}

func TestParseStatusGroupsFixtures(t *testing.T) {
	tests := []struct {
		file string
		want []uint32
		ok   bool
	}{
		{"self.txt", []uint32{4, 24, 27, 1002}, true},
		{"nogroups.txt", nil, true},
		{"missing.txt", nil, false},
		{"badgid.txt", nil, false},
		{"invalidgid.txt", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "status", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseStatusGroups(data, nil)
			if (err == nil) != tt.ok {
				t.Fatalf("parseStatusGroups: %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && !slices.Equal(got, tt.want) {
				t.Errorf("parseStatusGroups = %v, want %v", got, tt.want)
			}
		})
	}
	// The real kernel's format, whatever groups this process has.
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	if _, err := parseStatusGroups(data, nil); err != nil {
		t.Errorf("/proc/self/status: %v", err)
	}
}

func addFixtures(f *testing.F, dir string) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
}

func FuzzParseCgroup(f *testing.F) {
	addFixtures(f, "cgroup")
	if data, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		unit, container := parseCgroup(data)
		// Whatever the input, what comes out is a valid selector value.
		if unit != nil {
			if _, err := ParseSelector("systemd:unit:" + string(unit)); err != nil {
				t.Fatalf("parseCgroup(%q) unit: %v", data, err)
			}
		}
		if container != nil {
			if _, err := ParseSelector("docker:container_id:" + string(container)); err != nil {
				t.Fatalf("parseCgroup(%q) container: %v", data, err)
			}
		}
	})
}

func FuzzParseStatusGroups(f *testing.F) {
	addFixtures(f, "status")
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		gids, err := parseStatusGroups(data, nil)
		if err != nil {
			return
		}
		for _, g := range gids {
			if _, err := ParseSelector("unix:supplementary_gid:" + formatID(g)); err != nil {
				t.Fatalf("parseStatusGroups(%q) gid %d: %v", data, g, err)
			}
		}
	})
}

func TestParseStatState(t *testing.T) {
	for _, tt := range []struct {
		in    string
		state byte
		ok    bool
	}{
		{"1234 (badge) S 1 1234 1234 0 -1", 'S', true},
		{"1234 (badge) Z 1 1234", 'Z', true},
		// The command name is the process's to choose: "x) R (y".
		{"1234 (x) R (y) Z 1 1234", 'Z', true},
		{"1234 (a b) X 1", 'X', true},
		{"", 0, false},
		{"1234 (badge)", 0, false},
		{"1234 (badge) ", 0, false},
		{"1234 (badge)S 1", 0, false},
		{"1234 badge S 1", 0, false},
	} {
		state, ok := parseStatState([]byte(tt.in))
		if state != tt.state || ok != tt.ok {
			t.Errorf("parseStatState(%q) = %q, %v; want %q, %v", tt.in, state, ok, tt.state, tt.ok)
		}
	}
}

func FuzzParseStatState(f *testing.F) {
	if data, err := os.ReadFile("/proc/self/stat"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("1 (x) R (y) Z 1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		state, ok := parseStatState(data)
		if !ok {
			return
		}
		// The state follows the last ") ", and no ")" comes after it.
		i := bytes.LastIndex(data, []byte(") "))
		if i < 0 || data[i+2] != state || bytes.IndexByte(data[i+2:], ')') >= 0 {
			t.Fatalf("parseStatState(%q) = %q, not the letter after the last \") \"", data, state)
		}
	})
}
