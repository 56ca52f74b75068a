package bench

// The web UI and API listing benchmark (godwit bench ui): server time of the busiest pages and
// listings on a fleet of 10,000 agents with 1,000,000 events, seeded straight into the store.

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"godwit.dev/godwit/internal/api"
	cred "godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/controller"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/sweep"
	"godwit.dev/godwit/internal/ui"
	"godwit.dev/godwit/internal/wire"
)

// UIConfig configures RunUI.
type UIConfig struct {
	Out      io.Writer
	Agents   int // default 10,000
	Events   int // default 1,000,000
	Requests int // timed requests per page, default 20
	Engines  []string
	Postgres string
	TempDir  string
	// SQLiteFile, when set, is the SQLite database measured instead of a temp dir: built there
	// when the file does not exist, reused as it is when it does (delete it to build a new one).
	SQLiteFile string
	// PostgresDB, when set, is the PostgreSQL database (on Postgres or DefaultPostgres) measured
	// instead of a temporary one: created and built when it does not exist, reused as it is when
	// it does (drop it to build a new one).
	PostgresDB string
}

// UIResult is one page's server times.
type UIResult struct {
	Engine, Page, Path string
	P50, P95, Max      time.Duration
	Bytes              int
	// CPU is this process's CPU time per request (the mean over the timed requests, from
	// /proc/self/stat); OtherCPUs is how many CPUs the machine's other processes kept busy
	// meanwhile. On a busy machine the times above include waiting for a CPU; these say so.
	CPU       time.Duration
	OtherCPUs float64
}

// UITarget is the page time the UI aims to stay under (p95).
const UITarget = 200 * time.Millisecond

// benchToken is the admin token of the fixture's API requests.
const benchToken = "gwa_benchbenchbenchbenchbenchbenchbenchbenchbenchbenchbe"

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
    approval: manual
`

const driftSweep = `apiVersion: godwit.dev/v1
kind: Sweep
metadata: {name: tls-drift}
spec:
  schedule: "*/15 * * * *"
  selector: {matchLabels: {role: web}}
  check: {command: 'true'}
`

// UIFixture names what SeedUI made that pages are measured on.
type UIFixture struct {
	// AgentID is an agent with a long history (every 100th event is its own).
	AgentID string
	// Migration spans every agent, mid-rollout, with failures rolled back and failed rollbacks.
	Migration string
}

// SeedUI fills st with agents (labels site, role, tier; 15 % offline, 5 % unknown), 50 small
// finished migrations and one across the whole fleet mid-rollout (failures rolled back, a few
// rollbacks failed, its decisions as events), a sweep with a run, and events over 30 days (3 %
// errors, 7 % warnings). logf reports progress.
func SeedUI(ctx context.Context, st store.Store, agents, events int, logf func(string, ...any)) (UIFixture, error) {
	start := time.Now()
	now := time.Now().UTC()
	rng := rand.New(rand.NewPCG(1, 2))
	if err := st.CreateEnrollToken(ctx, wire.EnrollToken{ID: "bench", MaxUses: agents, ExpiresAt: now.Add(time.Hour), CreatedAt: now}, "bench"); err != nil {
		return UIFixture{}, err
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
			return UIFixture{}, err
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
		return UIFixture{}, err
	}
	logf("%d agents enrolled after %s", agents, time.Since(start).Round(time.Second))

	mc := controller.New(controller.Config{Store: st, HubID: "bench"})
	for i := range 50 {
		spec := fmt.Sprintf("apiVersion: godwit.dev/v1\nkind: Migration\nmetadata: {name: m-%03d}\nspec:\n  selector: {matchLabels: {site: %s, role: %s}}\n  toVersion: \"%d\"\n  steps:\n    - {name: s, run: 'true'}\n",
			i, sites[i%len(sites)], roles[i%len(roles)], i)
		if _, err := mc.Apply(ctx, []byte(spec), false); err != nil {
			return UIFixture{}, err
		}
	}
	if _, err := mc.Apply(ctx, []byte(fleetSpec), false); err != nil {
		return UIFixture{}, err
	}
	m, err := st.GetMigration(ctx, "fleet-openssl-3")
	if err != nil {
		return UIFixture{}, err
	}
	as, err := st.ListAssignments(ctx, m.Name)
	if err != nil {
		return UIFixture{}, err
	}
	const failure = "run command of step 0 (install) exited with code 100: E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process %d"
	for i := range as {
		a := &as[i]
		switch r := rng.IntN(100); {
		case a.Batch < 2 && r < 1:
			a.State, a.StepName, a.FailedStep = "rollback_failed", "install", "install"
			a.Failure = fmt.Sprintf(failure, rng.IntN(90000))
			a.Error = "rollback command of step 0 (install) exited with code 1: rm: cannot remove '/opt/openssl': Device or resource busy"
		case a.Batch < 2 && r < 4:
			a.State, a.StepName, a.FailedStep = "rolled_back", "install", "install"
			a.Failure = fmt.Sprintf(failure, rng.IntN(90000))
		case a.Batch < 2:
			a.State = "succeeded"
		case a.Batch == 2:
			a.State = []string{"detecting", "applying", "verifying", "succeeded", "pending"}[rng.IntN(5)]
		}
	}
	m.State, m.CurrentBatch, m.ApprovedBatch, m.Reason = "running", 2, 2, "batch 3 of 5 dispatched"
	if err := st.SaveMigration(ctx, store.Fence{}, m, as); err != nil {
		return UIFixture{}, err
	}

	sw := sweep.New(sweep.Config{Store: st, HubID: "bench"})
	if _, err := sw.Apply(ctx, []byte(driftSweep), false); err != nil {
		return UIFixture{}, err
	}
	if _, err := sw.Trigger(ctx, "tls-drift", wire.SweepTriggerRequest{By: "bench"}); err != nil {
		return UIFixture{}, err
	}

	// Events: per agent a history over 30 days; 3 % errors, 7 % warnings; the fleet migration's
	// decisions and failures in the last hours.
	types := []string{wire.EventDetectionSucceeded, wire.EventMigrationStepStarted, wire.EventExecutionSucceeded,
		wire.EventVerificationSucceeded, wire.EventAgentStarted, wire.EventRollbackSucceeded}
	batch := make([]store.StoredEvent, 0, 5000)
	flush := func() error {
		if _, err := st.InsertEvents(ctx, batch, nil); err != nil {
			return err
		}
		batch = batch[:0]
		return nil
	}
	add := func(e wire.Event, t time.Time) error {
		e.Time = t
		raw, _ := json.Marshal(e)
		batch = append(batch, store.StoredEvent{Event: e, Raw: raw, ReceivedAt: t.Add(time.Second)})
		if len(batch) == cap(batch) {
			return flush()
		}
		return nil
	}
	exit := 100
	for i := range events {
		agent := ids[rng.IntN(len(ids))]
		if i%100 == 0 {
			agent = ids[0]
		}
		t := now.Add(-time.Duration(rng.Int64N(int64(30 * 24 * time.Hour))))
		data := wire.EventData{AgentID: agent, Migration: fmt.Sprintf("m-%03d", rng.IntN(50)), Step: "s", Attempt: 1,
			Message: "step 0 (s) is needed", DurationMS: rng.Int64N(5000), FromVersion: "1", ToVersion: "2",
			System: &wire.SystemInfo{OS: "linux", Arch: "amd64", Hostname: "node.example.net"}}
		typ, sev := types[rng.IntN(len(types))], wire.SeverityInfo
		switch r := rng.IntN(100); {
		case r < 3:
			typ, sev = wire.EventExecutionFailed, wire.SeverityError
			if r == 0 {
				data.Migration = "fleet-openssl-3"
				t = now.Add(-time.Duration(rng.Int64N(int64(6 * time.Hour))))
			}
			data.Error, data.ExitCode = "run command of step 0 (install) exited with code 100: hint: run apt-get -f install", &exit
			data.OutputTail = "--- stderr ---\nE: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)\nhint: run apt-get -f install\n"
		case r < 10:
			typ, sev = wire.EventAssignmentReconciled, wire.SeverityWarning
			data.Message = "agent unreachable; its deadline counts on only while it is reachable (active policy)"
		}
		if err := add(wire.NewEvent(wire.AgentSource(agent), typ, sev, data), t); err != nil {
			return UIFixture{}, err
		}
		if i > 0 && i%200000 == 0 {
			logf("%d events stored after %s", i, time.Since(start).Round(time.Second))
		}
	}
	for i, d := range []struct{ from, to, why string }{{"pending", "running", "started"}, {"running", "paused", "failure budget exceeded: 400 agents failed, 399 allowed; onFailure: pause"}, {"paused", "running", "resumed by operator"}} {
		extra, _ := json.Marshal(map[string]string{"from": d.from, "to": d.to})
		e := wire.NewEvent(wire.HubSource("bench"), wire.EventMigrationStateChanged, wire.SeverityWarning, wire.EventData{Migration: "fleet-openssl-3",
			Message: fmt.Sprintf("migration fleet-openssl-3: %s → %s: %s", d.from, d.to, d.why), Extra: extra})
		if err := add(e, now.Add(-time.Duration(3-i)*time.Hour)); err != nil {
			return UIFixture{}, err
		}
	}
	if err := flush(); err != nil {
		return UIFixture{}, err
	}
	logf("%s fixture: %d agents, %d events, 51 migrations, 1 sweep in %s", st.Engine(), agents, events, time.Since(start).Round(time.Second))
	return UIFixture{AgentID: ids[0], Migration: "fleet-openssl-3"}, nil
}

// UIPage is a page or listing the benchmark measures.
type UIPage struct{ Name, Path string }

// UIPages are the measured pages: the busiest of the web UI, then the API's listings.
func UIPages(f UIFixture, agents int) []UIPage {
	return []UIPage{
		{"dashboard", "/ui/"},
		{"fleet map", "/ui/fleet"},
		{"fleet map by site", "/ui/fleet?by=site"},
		{"agents", "/ui/agents"},
		{"agents offline", "/ui/agents?status=offline"},
		{"agents label", "/ui/agents?label=site%3Dams%2C+role%3Ddb"},
		{"agents page 100", "/ui/agents?cursor=" + base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "node-%05d\x000", min(5000, agents/2)))},
		{"agent", "/ui/agents/" + f.AgentID},
		{"agent errors", "/ui/agents/" + f.AgentID + "?severity=error"},
		{"events", "/ui/events"},
		{"events by agent name", "/ui/events?agent=node-00000"},
		{"events errors", "/ui/events?severity=error"},
		{"events type since", "/ui/events?type=migration.execution.*&since=24h"},
		{"migrations", "/ui/migrations"},
		{"migration fleet-wide", "/ui/migrations/" + f.Migration},
		{"migration fleet, hour", "/ui/migrations/" + f.Migration + "?chart=hour"},
		{"migration grid failed", "/ui/migrations/" + f.Migration + "?grid=failed"},
		{"migration small", "/ui/migrations/m-001"},
		{"sweep", "/ui/sweeps/tls-drift"},
		{"API agents, first 500", "/api/v1/agents"},
		{"API agents, 1000", "/api/v1/agents?limit=1000"},
		{"API events", "/api/v1/events?limit=100"},
		{"API events errors 24h", "/api/v1/events?severity=error&since=24h&limit=100"},
		{"API migrations", "/api/v1/migrations"},
		{"API migration fleet", "/api/v1/migrations/" + f.Migration},
		{"API migration fleet failed", "/api/v1/migrations/" + f.Migration + "?assignments=failed"},
	}
}

// RunUI seeds each engine and times every page.
func RunUI(ctx context.Context, cfg UIConfig) ([]UIResult, error) {
	if cfg.Agents <= 0 {
		cfg.Agents = 10000
	}
	if cfg.Events < 0 {
		return nil, fault.Invalid("events", "must not be negative")
	}
	if cfg.Events == 0 {
		cfg.Events = 1000000
	}
	if cfg.Requests <= 0 {
		cfg.Requests = 20
	}
	if len(cfg.Engines) == 0 {
		cfg.Engines = []string{EngineSQLite, EnginePostgres}
	}
	out := cfg.Out
	fmt.Fprintf(out, "godwit bench ui: %d agents, %d events, %d requests per page, %d CPUs, %s\n",
		cfg.Agents, cfg.Events, cfg.Requests, runtime.NumCPU(), runtime.Version())
	fmt.Fprintln(out, "server time: each request served in process by the hub's UI or API handler (store queries, rendering, no network)")
	var results []UIResult
	engines, err := openEngines(ctx, cfg.Engines, cfg.TempDir, cfg.Postgres, out)
	if err != nil {
		return nil, err
	}
	for i := range engines {
		switch {
		case engines[i].name == EngineSQLite && cfg.SQLiteFile != "":
			engines[i] = keptSQLiteEngine(cfg.SQLiteFile)
		case engines[i].name == EnginePostgres && cfg.PostgresDB != "":
			server := cfg.Postgres
			if server == "" {
				server = DefaultPostgres
			}
			if engines[i], err = keptPostgresEngine(ctx, server, cfg.PostgresDB); err != nil {
				return nil, err
			}
		}
	}
	for _, e := range engines {
		rs, err := uiEngine(ctx, cfg, e)
		results = append(results, rs...)
		if err != nil {
			return results, fmt.Errorf("%s: %w", e.name, err)
		}
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ENGINE\tPAGE\tP50 MS\tP95 MS\tMAX MS\tCPU MS\tOTHERS\tKIB\t\t")
	for _, r := range results {
		flag := ""
		if r.P95 > UITarget {
			flag = "over target"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%.1f\t%s\t\n", r.Engine, r.Page, ms(r.P50), ms(r.P95), ms(r.Max), ms(r.CPU), r.OtherCPUs, float64(r.Bytes)/1024, flag)
	}
	fmt.Fprintln(tw, "CPU MS: this process's CPU time per request (mean); OTHERS: CPUs the machine's other processes kept busy meanwhile")
	return results, tw.Flush()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func uiEngine(ctx context.Context, cfg UIConfig, e engine) (_ []UIResult, err error) {
	st, closeStore, err := e.open(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, closeStore()) }()
	logf := func(f string, a ...any) { fmt.Fprintf(cfg.Out, "%s: %s\n", e.name, fmt.Sprintf(f, a...)) }
	var f UIFixture
	if e.reused {
		if f, err = ReusedUIFixture(ctx, st); err != nil {
			return nil, err
		}
		logf("reusing the fixture in %s", e.kept)
	} else if f, err = SeedUI(ctx, st, cfg.Agents, cfg.Events, logf); err != nil {
		if e.discard != nil {
			err = errors.Join(err, closeStore(), e.discard())
			closeStore = func() error { return nil }
		}
		return nil, fmt.Errorf("seed: %w", err)
	} else {
		if st.Engine() == EnginePostgres {
			if err := vacuumFixture(ctx, st, logf); err != nil {
				return nil, err
			}
		}
		if e.kept != "" {
			logf("fixture kept in %s", e.kept)
		}
	}
	now := time.Now().UTC()
	if _, err := st.InitAdminToken(ctx, cred.Hash(benchToken), now); err != nil && !e.reused {
		return nil, err
	}
	const sessionID = "bench-session"
	_ = st.DeleteSession(ctx, cred.Hash(sessionID))
	if err := st.CreateSession(ctx, store.Session{IDHash: cred.Hash(sessionID), CSRF: "csrf", CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour),
		TokenID: wire.AdminTokenID, Role: wire.RoleAdmin, Actor: "bench"}); err != nil {
		return nil, err
	}
	mc := controller.New(controller.Config{Store: st, HubID: "bench"})
	sw := sweep.New(sweep.Config{Store: st, HubID: "bench"})
	u := ui.New(ui.Config{Store: st, Migrations: mc, Sweeps: sw})
	defer u.Close()
	a := api.New(api.Config{Store: st, Migrations: mc, Sweeps: sw, Registry: prometheus.NewRegistry()})
	var out []UIResult
	for _, p := range UIPages(f, cfg.Agents) {
		var h http.Handler = u
		if strings.HasPrefix(p.Path, "/api/") {
			h = a
		}
		serve := func() (int, error) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequestWithContext(ctx, "GET", p.Path, nil)
			req.AddCookie(&http.Cookie{Name: "godwit_session", Value: sessionID})
			req.Header.Set("Authorization", "Bearer "+benchToken)
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				return 0, fmt.Errorf("GET %s: %d: %.300s", p.Path, rec.Code, rec.Body.String())
			}
			return rec.Body.Len(), nil
		}
		for range 2 { // warm the caches the way a page that is looked at is
			if _, err := serve(); err != nil {
				return out, err
			}
		}
		times := make([]time.Duration, cfg.Requests)
		size := 0
		cpu0, _ := procCPU("self")
		busy0, _ := machineBusy()
		began := time.Now()
		for i := range times {
			start := time.Now()
			n, err := serve()
			times[i] = time.Since(start)
			if err != nil {
				return out, err
			}
			size = n
		}
		elapsed := time.Since(began)
		cpu1, _ := procCPU("self")
		busy1, _ := machineBusy()
		slices.Sort(times)
		r := UIResult{Engine: e.name, Page: p.Name, Path: p.Path, Bytes: size, Max: times[len(times)-1],
			P50: times[len(times)/2], P95: times[min(len(times)-1, (len(times)*95+99)/100-1)],
			CPU: (cpu1 - cpu0) / time.Duration(len(times)), OtherCPUs: max(0, (busy1-busy0-(cpu1-cpu0)).Seconds()/elapsed.Seconds())}
		fmt.Fprintf(cfg.Out, "%s: %-24s p50 %7.1f ms  p95 %7.1f ms  cpu %6.1f ms  others %.2f CPUs  %6.1f KiB\n",
			e.name, p.Name, ms(r.P50), ms(r.P95), ms(r.CPU), r.OtherCPUs, float64(size)/1024)
		out = append(out, r)
	}
	return out, nil
}

// vacuumFixture leaves a freshly seeded PostgreSQL database as autovacuum would once it has
// caught up with the bulk load: VACUUM (ANALYZE). Measured straight after the load, the tables
// would have no statistics (the planner guesses, and picks sorts of whole ranges over index
// walks) and no visibility map (every index-only scan visits the table), a state a hub's
// database is in only for the minutes after a burst of writes, or for good where autovacuum is
// off.
func vacuumFixture(ctx context.Context, st store.Store, logf func(string, ...any)) error {
	db, ok := st.(interface{ DB() *sql.DB })
	if !ok {
		return nil
	}
	start := time.Now()
	if _, err := db.DB().ExecContext(ctx, "VACUUM (ANALYZE)"); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	logf("VACUUM (ANALYZE) after seeding, as autovacuum leaves the tables: %s", time.Since(start).Round(time.Second))
	return nil
}

// ReusedUIFixture finds the fixture SeedUI made in st by an earlier run.
func ReusedUIFixture(ctx context.Context, st store.Store) (UIFixture, error) {
	page, _, err := st.PageAgents(ctx, store.AgentQuery{Search: "node-00000", Limit: 1})
	if err != nil {
		return UIFixture{}, err
	}
	if len(page) != 1 {
		return UIFixture{}, errors.New("the reused database holds no bench fixture (no agent node-00000); delete it to build one")
	}
	return UIFixture{AgentID: page[0].ID, Migration: "fleet-openssl-3"}, nil
}

// keptSQLiteEngine opens path, which outlives the run; reused says it held a fixture already.
func keptSQLiteEngine(path string) engine {
	_, err := os.Stat(path)
	reused := err == nil
	discard := func() error {
		var errs []error
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	return engine{name: EngineSQLite, reused: reused, kept: path, discard: discard, open: func(ctx context.Context) (store.Store, func() error, error) {
		st, err := sqlite.Open(ctx, path)
		if err != nil {
			return nil, nil, err
		}
		return st, st.Close, nil
	}}
}

// keptPostgresEngine opens database name on server, which outlives the run: created (and then
// built) when it does not exist, reused as it is when it does.
func keptPostgresEngine(ctx context.Context, server, name string) (engine, error) {
	dsn, created, err := postgres.KeptDatabase(ctx, server, name)
	if err != nil {
		return engine{}, err
	}
	return engine{name: EnginePostgres, reused: !created, kept: "database " + name, discard: func() error { return postgres.DropDatabase(server, name) },
		open: func(ctx context.Context) (store.Store, func() error, error) {
			st, err := postgres.Open(ctx, dsn)
			if err != nil {
				return nil, nil, err
			}
			return st, st.Close, nil
		}}, nil
}
