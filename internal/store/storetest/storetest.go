// Package storetest is the one store test suite, run against every engine (riverqueue/river's
// riverdrivertest is the model). An engine's package calls Run from its own tests with a function
// that opens a fresh, migrated, empty store; so SQLite and PostgreSQL are held to the same contract.
package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlstore"
	"godwit.dev/godwit/internal/wire"
)

// base is the suite's "now": in a zone other than UTC and with nanoseconds, so the tests see that
// the store keeps microseconds and hands times back in UTC.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+5:30", 5*3600+1800))

// stored is what the store is expected to give back for t: microsecond precision, in UTC.
func stored(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

// Run runs the suite. Every sub-test calls open for a store of its own; open must return a fresh,
// migrated, empty store and close it in a t.Cleanup. Sub-tests run in parallel.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()

	// setup opens the sub-test's store and marks the sub-test parallel.
	setup := func(t *testing.T) store.Store {
		t.Helper()
		t.Parallel()
		return open(t)
	}

	t.Run("Basics", func(t *testing.T) {
		s := setup(t)
		ctx := t.Context()
		if e := s.Engine(); e != "sqlite" && e != "postgres" {
			t.Fatalf("Engine() = %q, want sqlite or postgres", e)
		}
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		v, err := s.SchemaVersion(ctx)
		if err != nil {
			t.Fatalf("SchemaVersion: %v", err)
		}
		if want := sqlstore.LatestVersion(s.Engine()); v != want || v < 1 {
			t.Fatalf("SchemaVersion = %d, want LatestVersion(%s) = %d (>= 1)", v, s.Engine(), want)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := s.Ping(ctx); err == nil {
			t.Fatal("Ping after Close succeeded")
		}
	})

	t.Run("AdminToken", func(t *testing.T) {
		t.Run("FirstWins", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			requireIs(t, s.CheckAdminToken(ctx, "first"), fault.ErrUnauthenticated, "CheckAdminToken before InitAdminToken")
			created, err := s.InitAdminToken(ctx, "first", base)
			if err != nil || !created {
				t.Fatalf("first InitAdminToken = %v, %v; want true, nil", created, err)
			}
			created, err = s.InitAdminToken(ctx, "second", base.Add(time.Minute))
			if err != nil || created {
				t.Fatalf("second InitAdminToken = %v, %v; want false, nil", created, err)
			}
			// The same hash again is no exception: it was not stored by this call.
			created, err = s.InitAdminToken(ctx, "first", base.Add(time.Minute))
			if err != nil || created {
				t.Fatalf("InitAdminToken with the stored hash = %v, %v; want false, nil", created, err)
			}
			if err := s.CheckAdminToken(ctx, "first"); err != nil {
				t.Fatalf("CheckAdminToken(first): %v", err)
			}
			for _, h := range []string{"second", "", "firs", "first "} {
				requireIs(t, s.CheckAdminToken(ctx, h), fault.ErrUnauthenticated, fmt.Sprintf("CheckAdminToken(%q)", h))
			}
		})

		t.Run("EnsureSetting", func(t *testing.T) {
			// Hubs starting at once on one database: the first value is kept, and every hub gets it.
			s := setup(t)
			ctx := t.Context()
			const n = 8
			got := make([]string, n)
			errs := make([]error, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					got[i], errs[i] = s.EnsureSetting(ctx, "callout_seed", fmt.Sprintf("value-%d", i), base)
				})
			}
			close(start)
			wg.Wait()
			for i := range n {
				if errs[i] != nil || got[i] != got[0] || !strings.HasPrefix(got[0], "value-") {
					t.Fatalf("EnsureSetting #%d = %q, %v; #0 got %q", i, got[i], errs[i], got[0])
				}
			}
			if v, err := s.EnsureSetting(ctx, "callout_seed", "later", base.Add(time.Hour)); err != nil || v != got[0] {
				t.Fatalf("EnsureSetting after the first = %q, %v; want %q", v, err, got[0])
			}
			if v, err := s.EnsureSetting(ctx, "other", "x", base); err != nil || v != "x" {
				t.Fatalf("EnsureSetting(other) = %q, %v", v, err)
			}
			// The admin token's hash is not a setting: it cannot be read or planted this way.
			created, err := s.InitAdminToken(ctx, "admin-hash", base)
			if err != nil || !created {
				t.Fatal(err)
			}
			if v, err := s.EnsureSetting(ctx, "admin_token_hash", "planted", base); !errors.Is(err, fault.ErrInvalid) || v != "" {
				t.Fatalf("EnsureSetting(admin_token_hash) = %q, %v; want ErrInvalid", v, err)
			}
			requireIs(t, s.CheckAdminToken(ctx, "planted"), fault.ErrUnauthenticated, "CheckAdminToken(planted)")
		})

		t.Run("Concurrent", func(t *testing.T) {
			// Hubs starting at once: exactly one stores its hash, and that one is the token.
			s := setup(t)
			ctx := t.Context()
			const n = 8
			created := make([]bool, n)
			errs := make([]error, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					created[i], errs[i] = s.InitAdminToken(ctx, fmt.Sprintf("hash-%d", i), base)
				})
			}
			close(start)
			wg.Wait()
			winner := -1
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("InitAdminToken #%d: %v", i, errs[i])
				}
				if created[i] {
					if winner >= 0 {
						t.Fatalf("InitAdminToken created twice: #%d and #%d", winner, i)
					}
					winner = i
				}
			}
			if winner < 0 {
				t.Fatal("no InitAdminToken call reported created")
			}
			for i := range n {
				err := s.CheckAdminToken(ctx, fmt.Sprintf("hash-%d", i))
				if i == winner && err != nil {
					t.Fatalf("CheckAdminToken(winner hash-%d): %v", i, err)
				}
				if i != winner {
					requireIs(t, err, fault.ErrUnauthenticated, fmt.Sprintf("CheckAdminToken(loser hash-%d)", i))
				}
			}
		})
	})

	t.Run("EnrollTokens", func(t *testing.T) {
		s := setup(t)
		ctx := t.Context()
		if got := listTokens(t, s); len(got) != 0 {
			t.Fatalf("ListEnrollTokens on an empty store = %+v", got)
		}
		// Created out of order, so the list's order comes from created_at, not insertion.
		later := wire.EnrollToken{ID: "tok-b", Description: "rack 7", MaxUses: 3,
			ExpiresAt: base.Add(48 * time.Hour), CreatedAt: base.Add(time.Second)}
		earlier := wire.EnrollToken{ID: "tok-a", MaxUses: 1,
			ExpiresAt: base.Add(time.Hour), CreatedAt: base}
		for _, tk := range []wire.EnrollToken{later, earlier} {
			if err := s.CreateEnrollToken(ctx, tk, "hash-"+tk.ID); err != nil {
				t.Fatalf("CreateEnrollToken(%s): %v", tk.ID, err)
			}
		}
		// A second token with an existing ID is refused and the first one is left as it was.
		dup := wire.EnrollToken{ID: "tok-a", MaxUses: 99, ExpiresAt: base.Add(99 * time.Hour), CreatedAt: base}
		if err := s.CreateEnrollToken(ctx, dup, "hash-other"); err == nil {
			t.Fatal("CreateEnrollToken with a duplicate ID succeeded")
		}
		// So is a second token with an existing hash.
		dupHash := wire.EnrollToken{ID: "tok-c", MaxUses: 1, ExpiresAt: base.Add(time.Hour), CreatedAt: base}
		if err := s.CreateEnrollToken(ctx, dupHash, "hash-tok-a"); err == nil {
			t.Fatal("CreateEnrollToken with a duplicate hash succeeded")
		}
		want := []wire.EnrollToken{storedToken(earlier, 0), storedToken(later, 0)}
		if got := listTokens(t, s); !reflect.DeepEqual(got, want) {
			t.Fatalf("ListEnrollTokens:\n got %+v\nwant %+v", got, want)
		}
		for _, tk := range listTokens(t, s) {
			if tk.ExpiresAt.Location() != time.UTC || tk.CreatedAt.Location() != time.UTC {
				t.Fatalf("token %s times not in UTC: %v, %v", tk.ID, tk.ExpiresAt, tk.CreatedAt)
			}
		}

		if err := s.DeleteEnrollToken(ctx, "tok-a"); err != nil {
			t.Fatalf("DeleteEnrollToken(tok-a): %v", err)
		}
		if got := listTokens(t, s); !reflect.DeepEqual(got, want[1:]) {
			t.Fatalf("ListEnrollTokens after delete:\n got %+v\nwant %+v", got, want[1:])
		}
		requireIs(t, s.DeleteEnrollToken(ctx, "tok-a"), fault.ErrNotFound, "DeleteEnrollToken twice")
		requireIs(t, s.DeleteEnrollToken(ctx, "no-such-token"), fault.ErrNotFound, "DeleteEnrollToken(unknown)")
		// The secret of a deleted token no longer enrolls anything.
		err := s.Enroll(ctx, "hash-tok-a", base, agent("a1", "node-1"), "cred")
		requireIs(t, err, fault.ErrUnauthenticated, "Enroll with a deleted token")
		requireNoAgent(t, s, "a1")
	})

	t.Run("Enroll", func(t *testing.T) {
		t.Run("ConsumesUses", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			tk := createToken(t, s, "tok", "secret", 2, base.Add(time.Hour))
			for i, id := range []string{"a1", "a2"} {
				if err := s.Enroll(ctx, "secret", base.Add(time.Duration(i)*time.Minute), agent(id, "node-"+id), "cred-"+id); err != nil {
					t.Fatalf("Enroll(%s): %v", id, err)
				}
				requireUses(t, s, tk.ID, i+1)
			}
			err := s.Enroll(ctx, "secret", base.Add(2*time.Minute), agent("a3", "node-a3"), "cred-a3")
			requireIs(t, err, fault.ErrForbidden, "Enroll past max uses")
			requireNoAgent(t, s, "a3")
			requireUses(t, s, tk.ID, 2)
			if got := listAgents(t, s); len(got) != 2 {
				t.Fatalf("ListAgents = %d agents, want 2", len(got))
			}
		})

		t.Run("CreatesAgent", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			createToken(t, s, "tok", "secret", 1, base.Add(time.Hour))
			a := agent("a1", "node-1")
			a.Status = wire.StatusOnline // not the caller's to choose: a new agent is unknown
			a.LastSeen = base            // nor this: it comes from heartbeats
			if err := s.Enroll(ctx, "secret", base, a, "cred-1"); err != nil {
				t.Fatalf("Enroll: %v", err)
			}
			got := getAgent(t, s, "a1")
			want := storedAgent(a)
			want.Status, want.LastSeen = wire.StatusUnknown, time.Time{}
			requireAgent(t, got, want)
		})

		t.Run("Expired", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			expires := base.Add(time.Hour)
			tk := createToken(t, s, "tok", "secret", 5, expires)
			// The token is valid strictly before its expiry time, to the microsecond.
			err := s.Enroll(ctx, "secret", expires, agent("a1", "node-1"), "cred")
			requireIs(t, err, fault.ErrForbidden, "Enroll at the expiry time")
			err = s.Enroll(ctx, "secret", expires.Add(time.Hour), agent("a1", "node-1"), "cred")
			requireIs(t, err, fault.ErrForbidden, "Enroll after the expiry time")
			requireNoAgent(t, s, "a1")
			requireUses(t, s, tk.ID, 0)
			if err := s.Enroll(ctx, "secret", expires.Add(-time.Microsecond), agent("a2", "node-2"), "cred"); err != nil {
				t.Fatalf("Enroll a microsecond before expiry: %v", err)
			}
			requireUses(t, s, tk.ID, 1)
		})

		t.Run("UnknownToken", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			tk := createToken(t, s, "tok", "secret", 5, base.Add(time.Hour))
			// The token's ID is not its secret.
			for _, h := range []string{"wrong", "", tk.ID} {
				err := s.Enroll(ctx, h, base, agent("a1", "node-1"), "cred")
				requireIs(t, err, fault.ErrUnauthenticated, fmt.Sprintf("Enroll(%q)", h))
			}
			requireNoAgent(t, s, "a1")
			requireUses(t, s, tk.ID, 0)
		})

		t.Run("FailedInsertConsumesNothing", func(t *testing.T) {
			// The agent insert fails (duplicate ID) after the use was counted: the count rolls back.
			s := setup(t)
			ctx := t.Context()
			tk := createToken(t, s, "tok", "secret", 5, base.Add(time.Hour))
			first := agent("a1", "node-1")
			if err := s.Enroll(ctx, "secret", base, first, "cred-1"); err != nil {
				t.Fatalf("Enroll: %v", err)
			}
			second := agent("a1", "impostor")
			second.Labels = map[string]string{"role": "impostor"}
			if err := s.Enroll(ctx, "secret", base.Add(time.Minute), second, "cred-2"); err == nil {
				t.Fatal("Enroll with a duplicate agent ID succeeded")
			}
			requireUses(t, s, tk.ID, 1)
			requireAgent(t, getAgent(t, s, "a1"), storedAgent(first))
			if hash, _, err := s.AgentCredential(ctx, "a1"); err != nil || hash != "cred-1" {
				t.Fatalf("AgentCredential(a1) = %q, %v; want cred-1", hash, err)
			}
			if got := listAgents(t, s); len(got) != 1 {
				t.Fatalf("ListAgents = %d agents, want 1", len(got))
			}
		})

		t.Run("Concurrent", func(t *testing.T) {
			// N enrollments race for K < N uses: exactly K win, the rest are refused, none fail
			// for any other reason (a busy database is the store's problem, not the caller's).
			s := setup(t)
			ctx := t.Context()
			const n, k = 16, 5
			tk := createToken(t, s, "tok", "secret", k, base.Add(time.Hour))
			errs := make([]error, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					id := fmt.Sprintf("a%02d", i)
					errs[i] = s.Enroll(ctx, "secret", base, agent(id, "node-"+id), "cred-"+id)
				})
			}
			close(start)
			wg.Wait()
			won := map[string]bool{}
			for i, err := range errs {
				switch {
				case err == nil:
					won[fmt.Sprintf("a%02d", i)] = true
				case errors.Is(err, fault.ErrForbidden):
				default:
					t.Errorf("Enroll #%d: %v, want nil or ErrForbidden", i, err)
				}
			}
			if len(won) != k {
				t.Fatalf("%d enrollments succeeded, want %d", len(won), k)
			}
			requireUses(t, s, tk.ID, k)
			got := listAgents(t, s)
			if len(got) != k {
				t.Fatalf("ListAgents = %d agents, want %d", len(got), k)
			}
			for _, a := range got {
				if !won[a.ID] {
					t.Fatalf("agent %s exists but its Enroll failed", a.ID)
				}
			}
		})
	})

	t.Run("Agents", func(t *testing.T) {
		s := setup(t)
		ctx := t.Context()
		createToken(t, s, "tok", "secret", 10, base.Add(time.Hour))
		full := agent("a-full", "web-1")
		full.Labels = map[string]string{"site": "ams", "role": "db", "tier": "", "ünïcode": "✓ \"quoted\""}
		full.Version = "1.4.2"
		full.System = wire.SystemInfo{OS: "linux", Arch: "arm64", Kernel: "6.8.0-45-generic",
			Hostname: "web-1.ams", AgentVersion: "1.4.2", FreeDiskBytes: 1<<63 + 12345}
		full.EnrolledAt = base.Add(-time.Hour)
		bare := wire.Agent{ID: "a-bare", Name: "app-1", EnrolledAt: base}
		// Same name as full, revoked before full enrolls (names are unique among unrevoked
		// agents): the ID breaks the tie.
		twin := agent("a-twin", "web-1")
		for _, a := range []wire.Agent{bare, twin, full} {
			if err := s.Enroll(ctx, "secret", base, a, "cred-"+a.ID); err != nil {
				t.Fatalf("Enroll(%s): %v", a.ID, err)
			}
			if a.ID == twin.ID {
				if err := s.RevokeAgent(ctx, twin.ID, base); err != nil {
					t.Fatal(err)
				}
			}
		}

		got := getAgent(t, s, "a-full")
		requireAgent(t, got, storedAgent(full))
		if got.EnrolledAt.Nanosecond()%1000 != 0 || got.EnrolledAt.Location() != time.UTC {
			t.Fatalf("EnrolledAt = %v, want microseconds in UTC", got.EnrolledAt)
		}
		gotBare := getAgent(t, s, "a-bare")
		if len(gotBare.Labels) != 0 || gotBare.System != (wire.SystemInfo{}) || gotBare.Version != "" {
			t.Fatalf("agent without labels, system or version came back as %+v", gotBare)
		}

		_, err := s.GetAgent(ctx, "no-such-agent")
		requireIs(t, err, fault.ErrNotFound, "GetAgent(unknown)")

		list := listAgents(t, s)
		var ids []string
		for _, a := range list {
			ids = append(ids, a.ID)
		}
		if want := []string{"a-bare", "a-full", "a-twin"}; !reflect.DeepEqual(ids, want) {
			t.Fatalf("ListAgents order = %v, want %v (by name, then ID)", ids, want)
		}
		requireAgent(t, list[1], storedAgent(full))
	})

	t.Run("AgentCredential", func(t *testing.T) {
		s := setup(t)
		ctx := t.Context()
		createToken(t, s, "tok", "secret", 2, base.Add(time.Hour))
		for _, id := range []string{"a1", "a2"} {
			if err := s.Enroll(ctx, "secret", base, agent(id, "node-"+id), "cred-"+id); err != nil {
				t.Fatalf("Enroll(%s): %v", id, err)
			}
		}
		for _, id := range []string{"a1", "a2"} {
			hash, revoked, err := s.AgentCredential(ctx, id)
			if err != nil || hash != "cred-"+id || revoked {
				t.Fatalf("AgentCredential(%s) = %q, %v, %v; want cred-%s, false, nil", id, hash, revoked, err, id)
			}
		}
		if err := s.RevokeAgent(ctx, "a1", base); err != nil {
			t.Fatalf("RevokeAgent: %v", err)
		}
		if hash, revoked, err := s.AgentCredential(ctx, "a1"); err != nil || hash != "cred-a1" || !revoked {
			t.Fatalf("AgentCredential(a1) after revoke = %q, %v, %v; want cred-a1, true, nil", hash, revoked, err)
		}
		if _, revoked, err := s.AgentCredential(ctx, "a2"); err != nil || revoked {
			t.Fatalf("AgentCredential(a2) = revoked %v, %v; revoking a1 touched a2", revoked, err)
		}
		_, _, err := s.AgentCredential(ctx, "no-such-agent")
		requireIs(t, err, fault.ErrNotFound, "AgentCredential(unknown)")
	})

	t.Run("RevokeAgent", func(t *testing.T) {
		s := setup(t)
		ctx := t.Context()
		createToken(t, s, "tok", "secret", 2, base.Add(time.Hour))
		for _, id := range []string{"a1", "a2"} {
			if err := s.Enroll(ctx, "secret", base, agent(id, "node-"+id), "cred-"+id); err != nil {
				t.Fatalf("Enroll(%s): %v", id, err)
			}
		}
		first := base.Add(time.Hour)
		if err := s.RevokeAgent(ctx, "a1", first); err != nil {
			t.Fatalf("RevokeAgent: %v", err)
		}
		if err := s.RevokeAgent(ctx, "a1", first.Add(time.Hour)); err != nil {
			t.Fatalf("RevokeAgent a second time: %v", err)
		}
		got := getAgent(t, s, "a1")
		if got.RevokedAt == nil || !got.RevokedAt.Equal(stored(first)) || got.RevokedAt.Location() != time.UTC {
			t.Fatalf("RevokedAt = %v, want the first revocation %v in UTC", got.RevokedAt, stored(first))
		}
		if got := getAgent(t, s, "a2"); got.RevokedAt != nil {
			t.Fatalf("a2 RevokedAt = %v; revoking a1 touched a2", got.RevokedAt)
		}
		requireIs(t, s.RevokeAgent(ctx, "no-such-agent", base), fault.ErrNotFound, "RevokeAgent(unknown)")
	})

	t.Run("UpdateLiveness", func(t *testing.T) {
		s := setup(t)
		ctx := t.Context()
		createToken(t, s, "tok", "secret", 3, base.Add(time.Hour))
		for _, id := range []string{"a1", "a2", "a3"} {
			a := agent(id, "node-"+id)
			a.Version = "1.0.0"
			a.System = wire.SystemInfo{OS: "linux", Hostname: id}
			if err := s.Enroll(ctx, "secret", base, a, "cred-"+id); err != nil {
				t.Fatalf("Enroll(%s): %v", id, err)
			}
		}
		if err := s.UpdateLiveness(ctx, nil); err != nil {
			t.Fatalf("UpdateLiveness(nil): %v", err)
		}

		// One batch, several agents.
		seen := base.Add(10 * time.Minute)
		sys2 := wire.SystemInfo{OS: "linux", Arch: "amd64", Hostname: "a1", FreeDiskBytes: 42}
		err := s.UpdateLiveness(ctx, []store.Liveness{
			{AgentID: "a1", LastSeen: seen, Status: wire.StatusOnline, Version: "1.1.0", System: &sys2},
			{AgentID: "a2", LastSeen: seen.Add(time.Second), Status: wire.StatusOnline},
		})
		if err != nil {
			t.Fatalf("UpdateLiveness: %v", err)
		}
		a1 := getAgent(t, s, "a1")
		if !a1.LastSeen.Equal(stored(seen)) || a1.LastSeen.Location() != time.UTC || a1.Status != wire.StatusOnline ||
			a1.Version != "1.1.0" || a1.System != sys2 {
			t.Fatalf("a1 after heartbeat = %+v", a1)
		}
		a2 := getAgent(t, s, "a2")
		if !a2.LastSeen.Equal(stored(seen.Add(time.Second))) || a2.Status != wire.StatusOnline ||
			a2.Version != "1.0.0" || a2.System != (wire.SystemInfo{OS: "linux", Hostname: "a2"}) {
			t.Fatalf("a2 after heartbeat without version or system = %+v", a2)
		}
		if a3 := getAgent(t, s, "a3"); !a3.LastSeen.IsZero() || a3.Status != wire.StatusUnknown {
			t.Fatalf("a3 was not in the batch but changed: %+v", a3)
		}

		// An older heartbeat (or none) never moves last_seen back; status still follows.
		for _, ls := range []time.Time{seen.Add(-time.Minute), seen.Add(-time.Microsecond), seen, {}} {
			err := s.UpdateLiveness(ctx, []store.Liveness{{AgentID: "a1", LastSeen: ls, Status: wire.StatusOffline}})
			if err != nil {
				t.Fatalf("UpdateLiveness(last seen %v): %v", ls, err)
			}
			a1 := getAgent(t, s, "a1")
			if !a1.LastSeen.Equal(stored(seen)) || a1.Status != wire.StatusOffline || a1.Version != "1.1.0" || a1.System != sys2 {
				t.Fatalf("a1 after heartbeat at %v = %+v; want last seen %v, offline, 1.1.0, %+v", ls, a1, stored(seen), sys2)
			}
		}
		// No status keeps the stored one (and the version and system, when not given).
		later := seen.Add(time.Minute)
		if err := s.UpdateLiveness(ctx, []store.Liveness{{AgentID: "a1", LastSeen: later}}); err != nil {
			t.Fatalf("UpdateLiveness without status: %v", err)
		}
		if a1 := getAgent(t, s, "a1"); !a1.LastSeen.Equal(stored(later)) || a1.Status != wire.StatusOffline || a1.Version != "1.1.0" || a1.System != sys2 {
			t.Fatalf("a1 after a last-seen write without status = %+v; want last seen %v, still offline, 1.1.0, %+v", a1, stored(later), sys2)
		}
		seen = later
		// A newer one does, by as little as a microsecond.
		newer := seen.Add(time.Microsecond)
		if err := s.UpdateLiveness(ctx, []store.Liveness{{AgentID: "a1", LastSeen: newer, Status: wire.StatusOnline}}); err != nil {
			t.Fatalf("UpdateLiveness: %v", err)
		}
		if a1 := getAgent(t, s, "a1"); !a1.LastSeen.Equal(stored(newer)) || a1.Status != wire.StatusOnline {
			t.Fatalf("a1 after newer heartbeat = %+v; want last seen %v, online", a1, stored(newer))
		}

		// The degraded reason follows the heartbeats that carry one (empty clears it); an
		// update without one keeps it.
		reason, healthy := "cannot write the runner journal: database or disk is full (13)", ""
		for _, step := range []struct {
			set  *string
			want string
		}{{&reason, reason}, {nil, reason}, {&healthy, ""}, {nil, ""}} {
			if err := s.UpdateLiveness(ctx, []store.Liveness{{AgentID: "a2", Status: wire.StatusOnline, Degraded: step.set}}); err != nil {
				t.Fatalf("UpdateLiveness(degraded): %v", err)
			}
			if a2 := getAgent(t, s, "a2"); a2.Degraded != step.want {
				t.Fatalf("a2 degraded = %q, want %q", a2.Degraded, step.want)
			}
			if a1 := getAgent(t, s, "a1"); a1.Degraded != "" {
				t.Fatalf("a1 degraded = %q: it was not in the batch", a1.Degraded)
			}
			all, err := s.ListAgents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range all {
				if a.ID == "a2" && a.Degraded != step.want {
					t.Fatalf("ListAgents: a2 degraded = %q, want %q", a.Degraded, step.want)
				}
			}
		}
	})

	runEvents(t, setup)
	runMigrations(t, setup)
	runSweeps(t, setup)
	runUI(t, setup)
	runFleet(t, setup)
	runAccess(t, setup)
	runFailover(t, setup)
}

// agent is a plausible agent to enroll.
func agent(id, name string) wire.Agent {
	return wire.Agent{
		ID:         id,
		Name:       name,
		Labels:     map[string]string{"site": "ams"},
		Version:    "1.0.0",
		System:     wire.SystemInfo{OS: "linux", Arch: "amd64", Hostname: name},
		EnrolledAt: base,
	}
}

// storedAgent is a freshly enrolled a as the store gives it back.
func storedAgent(a wire.Agent) wire.Agent {
	a.EnrolledAt = stored(a.EnrolledAt)
	a.Status = wire.StatusUnknown
	a.LastSeen = time.Time{}
	a.RevokedAt = nil
	return a
}

func storedToken(tk wire.EnrollToken, uses int) wire.EnrollToken {
	tk.Uses = uses
	tk.ExpiresAt, tk.CreatedAt = stored(tk.ExpiresAt), stored(tk.CreatedAt)
	return tk
}

func createToken(t *testing.T, s store.Store, id, hash string, uses int, expires time.Time) wire.EnrollToken {
	t.Helper()
	tk := wire.EnrollToken{ID: id, MaxUses: uses, ExpiresAt: expires, CreatedAt: base}
	if err := s.CreateEnrollToken(t.Context(), tk, hash); err != nil {
		t.Fatalf("CreateEnrollToken(%s): %v", id, err)
	}
	return tk
}

func listTokens(t *testing.T, s store.Store) []wire.EnrollToken {
	t.Helper()
	got, err := s.ListEnrollTokens(t.Context())
	if err != nil {
		t.Fatalf("ListEnrollTokens: %v", err)
	}
	return got
}

func requireUses(t *testing.T, s store.Store, id string, want int) {
	t.Helper()
	for _, tk := range listTokens(t, s) {
		if tk.ID == id {
			if tk.Uses != want {
				t.Fatalf("token %s uses = %d, want %d", id, tk.Uses, want)
			}
			return
		}
	}
	t.Fatalf("token %s not listed", id)
}

func getAgent(t *testing.T, s store.Store, id string) wire.Agent {
	t.Helper()
	a, err := s.GetAgent(t.Context(), id)
	if err != nil {
		t.Fatalf("GetAgent(%s): %v", id, err)
	}
	return a
}

func listAgents(t *testing.T, s store.Store) []wire.Agent {
	t.Helper()
	got, err := s.ListAgents(t.Context())
	if err != nil {
		t.Fatalf("ListAgents: %v", err)
	}
	return got
}

// requireNoAgent checks that no agent row with id exists, by every read path.
func requireNoAgent(t *testing.T, s store.Store, id string) {
	t.Helper()
	_, err := s.GetAgent(t.Context(), id)
	requireIs(t, err, fault.ErrNotFound, "GetAgent("+id+")")
	_, _, err = s.AgentCredential(t.Context(), id)
	requireIs(t, err, fault.ErrNotFound, "AgentCredential("+id+")")
	for _, a := range listAgents(t, s) {
		if a.ID == id {
			t.Fatalf("ListAgents holds agent %s", id)
		}
	}
}

// requireAgent compares agents field by field, times with Equal (and in UTC).
func requireAgent(t *testing.T, got, want wire.Agent) {
	t.Helper()
	sameTime := func(a, b time.Time) bool { return a.Equal(b) && (a.IsZero() || a.Location() == time.UTC) }
	labels := func(m map[string]string) map[string]string {
		if m == nil {
			return map[string]string{}
		}
		return m
	}
	if got.ID != want.ID || got.Name != want.Name || got.Version != want.Version || got.Status != want.Status ||
		got.System != want.System || !reflect.DeepEqual(labels(got.Labels), labels(want.Labels)) ||
		!sameTime(got.EnrolledAt, want.EnrolledAt) || !sameTime(got.LastSeen, want.LastSeen) ||
		(got.RevokedAt == nil) != (want.RevokedAt == nil) ||
		(got.RevokedAt != nil && !sameTime(*got.RevokedAt, *want.RevokedAt)) {
		t.Fatalf("agent:\n got %+v\nwant %+v", got, want)
	}
}

func requireIs(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}
