package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"

	"godwit.dev/godwit/internal/wire"
)

const rev = "0123456789abcdef0123456789abcdef01234567"

func vcs(modified string) []debug.BuildSetting {
	return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev},
		{Key: "vcs.time", Value: "2026-03-01T10:00:00Z"}, {Key: "vcs.modified", Value: modified}}
}

func TestResolve(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	cases := []struct {
		name    string
		stamped [4]string // Version, Commit, CommitDate, BuildDate
		bi      *debug.BuildInfo
		want    wire.BuildInfo
	}{
		{
			name: "no build information at all",
			want: wire.BuildInfo{Version: "dev", GoVersion: runtime.Version(), Platform: platform},
		},
		{
			name: "go build in a clean git checkout",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: vcs("false")},
			want: wire.BuildInfo{Version: "dev-0123456789ab", Commit: rev, CommitDate: "2026-03-01T10:00:00Z", GoVersion: "go1.26.0", Platform: platform},
		},
		{
			name: "go build in a checkout with uncommitted changes",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")},
			want: wire.BuildInfo{Version: "dev-0123456789ab", Commit: rev, Modified: true, CommitDate: "2026-03-01T10:00:00Z", GoVersion: "go1.26.0", Platform: platform},
		},
		{
			name: "go install of a tagged module version (no VCS information)",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "v1.4.0"}},
			want: wire.BuildInfo{Version: "v1.4.0", GoVersion: "go1.26.1", Platform: platform},
		},
		{
			name:    "release build from the same checkout: stamped values win, dirtiness still known",
			stamped: [4]string{"v1.5.0", rev, "2026-03-01T10:00:00Z", "2026-03-02T08:00:00Z"},
			bi:      &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")},
			want: wire.BuildInfo{Version: "v1.5.0", Commit: rev, Modified: true, CommitDate: "2026-03-01T10:00:00Z",
				BuildDate: "2026-03-02T08:00:00Z", GoVersion: "go1.26.0", Platform: platform},
		},
		{
			name:    "release build from a source tarball: nothing recorded, nothing claimed beyond the stamp",
			stamped: [4]string{"v1.5.0", "fedcba9876543210fedcba9876543210fedcba98", "", "2026-03-02T08:00:00Z"},
			bi:      &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")},
			want: wire.BuildInfo{Version: "v1.5.0", Commit: "fedcba9876543210fedcba9876543210fedcba98",
				BuildDate: "2026-03-02T08:00:00Z", GoVersion: "go1.26.0", Platform: platform},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old := [4]string{Version, Commit, CommitDate, BuildDate}
			Version, Commit, CommitDate, BuildDate = tc.stamped[0], tc.stamped[1], tc.stamped[2], tc.stamped[3]
			t.Cleanup(func() { Version, Commit, CommitDate, BuildDate = old[0], old[1], old[2], old[3] })
			if got := resolve(tc.bi); got != tc.want {
				t.Fatalf("resolve:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// The test binary itself carries build information; Get must read it and String must agree.
func TestGetReadsThisBinary(t *testing.T) {
	got := Get()
	if got.GoVersion != runtime.Version() || got.Platform != runtime.GOOS+"/"+runtime.GOARCH || got.Version == "" {
		t.Fatalf("Get() = %+v", got)
	}
	if String() != got.Version {
		t.Fatalf("String() = %q, Get().Version = %q", String(), got.Version)
	}
}
