package attest

import (
	"bytes"
	"errors"
)

// parseStatusGroups appends to dst the supplementary group IDs from the
// "Groups:" line of a /proc/<pid>/status file. A missing or malformed line
// is an error: the kernel always writes one, so anything else means we are
// not reading what we think.
func parseStatusGroups(status []byte, dst []uint32) ([]uint32, error) {
	var line []byte
	for rest := status; len(rest) > 0; {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte{'\n'})
		if v, ok := bytes.CutPrefix(l, []byte("Groups:")); ok {
			if line != nil {
				return dst, errors.New("two Groups lines")
			}
			line = v
			if len(line) == 0 {
				line = []byte{} // present but empty: no supplementary groups
			}
		}
	}
	if line == nil {
		return dst, errors.New("no Groups line")
	}
	for len(line) > 0 {
		// The kernel separates groups with one space and starts with a tab.
		for len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			line = line[1:]
		}
		if len(line) == 0 {
			break
		}
		end := bytes.IndexAny(line, " \t")
		if end < 0 {
			end = len(line)
		}
		gid, ok := parseID(line[:end])
		if !ok {
			return dst, errors.New("bad gid in Groups line")
		}
		dst = append(dst, gid)
		line = line[end:]
	}
	return dst, nil
}

// parseCgroup extracts the systemd service unit and the Docker container ID
// from a /proc/<pid>/cgroup file (cgroup v2 "0::/path", v1
// "N:controllers:/path", or both). Either result is nil when the process
// has none, or when the file is malformed or its lines disagree: missing
// optional facts never make attestation fail, and they never guess.
//
// Only the outermost, system-assigned part of a cgroup path is trusted. A
// service with Delegate=yes, a user's systemd instance (user@UID.service)
// and a container may all create cgroups below their own, with any names,
// so a name like "sshd.service" or "docker-<id>.scope" deep in a path
// proves nothing. Like systemd's own cg_path_get_unit, we skip the leading
// slices and look only at the first component after them:
//
//	/system.slice/nginx.service              -> unit nginx.service
//	/system.slice/nginx.service/worker       -> unit nginx.service
//	/user.slice/user-1000.slice/user@1000.service/app.slice/x.service
//	                                         -> unit user@1000.service
//	/system.slice/docker-<id>.scope          -> container <id> (systemd cgroup driver)
//	/docker/<id>                             -> container <id> (cgroupfs driver)
//
// The unit is read from the systemd-managed hierarchies only (v2 and the v1
// name=systemd one); a container ID from any hierarchy. All lines that
// yield a value must yield the same value.
func parseCgroup(data []byte) (unit, container []byte) {
	var unitBad, containerBad bool
	for rest := data; len(rest) > 0; {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte{'\n'})
		if len(line) == 0 {
			continue
		}
		id, after, ok1 := bytes.Cut(line, []byte{':'})
		ctrls, path, ok2 := bytes.Cut(after, []byte{':'})
		if !ok1 || !ok2 || len(id) == 0 {
			return nil, nil
		}
		u, c := classifyCgroupPath(path)
		systemdManaged := (string(id) == "0" && len(ctrls) == 0) || string(ctrls) == "name=systemd"
		if u != nil && systemdManaged {
			if unit != nil && !bytes.Equal(unit, u) {
				unitBad = true
			}
			unit = u
		}
		if c != nil {
			if container != nil && !bytes.Equal(container, c) {
				containerBad = true
			}
			container = c
		}
	}
	if unitBad {
		unit = nil
	}
	if containerBad {
		container = nil
	}
	return unit, container
}

// classifyCgroupPath returns the service unit and container ID that the
// outermost components of one cgroup path name, if any.
func classifyCgroupPath(path []byte) (unit, container []byte) {
	if len(path) == 0 || path[0] != '/' {
		return nil, nil
	}
	rest := path[1:]
	first, rest, _ := bytes.Cut(rest, []byte{'/'})
	// cgroupfs driver: /docker/<id>[/...]
	if string(first) == "docker" {
		id, _, _ := bytes.Cut(rest, []byte{'/'})
		if isLowerHex(id, 64) {
			return nil, id
		}
		return nil, nil
	}
	c := first
	for validUnitName(c, ".slice") {
		if len(rest) == 0 {
			return nil, nil
		}
		c, rest, _ = bytes.Cut(rest, []byte{'/'})
	}
	if validServiceUnit(c) {
		return c, nil
	}
	// systemd cgroup driver: docker-<id>.scope
	if id, ok := bytes.CutPrefix(c, []byte("docker-")); ok {
		if id, ok := bytes.CutSuffix(id, []byte(".scope")); ok && isLowerHex(id, 64) {
			return nil, id
		}
	}
	return nil, nil
}

// parseStatState returns the state letter of a /proc/<pid>/stat file
// ("R", "S", "Z", ...): the field after the command name, which is in
// parentheses and may itself contain ") ", so the last ")" ends it.
func parseStatState(stat []byte) (byte, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) || stat[i+1] != ' ' {
		return 0, false
	}
	return stat[i+2], true
}
