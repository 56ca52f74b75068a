// Package buildinfo reports the version of the running binary.
//
// Release builds (scripts/release) stamp the version, commit and dates with
//
//	-ldflags "-X godwit.dev/godwit/internal/buildinfo.Version=v1.4.0
//	          -X godwit.dev/godwit/internal/buildinfo.Commit=<sha>
//	          -X godwit.dev/godwit/internal/buildinfo.CommitDate=<RFC 3339>
//	          -X godwit.dev/godwit/internal/buildinfo.BuildDate=<RFC 3339>"
//
// What is not stamped comes from what the Go toolchain records in every binary
// (runtime/debug.ReadBuildInfo): the module version for `go install …@v1.4.0`, and the VCS
// revision, commit time and dirty flag for a `go build` in a git checkout. So a binary never
// claims more than it knows: a field nobody recorded stays empty.
package buildinfo

import (
	"runtime"
	"runtime/debug"

	"godwit.dev/godwit/internal/wire"
)

// Set with -ldflags -X in release builds; see the package comment.
var (
	Version    = ""
	Commit     = ""
	CommitDate = ""
	BuildDate  = ""
)

// String returns the version alone: the release version, else the module version or VCS
// revision, else "dev".
func String() string { return Get().Version }

// Get returns everything known about this binary's build.
func Get() wire.BuildInfo {
	bi, _ := debug.ReadBuildInfo()
	return resolve(bi)
}

// resolve merges the stamped variables with what the toolchain recorded in bi (nil when the
// binary carries no build information).
func resolve(bi *debug.BuildInfo) wire.BuildInfo {
	out := wire.BuildInfo{Version: Version, Commit: Commit, CommitDate: CommitDate, BuildDate: BuildDate,
		GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		if out.Version == "" {
			out.Version = "dev"
		}
		return out
	}
	if bi.GoVersion != "" {
		out.GoVersion = bi.GoVersion
	}
	var rev, revTime string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			revTime = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	// The recorded revision describes this binary's tree; the stamped commit may come from a
	// source tarball with no VCS at all. Dirtiness is only known for the recorded revision.
	if out.Commit == "" {
		out.Commit = rev
	}
	if out.Commit == rev {
		out.Modified = modified
		if out.CommitDate == "" {
			out.CommitDate = revTime
		}
	}
	if out.Version == "" {
		switch {
		case bi.Main.Version != "" && bi.Main.Version != "(devel)":
			out.Version = bi.Main.Version
		case len(out.Commit) >= 12:
			out.Version = "dev-" + out.Commit[:12]
		default:
			out.Version = "dev"
		}
	}
	return out
}
