package wire

// BuildInfo is what a godwit binary knows about its own build: GET /api/v1/version answers it
// for the hub, and `godwit version` prints it for both sides.
type BuildInfo struct {
	// Version is the release version (v1.4.0), else the module version, else dev-<commit>.
	Version string `json:"version"`
	// Commit is the full VCS revision the binary was built from; empty when unknown.
	Commit string `json:"commit,omitempty"`
	// Modified means the working tree had uncommitted changes at build time.
	Modified bool `json:"modified,omitempty"`
	// CommitDate is the commit's time (RFC 3339); empty when unknown.
	CommitDate string `json:"commit_date,omitempty"`
	// BuildDate is when the release build ran (RFC 3339); empty for a plain `go build`.
	BuildDate string `json:"build_date,omitempty"`
	GoVersion string `json:"go_version"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}
