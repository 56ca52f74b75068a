// Package buildinfo reports the version of the running binary.
package buildinfo

import "runtime/debug"

// Version is set with -ldflags "-X godwit.dev/godwit/internal/buildinfo.Version=…" in releases.
var Version = ""

// String returns the release version, else the module version or VCS revision, else "dev".
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}
