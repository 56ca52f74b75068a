package hubcmd

import (
	"bufio"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
)

// cgroupMemoryShare is the part of the cgroup's memory limit the hub takes as its Go runtime's
// soft memory limit when GOMEMLIMIT does not set one: the rest is for what the Go runtime does
// not count (SQLite's page cache, which its C runtime allocates outside the Go heap; the binary)
// and for the margin the soft limit may be overshot by before the kernel's limit kills the hub.
const cgroupMemoryShare = 0.9

// setMemoryLimit gives the Go runtime a soft memory limit of cgroupMemoryShare of the memory
// limit of the hub's cgroup, unless GOMEMLIMIT sets one or there is no limit. Without it the
// runtime sizes its heap by GOGC alone and knows nothing of the container's limit: a fleet's
// worth of connections can take the heap goal past it, and the kernel kills the hub where a
// collection would have done. It returns the limit set, 0 for none.
func setMemoryLimit(log *slog.Logger) int64 {
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		log.Info("go runtime soft memory limit from GOMEMLIMIT", "GOMEMLIMIT", v)
		return 0
	}
	limit, path := cgroupMemoryLimit("/")
	if limit <= 0 {
		return 0
	}
	soft := int64(float64(limit) * cgroupMemoryShare)
	debug.SetMemoryLimit(soft)
	log.Info("go runtime soft memory limit set from the cgroup's memory limit (GOMEMLIMIT overrides it)",
		"limit_bytes", soft, "cgroup_limit_bytes", limit, "cgroup_file", path)
	return soft
}

// unlimited is where cgroup v1 reports "no limit" (page-rounded MaxInt64); anything this large
// is no limit.
const unlimited = 1 << 62

// cgroupMemoryLimit returns the memory limit of this process's cgroup, v2 or v1, read under
// root (the file system's root outside tests), and the file it came from; 0 when there is none
// or it cannot be read.
func cgroupMemoryLimit(root string) (int64, string) {
	raw, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return 0, ""
	}
	var candidates []string
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			candidates = append(candidates, filepath.Join(root, "sys/fs/cgroup", parts[2], "memory.max"),
				filepath.Join(root, "sys/fs/cgroup/memory.max"))
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			candidates = append(candidates, filepath.Join(root, "sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes"),
				filepath.Join(root, "sys/fs/cgroup/memory/memory.limit_in_bytes"))
		}
	}
	for _, p := range candidates {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, p
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= unlimited {
			return 0, p
		}
		return n, p
	}
	return 0, ""
}
