package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/wire"
)

// The benchmarks run end to end on a small scale and print their figures. Nothing is asserted on
// speed: only that the runs complete and say what they measured.

func TestIngestRuns(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	// No raw batch: raw inserts as many per call as the ingest writes per transaction, which
	// is the hub's: the fetch size.
	res, err := RunIngest(ctx, IngestConfig{Events: 300, Agents: 20, IngestBatch: 5000,
		Engines: []string{EngineSQLite}, TempDir: t.TempDir(), Out: &out})
	if err != nil {
		t.Fatalf("RunIngest: %v\n%s", err, out.String())
	}
	if len(res) != 1 || res[0].Engine != EngineSQLite || res[0].EndToEnd <= 0 || res[0].Backlog <= 0 || res[0].Raw <= 0 {
		t.Fatalf("results %+v", res)
	}
	if res[0].WriteBatch != 5000 || res[0].RawBatch != 5000 {
		t.Errorf("events per transaction %d, raw batch %d; want the fetch size (5000) for both", res[0].WriteBatch, res[0].RawBatch)
	}
	for _, want := range []string{"one hub connection", "LIVE EV/S", "BACKLOG EV/S", "BACKLOG/RAW", "sqlite backlog:",
		"sqlite raw: 5000 per call (the ingest wrote 5000 per transaction), all inserted after"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFleetRunsMultiplexed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	// Child processes need the godwit binary, which a test is not: the hub runs in process. Three
	// relay connections carry 90 agents, each with its own credentials.
	res, err := RunFleet(ctx, FleetConfig{Agents: 90, Steps: 2, Connections: 3, Hub: HubInProcess,
		Heartbeat: 500 * time.Millisecond, TempDir: t.TempDir(), Out: &out,
		raw: rawSettings{kvTime: 100 * time.Millisecond, events: 1000}})
	if err != nil {
		t.Fatalf("RunFleet: %v\n%s", err, out.String())
	}
	if res.Rollout <= 0 || res.EventsDrained < float64(90*eventsPerAgent(2)) || res.PeakRSS <= 0 || res.AgentRequests <= 0 ||
		res.PeakHeapInUse <= 0 {
		t.Fatalf("results %+v\n%s", res, out.String())
	}
	for _, want := range []string{"multiplexed: 90 agents over 3 connections, each agent with its own credentials' subjects",
		"INCLUDES the simulated agents", "applied → succeeded", "KV put+get round trips/s", "of the raw insert rate",
		"KiB per agent", "hub heap profile once every agent event was stored"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestPlanConnections(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		cfg     FleetConfig
		limit   uint64
		want    connPlan
		wantErr bool
	}{
		{"fits as a child", FleetConfig{Agents: 1000, Hub: HubAuto}, 20000, connPlan{own: 1000}, false},
		{"10k fit as a child", FleetConfig{Agents: 10000, Hub: HubAuto}, 20000, connPlan{own: 10000}, false},
		{"too many for one each", FleetConfig{Agents: 30000, Hub: HubAuto}, 20000, connPlan{relays: 1000}, false},
		{"100k multiplexed", FleetConfig{Agents: 100000, Hub: HubChild}, 20000, connPlan{relays: 3334}, false},
		{"asked to multiplex", FleetConfig{Agents: 1000, Connections: 40, Hub: HubAuto}, 20000, connPlan{relays: 40}, false},
		{"in process halves the budget", FleetConfig{Agents: 10000, Hub: HubInProcess}, 20000,
			connPlan{inProcess: true, relays: 334}, false},
		{"too few connections to carry them", FleetConfig{Agents: 1000, Connections: 33, Hub: HubAuto}, 20000, connPlan{}, true},
		{"one each does not fit", FleetConfig{Agents: 30000, Connections: 30000, Hub: HubAuto}, 20000, connPlan{}, true},
		{"not even the relays fit", FleetConfig{Agents: 100000, Hub: HubAuto}, 2000, connPlan{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := planConnections(tc.cfg, tc.limit)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Errorf("plan = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestRelayCarries: the relays carry every multiplexed agent exactly once, at most
// bus.MaxRelayAgents each.
func TestRelayCarries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ own, n, relays int }{{0, 300, 10}, {0, 100000, 3334}, {5, 65, 3}, {0, 7, 7}} {
		next := tc.own
		for k := range tc.relays {
			from, to := relayCarries(tc.own, tc.n, tc.relays, k)
			if from != next || to <= from || to-from > bus.MaxRelayAgents {
				t.Fatalf("%+v: relay %d carries [%d, %d), want from %d, 1 to %d agents", tc, k, from, to, next, bus.MaxRelayAgents)
			}
			next = to
		}
		if next != tc.n {
			t.Fatalf("%+v: the relays carry up to %d, want %d", tc, next, tc.n)
		}
	}
}

// --postgres-db builds the fixture in the named database on the first run, vacuumed, and reuses
// it as it is on the next; a build that fails leaves no database behind, and a database without
// a fixture is refused, not seeded over.
func TestUIKeepsPostgresFixture(t *testing.T) {
	t.Parallel()
	server := os.Getenv("GODWIT_TEST_POSTGRES")
	if server == "" {
		server = DefaultPostgres
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := postgres.Reachable(ctx, server); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %s: %v (CI=true: the PostgreSQL run is mandatory)", postgres.Redact(server), err)
		}
		t.Skipf("PostgreSQL at %s is not reachable: %v", postgres.Redact(server), err)
	}
	name := "godwit_test_benchui_" + strings.ToLower(rand.Text()[:12])
	t.Cleanup(func() {
		if err := postgres.DropDatabase(server, name); err != nil {
			t.Error(err)
		}
	})
	// Fewer agents than the fixture's 40 combinations of site and role: a migration of the
	// fixture matches none, and the seed fails.
	var out bytes.Buffer
	if _, err := RunUI(ctx, UIConfig{Agents: 20, Events: 300, Requests: 1, Engines: []string{EnginePostgres},
		Postgres: server, PostgresDB: name, Out: &out}); err == nil {
		t.Fatalf("RunUI of 20 agents succeeded:\n%s", out.String())
	}
	if _, created, err := postgres.KeptDatabase(ctx, server, name); err != nil || !created {
		t.Fatalf("after a failed build the database was kept (or: %v)", err)
	}
	if err := postgres.DropDatabase(server, name); err != nil {
		t.Fatal(err)
	}

	run := func() string {
		var out bytes.Buffer
		res, err := RunUI(ctx, UIConfig{Agents: 40, Events: 300, Requests: 1, Engines: []string{EnginePostgres},
			Postgres: server, PostgresDB: name, Out: &out})
		if err != nil {
			t.Fatalf("RunUI: %v\n%s", err, out.String())
		}
		if len(res) != len(UIPages(UIFixture{}, 40)) {
			t.Fatalf("%d results, want one per page:\n%s", len(res), out.String())
		}
		return out.String()
	}
	first := run()
	for _, want := range []string{"postgres fixture: 40 agents, 300 events", "VACUUM (ANALYZE) after seeding", "fixture kept in database " + name} {
		if !strings.Contains(first, want) {
			t.Errorf("first run's output lacks %q:\n%s", want, first)
		}
	}
	dsn, _, err := postgres.KeptDatabase(ctx, server, name)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var vacuumed, analyzed bool
	if err := db.QueryRowContext(ctx, `SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL FROM pg_stat_user_tables
		WHERE relname = 'events'`).Scan(&vacuumed, &analyzed); err != nil || !vacuumed || !analyzed {
		t.Errorf("events after the build: vacuumed %v, analyzed %v (%v)", vacuumed, analyzed, err)
	}
	second := run()
	if !strings.Contains(second, "reusing the fixture in database "+name) || strings.Contains(second, "events stored") ||
		strings.Contains(second, "postgres fixture:") {
		t.Errorf("second run did not reuse the fixture:\n%s", second)
	}

	empty := name + "_empty"
	t.Cleanup(func() {
		if err := postgres.DropDatabase(server, empty); err != nil {
			t.Error(err)
		}
	})
	if _, _, err := postgres.KeptDatabase(ctx, server, empty); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if _, err := RunUI(ctx, UIConfig{Agents: 40, Events: 300, Requests: 1, Engines: []string{EnginePostgres},
		Postgres: server, PostgresDB: empty, Out: &out}); err == nil || !strings.Contains(err.Error(), "no bench fixture") {
		t.Fatalf("RunUI on a database without a fixture: %v, want it refused\n%s", err, out.String())
	}
}

func TestIngestRunsWithEventBatches(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	// 301 events over 20 agents in messages of 4: every agent's last message is a smaller batch.
	res, err := RunIngest(ctx, IngestConfig{Events: 301, Agents: 20, IngestBatch: 100, PerMessage: 4,
		Engines: []string{EngineSQLite}, TempDir: t.TempDir(), Out: &out})
	if err != nil {
		t.Fatalf("RunIngest: %v\n%s", err, out.String())
	}
	if len(res) != 1 || res[0].Events != 301 {
		t.Fatalf("results %+v", res)
	}
	if !strings.Contains(out.String(), "4 events of one agent a message, as event batches") {
		t.Errorf("output does not say how events were sent:\n%s", out.String())
	}
	if _, err := RunIngest(ctx, IngestConfig{PerMessage: wire.MaxBatchEvents + 1, Engines: []string{EngineSQLite}}); err == nil ||
		!strings.Contains(err.Error(), "per-message") {
		t.Errorf("a batch over the limit: err %v, want one naming per-message", err)
	}
}

func TestMessagesGroupEachAgentsEventsInOrder(t *testing.T) {
	src := newEventSource(agentIDs(3))
	events, _, err := src.encode(10) // agents 0,1,2,0,1,2,0,1,2,0
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := messages(events, 3)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	perAgent := map[string][]string{}
	for _, m := range msgs {
		count := m.Header.Get(wire.HeaderEvents)
		parts, err := wire.SplitEventBatch(count, m.Data)
		if err != nil {
			t.Fatalf("message on %s: %v", m.Subject, err)
		}
		got = append(got, count)
		ids := make([]string, len(parts))
		for i, p := range parts {
			var e wire.Event
			if err := json.Unmarshal(p, &e); err != nil {
				t.Fatal(err)
			}
			if wire.EventSubject(e.Data.AgentID) != m.Subject {
				t.Errorf("event of %s in a message on %s", e.Data.AgentID, m.Subject)
			}
			ids[i] = e.ID
			perAgent[e.Data.AgentID] = append(perAgent[e.Data.AgentID], e.ID)
		}
		if m.Header.Get(bus.HeaderMsgID) != wire.EventBatchID(ids) {
			t.Errorf("message id %q, want the batch's", m.Header.Get(bus.HeaderMsgID))
		}
	}
	// Agent 0 has four events (3 + 1), agents 1 and 2 three each.
	if !slices.Equal(got, []string{"3", "3", "3", "1"}) {
		t.Errorf("batch sizes %v, want [3 3 3 1]", got)
	}
	for i, e := range events {
		agent := perAgent[e.agent]
		if len(agent) == 0 || agent[0] != e.id {
			t.Fatalf("event %d (%s) out of its agent's order", i, e.id)
		}
		perAgent[e.agent] = agent[1:]
	}
	single, err := messages(events, 1)
	if err != nil || len(single) != 10 || single[0].Header.Get(wire.HeaderEvents) != "" {
		t.Errorf("one a message: %d messages, %v", len(single), err)
	}
}
