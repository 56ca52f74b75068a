package ui_test

// Page render times at fleet scale: 10,000 agents and 1,000,000 events (GODWIT_BENCH_AGENTS and
// GODWIT_BENCH_EVENTS change that), on SQLite and, when reachable, PostgreSQL. Each sub-benchmark
// is one page served by the UI handler in process (server time: store queries, template, no
// network), with a logged-in session. The target is 200 ms per page; nothing asserts on it.
//
//	go test ./internal/ui -run '^$' -bench Pages -benchtime 20x
//
// Building the fixture takes a while (a million events written through the store); it is built
// once per engine and reused by every page.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/migration/controller"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/pgtest"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/ui"
	"godwit.dev/godwit/internal/wire"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

const fleetSpec = `apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: fleet-openssl-3
spec:
  selector: {}
  toVersion: "3.0"
  steps:
    - name: install
      run: 'true'
  rollout:
    canary: 100
    batchSize: 25%
    maxFailures: 1000
`

// fixture fills st with agents, events and migrations, and returns the ids of one agent with
// events and of one migration with an assignment per agent.
func fixture(b *testing.B, st store.Store, agents, events int) (agentID string) {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	now := time.Now().UTC()
	rng := rand.New(rand.NewPCG(1, 2))
	if err := st.CreateEnrollToken(ctx, wire.EnrollToken{ID: "bench", MaxUses: agents, ExpiresAt: now.Add(time.Hour), CreatedAt: now}, "bench"); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, agents)
	sites := []string{"ams", "fra", "lon", "nyc", "sfo", "sin", "syd", "gru"}
	roles := []string{"web", "db", "cache", "queue", "batch"}
	var live []store.Liveness
	for i := range agents {
		ids[i] = uuid.Must(uuid.NewV7()).String()
		a := wire.Agent{ID: ids[i], Name: fmt.Sprintf("node-%05d", i), Version: "1.4.2", EnrolledAt: now.Add(-90 * 24 * time.Hour),
			Labels: map[string]string{"site": sites[i%len(sites)], "role": roles[i%len(roles)], "tier": strconv.Itoa(i % 3)},
			System: wire.SystemInfo{OS: "linux", Arch: "amd64", Kernel: "6.1.0-18-amd64", Hostname: fmt.Sprintf("node-%05d.example.net", i), FreeDiskBytes: 40 << 30}}
		if err := st.Enroll(ctx, "bench", now, a, "cred"); err != nil {
			b.Fatal(err)
		}
		status := wire.StatusOnline
		switch r := rng.IntN(100); {
		case r < 15:
			status = wire.StatusOffline
		case r < 20:
			status = wire.StatusUnknown
		}
		live = append(live, store.Liveness{AgentID: ids[i], LastSeen: now.Add(-time.Duration(rng.IntN(3600)) * time.Second), Status: status})
	}
	if err := st.UpdateLiveness(ctx, live); err != nil {
		b.Fatal(err)
	}

	// Migrations: 50 finished small ones and one across the whole fleet, mid-rollout.
	mc := controller.New(controller.Config{Store: st, HubID: "bench"})
	for i := range 50 {
		spec := fmt.Sprintf("apiVersion: godwit.dev/v1\nkind: Migration\nmetadata: {name: m-%03d}\nspec:\n  selector: {matchLabels: {site: %s, role: %s}}\n  toVersion: \"%d\"\n  steps:\n    - {name: s, run: 'true'}\n",
			i, sites[i%len(sites)], roles[i%len(roles)], i)
		if _, err := mc.Apply(ctx, []byte(spec), false); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := mc.Apply(ctx, []byte(fleetSpec), false); err != nil {
		b.Fatal(err)
	}
	m, err := st.GetMigration(ctx, "fleet-openssl-3")
	if err != nil {
		b.Fatal(err)
	}
	as, err := st.ListAssignments(ctx, m.Name)
	if err != nil {
		b.Fatal(err)
	}
	for i := range as {
		a := &as[i]
		switch {
		case a.Batch < 2 && rng.IntN(100) < 4:
			a.State, a.StepName = "rolled_back", "install"
			a.Failure = fmt.Sprintf("run command of step 0 (install) exited with code 100: E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process %d", rng.IntN(90000))
		case a.Batch < 2:
			a.State = "succeeded"
		case a.Batch == 2:
			a.State = []string{"detecting", "applying", "verifying", "succeeded", "pending"}[rng.IntN(5)]
		}
	}
	m.State, m.CurrentBatch, m.ApprovedBatch, m.Reason = "running", 2, 2, "batch 3 of 5 dispatched"
	if err := st.SaveMigration(ctx, store.Fence{}, m, as); err != nil {
		b.Fatal(err)
	}

	// Events: per agent a history over 30 days; 3% errors, 7% warnings.
	types := []string{wire.EventDetectionSucceeded, wire.EventMigrationStepStarted, wire.EventExecutionSucceeded,
		wire.EventVerificationSucceeded, wire.EventAgentStarted, wire.EventRollbackSucceeded}
	batch := make([]store.StoredEvent, 0, 5000)
	flush := func() {
		if _, err := st.InsertEvents(ctx, batch, nil); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	exit := 100
	for i := range events {
		agent := ids[rng.IntN(len(ids))]
		if i%100 == 0 {
			agent = ids[0] // the agent whose page is measured has a long history
		}
		t := now.Add(-time.Duration(rng.Int64N(int64(30 * 24 * time.Hour))))
		data := wire.EventData{AgentID: agent, Migration: fmt.Sprintf("m-%03d", rng.IntN(50)), Step: "s", Attempt: 1,
			Message: "step 0 (s) is needed", DurationMS: rng.Int64N(5000), FromVersion: "1", ToVersion: "2",
			System: &wire.SystemInfo{OS: "linux", Arch: "amd64", Hostname: "node.example.net"}}
		typ, sev := types[rng.IntN(len(types))], wire.SeverityInfo
		switch r := rng.IntN(100); {
		case r < 3:
			typ, sev = wire.EventExecutionFailed, wire.SeverityError
			data.Error, data.ExitCode = "run command of step 0 (install) exited with code 100: E: Could not get lock /var/lib/dpkg/lock-frontend", &exit
			data.OutputTail = "--- stderr ---\nE: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)\n"
		case r < 10:
			typ, sev = wire.EventAssignmentReconciled, wire.SeverityWarning
			data.Message = "agent unreachable; its deadline counts on only while it is reachable (active policy)"
		}
		e := wire.NewEvent(wire.AgentSource(agent), typ, sev, data)
		e.Time = t
		raw, _ := json.Marshal(e)
		batch = append(batch, store.StoredEvent{Event: e, Raw: raw, ReceivedAt: t.Add(time.Second)})
		if len(batch) == cap(batch) {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
	b.Logf("%s fixture: %d agents, %d events, 51 migrations in %s", st.Engine(), agents, events, time.Since(start).Round(time.Second))
	return ids[0]
}

func benchPages(b *testing.B, st store.Store, reuse bool) {
	agents, events := envInt("GODWIT_BENCH_AGENTS", 10000), envInt("GODWIT_BENCH_EVENTS", 1000000)
	ctx := context.Background()
	var agentID string
	if reuse {
		page, _, err := st.PageAgents(ctx, store.AgentQuery{Search: "node-00000", Limit: 1})
		if err != nil || len(page) != 1 {
			b.Fatalf("reused fixture has no node-00000: %v", err)
		}
		agentID = page[0].ID
		b.Logf("reusing the %s fixture", st.Engine())
	} else {
		agentID = fixture(b, st, agents, events)
	}
	now := time.Now().UTC()
	sessionID := "bench-session"
	_ = st.DeleteSession(ctx, credential.Hash(sessionID))
	if err := st.CreateSession(ctx, store.Session{IDHash: credential.Hash(sessionID), CSRF: "csrf", CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}); err != nil {
		b.Fatal(err)
	}
	dlq := &deadLetterQueue{}
	for i := range 200 {
		dlq.items = append(dlq.items, wire.DeadLetter{Seq: uint64(i + 1), Subject: "godwit.events.x", Reason: "decode", Error: "invalid character", Payload: "{", Time: now})
	}
	s := ui.New(ui.Config{Store: st, Migrations: controller.New(controller.Config{Store: st, HubID: "bench"}), Pipeline: dlq.pipeline()})
	defer s.Close()

	pages := []struct{ name, path string }{
		{"dashboard", "/ui/"},
		{"agents", "/ui/agents"},
		{"agents_offline", "/ui/agents?status=offline"},
		{"agents_label", "/ui/agents?label=site%3Dams%2C+role%3Ddb"},
		{"agents_search", "/ui/agents?q=node-0424"},
		// The agent list 100 pages in: a keyset page costs what the first one does.
		{"agents_page_100", "/ui/agents?cursor=" + base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("node-%05d\x000", min(5000, agents/2))))},
		{"agent", "/ui/agents/" + agentID},
		{"agent_errors", "/ui/agents/" + agentID + "?severity=error"},
		{"agent_filtered", "/ui/agents/" + agentID + "?severity=error,warning&migration=m-007&since=336h"},
		{"events", "/ui/events"},
		{"events_errors", "/ui/events?severity=error"},
		{"events_type_since", "/ui/events?type=migration.execution.*&since=24h"},
		{"events_migration", "/ui/events?migration=m-010&severity=error"},
		{"migrations", "/ui/migrations"},
		{"migration_fleet_wide", "/ui/migrations/fleet-openssl-3"},
		{"migration_grid_failed", "/ui/migrations/fleet-openssl-3?grid=rolled_back"},
		{"migration_small", "/ui/migrations/m-001"},
		{"dead_letters", "/ui/dead-letters"},
	}
	type result struct {
		name  string
		ms    float64
		bytes int
	}
	var results []result
	for _, p := range pages {
		var size int
		var per time.Duration
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest("GET", p.path, nil)
				req.AddCookie(&http.Cookie{Name: "godwit_session", Value: sessionID})
				s.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("GET %s: %d\n%s", p.path, rec.Code, rec.Body.String())
				}
				size = rec.Body.Len()
			}
			per = time.Since(start) / time.Duration(b.N)
			b.ReportMetric(float64(per.Microseconds())/1000, "ms/page")
			b.ReportMetric(float64(size)/1024, "KiB/page")
		})
		results = append(results, result{p.name, float64(per.Microseconds()) / 1000, size})
	}
	fmt.Printf("\nweb UI page render times, %s, %d agents, %d events (server time, target <= 200 ms):\n", st.Engine(), agents, events)
	fmt.Printf("  %-24s %10s %10s\n", "PAGE", "MS", "KIB")
	for _, r := range results {
		flag := ""
		if r.ms > 200 {
			flag = "  over target"
		}
		fmt.Printf("  %-24s %10.1f %10.1f%s\n", r.name, r.ms, float64(r.bytes)/1024, flag)
	}
}

// BenchmarkPagesSQLite builds its fixture in a temp dir, or with GODWIT_BENCH_SQLITE=path in
// that file, which later runs reuse as it is (delete it to build a new one).
func BenchmarkPagesSQLite(b *testing.B) {
	path := os.Getenv("GODWIT_BENCH_SQLITE")
	if path == "" {
		path = filepath.Join(b.TempDir(), "hub.db")
	}
	_, err := os.Stat(path)
	reuse := err == nil
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchPages(b, st, reuse)
}

func BenchmarkPagesPostgres(b *testing.B) {
	st, err := postgres.Open(context.Background(), pgtest.DSN(b))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchPages(b, st, false)
}
