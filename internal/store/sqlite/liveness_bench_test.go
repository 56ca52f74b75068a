package sqlite_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// BenchmarkUpdateLiveness times one liveness tick's batch of last-seen writes for 10,000 agents
// that stay online: as liveness writes it (the time, the unchanged status, which the store
// leaves out of the statement where it is the stored one, the version and the system
// description) and, for comparison, with the unchanged degraded reason written too.
func BenchmarkUpdateLiveness(b *testing.B) {
	const n = 10000
	s := open(b, filepath.Join(b.TempDir(), "hub.db"))
	ctx := b.Context()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tok := credential.New(credential.PrefixEnroll)
	if err := s.CreateEnrollToken(ctx, wire.EnrollToken{ID: "t", MaxUses: n, ExpiresAt: base.Add(time.Hour), CreatedAt: base}, credential.Hash(tok)); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, n)
	initial := make([]store.Liveness, n)
	for i := range n {
		ids[i] = fmt.Sprintf("0196a000-0000-7000-8000-%012d", i)
		if err := s.Enroll(ctx, credential.Hash(tok), base, wire.Agent{ID: ids[i], Name: fmt.Sprintf("node-%05d", i), EnrolledAt: base}, "x"); err != nil {
			b.Fatal(err)
		}
		initial[i] = store.Liveness{AgentID: ids[i], LastSeen: base, Status: wire.StatusOnline}
	}
	if err := s.UpdateLiveness(ctx, initial); err != nil {
		b.Fatal(err)
	}
	at := base // each write moves every last-seen time forward
	sys := wire.SystemInfo{OS: "linux", Arch: "amd64", Hostname: "node", FreeDiskBytes: 1 << 30}
	for _, bc := range []struct {
		name string
		row  func(id string, at time.Time) store.Liveness
	}{
		{"last-seen", func(id string, at time.Time) store.Liveness {
			return store.Liveness{AgentID: id, LastSeen: at, Status: wire.StatusOnline, Version: "1.0.0", System: &sys}
		}},
		{"unchanged-degraded-too", func(id string, at time.Time) store.Liveness {
			none := ""
			return store.Liveness{AgentID: id, LastSeen: at, Status: wire.StatusOnline, Version: "1.0.0", System: &sys, Degraded: &none}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rows := make([]store.Liveness, n)
			for b.Loop() {
				at = at.Add(time.Minute)
				for i, id := range ids {
					rows[i] = bc.row(id, at)
				}
				if err := s.UpdateLiveness(ctx, rows); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
