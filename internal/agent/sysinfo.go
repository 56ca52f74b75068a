package agent

import (
	"os"
	"runtime"
	"strings"
	"syscall"

	"godwit.dev/godwit/internal/buildinfo"
	"godwit.dev/godwit/internal/wire"
)

// system describes this node, with the digest of the policy the agent enforces.
func (a *Agent) system() wire.SystemInfo {
	si := systemInfo(a.dir.Path)
	si.PolicyDigest = a.policy.Digest()
	return si
}

// systemInfo describes this node. dir is where free disk is measured (the state dir).
func systemInfo(dir string) wire.SystemInfo {
	si := wire.SystemInfo{OS: runtime.GOOS, Arch: runtime.GOARCH, AgentVersion: buildinfo.String()}
	si.Hostname, _ = os.Hostname()
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		si.Kernel = utsString(u.Release[:])
	}
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) == nil {
		si.FreeDiskBytes = st.Bavail * uint64(st.Bsize)
	}
	return si
}

func utsString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}
