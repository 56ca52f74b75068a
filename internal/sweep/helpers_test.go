package sweep

import (
	"context"
	"encoding/json"
	"fmt"
	"godwit.dev/godwit/internal/lease/leasetest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time      { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) Set(t time.Time)     { f.mu.Lock(); defer f.mu.Unlock(); f.now = t }
func (f *fakeClock) Add(d time.Duration) { f.mu.Lock(); defer f.mu.Unlock(); f.now = f.now.Add(d) }

// harness is a hub's worth of sweep machinery over real NATS JetStream and SQLite, with a fake
// clock and enrolled agents whose answers the test writes (or real agents answer).
type harness struct {
	t        *testing.T
	srv      *bus.Server
	js       jetstream.JetStream
	bk       bus.Buckets
	store    store.Store
	clock    *fakeClock
	reg      *prometheus.Registry
	svc      *Service
	cancel   context.CancelFunc // stops the current service's results watch
	agents   []wire.Agent       // agent-1 … in name order
	password map[string]string  // agent id → NATS password

	mu     sync.Mutex
	events []wire.Event

	listAgents atomic.Int64 // the service's ListAgents calls
}

// countingStore counts ListAgents calls.
type countingStore struct {
	store.Store
	n *atomic.Int64
}

func (c countingStore) ListAgents(ctx context.Context) ([]wire.Agent, error) {
	c.n.Add(1)
	return c.Store.ListAgents(ctx)
}

func newHarness(t *testing.T, n int, start time.Time) *harness {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := bus.StartServer(bus.ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: st, Logger: logging.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	nc, err := srv.ConnectHub("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	bk, err := bus.EnsureBuckets(ctx, js, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, js: js, bk: bk, store: st, clock: &fakeClock{now: start}, reg: prometheus.NewRegistry(),
		password: map[string]string{}}
	tok := credential.New(credential.PrefixEnroll)
	if err := st.CreateEnrollToken(ctx, wire.EnrollToken{ID: "t", MaxUses: n + 1, ExpiresAt: start.Add(24 * time.Hour), CreatedAt: start}, credential.Hash(tok)); err != nil {
		t.Fatal(err)
	}
	var live []store.Liveness
	for i := 1; i <= n; i++ {
		a := wire.Agent{ID: fmt.Sprintf("0196a000-0000-7000-8000-%012d", i), Name: fmt.Sprintf("agent-%d", i),
			Labels: map[string]string{"role": "web"}, EnrolledAt: start}
		pw := credential.New(credential.PrefixAgent)
		if err := st.Enroll(ctx, credential.Hash(tok), start, a, credential.Hash(pw)); err != nil {
			t.Fatal(err)
		}
		h.agents = append(h.agents, a)
		h.password[a.ID] = pw
		live = append(live, store.Liveness{AgentID: a.ID, Status: wire.StatusOnline, LastSeen: start})
	}
	if err := st.UpdateLiveness(ctx, live); err != nil {
		t.Fatal(err)
	}
	h.restart()
	return h
}

func (h *harness) config() Config {
	return Config{Store: countingStore{Store: h.store, n: &h.listAgents}, Requests: h.bk.Sweep, Results: h.bk.SweepResults, Clock: h.clock, HubID: "test",
		Leader: leasetest.StoreEpoch{Store: h.store, Name: LeadershipName, Holder: "test", Now: h.clock.Now}, Logger: logging.Discard(), Registry: h.reg,
		Publish: func(_ context.Context, e wire.Event) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.events = append(h.events, e)
			return nil
		}}
}

// restart replaces the service with a new one that takes leadership (a hub restart): the old
// one's results watch stops and its writes are fenced.
func (h *harness) restart() {
	h.t.Helper()
	if h.cancel != nil {
		h.cancel()
	}
	h.svc = New(h.config())
	if err := h.svc.lead(h.t.Context()); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.t.Context())
	h.cancel = cancel
	h.t.Cleanup(cancel)
	go h.svc.watchResults(ctx)
	select {
	case <-h.svc.synced:
	case <-time.After(10 * time.Second):
		h.t.Fatal("results watch not synced within 30s")
	}
}

// down stops the service without a successor: no hub is running.
func (h *harness) down() {
	h.cancel()
	h.svc, h.cancel = nil, nil
}

func (h *harness) pass() {
	h.t.Helper()
	if err := h.svc.Pass(h.t.Context()); err != nil {
		h.t.Fatalf("Pass: %v", err)
	}
}

// passUntil runs passes until cond holds (answers reach the service through its watch).
func (h *harness) passUntil(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		h.pass()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("not reached within 30s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) apply(yaml string) wire.SweepApplyResult {
	h.t.Helper()
	res, err := h.svc.Apply(h.t.Context(), []byte(yaml), false)
	if err != nil {
		h.t.Fatalf("Apply: %v", err)
	}
	return res
}

func (h *harness) trigger(name string) wire.SweepRun {
	h.t.Helper()
	r, err := h.svc.Trigger(h.t.Context(), name, wire.SweepTriggerRequest{By: "test"})
	if err != nil {
		h.t.Fatalf("Trigger: %v", err)
	}
	return r
}

func (h *harness) run(id string) wire.SweepRun {
	h.t.Helper()
	r, err := h.store.GetRun(h.t.Context(), id)
	if err != nil {
		h.t.Fatalf("GetRun: %v", err)
	}
	return r
}

func (h *harness) runs(sweep string) []wire.SweepRun {
	h.t.Helper()
	rs, _, err := h.store.ListRuns(h.t.Context(), store.RunQuery{Sweep: sweep, Limit: 1000})
	if err != nil {
		h.t.Fatal(err)
	}
	return rs
}

func (h *harness) runAgents(id string) map[string]wire.SweepRunAgent {
	h.t.Helper()
	as, err := h.store.ListRunAgents(h.t.Context(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]wire.SweepRunAgent{}
	for _, a := range as {
		out[a.AgentName] = a
	}
	return out
}

// requested returns the run ids the request document of agent i asks about.
func (h *harness) requested(i int) []string {
	h.t.Helper()
	e, err := h.bk.Sweep.Get(h.t.Context(), h.agents[i].ID)
	if err != nil {
		return nil
	}
	var doc wire.SweepRequests
	if err := json.Unmarshal(e.Value(), &doc); err != nil {
		h.t.Fatal(err)
	}
	var ids []string
	for _, c := range doc.Checks {
		ids = append(ids, c.RunID)
	}
	return ids
}

// answer writes agent i's results document as the agent would: one answer per run.
func (h *harness) answer(i int, answers ...wire.SweepCheckResult) {
	h.t.Helper()
	doc, _ := json.Marshal(wire.SweepResults{AgentID: h.agents[i].ID, Results: answers})
	if _, err := h.bk.SweepResults.Put(h.t.Context(), h.agents[i].ID, doc); err != nil {
		h.t.Fatal(err)
	}
}

func answerOf(run wire.SweepRun, state string, code int) wire.SweepCheckResult {
	return wire.SweepCheckResult{Sweep: run.Sweep, RunID: run.ID, State: state, ExitCode: &code}
}

func (h *harness) setStatus(i int, status string) {
	h.t.Helper()
	if err := h.store.UpdateLiveness(h.t.Context(), []store.Liveness{{AgentID: h.agents[i].ID, Status: status}}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) progress() []wire.SweepRun {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []wire.SweepRun
	for _, e := range h.events {
		if e.Type != wire.EventSweepProgress {
			continue
		}
		var r wire.SweepRun
		if err := json.Unmarshal(e.Data.Extra, &r); err != nil {
			h.t.Fatalf("sweep.progress extra: %v", err)
		}
		out = append(out, r)
	}
	return out
}

func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	var c prometheus.Counter
	switch name {
	case "runs":
		c = h.svc.metrics.runs.WithLabelValues(labels...)
	case "lock_skips":
		c = h.svc.metrics.lockSkips.WithLabelValues(labels...)
	case "missed":
		c = h.svc.metrics.missed.WithLabelValues(labels...)
	default:
		h.t.Fatalf("unknown metric %s", name)
	}
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		h.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// sweepYAML is a sweep spec; extra lines go under spec: (indented by two spaces).
func sweepYAML(name string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: godwit.dev/v1\nkind: Sweep\nmetadata:\n  name: %s\nspec:\n  selector:\n    matchLabels: {role: web}\n  check:\n    command: \"test ! -f drift\"\n", name)
	for _, l := range extra {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}
