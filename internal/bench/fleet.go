package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/state"
	"godwit.dev/godwit/internal/wire"
)

// Where the fleet benchmark runs the hub.
const (
	HubAuto      = "auto"       // a child process
	HubChild     = "child"      // a child process: its peak RSS is its own
	HubInProcess = "in-process" // hub.New in this process: its peak RSS includes the agents
)

// fdReserve is what the open-file budget keeps aside for everything but agent connections
// (JetStream and SQLite files, HTTP, the runtime).
const fdReserve = 512

// agentsPerRelay is how many multiplexed agents share one relay connection when the benchmark
// chooses the number of connections itself: as many as one may carry.
const agentsPerRelay = bus.MaxRelayAgents

// FleetConfig configures the fleet benchmark. Zero values take the defaults.
type FleetConfig struct {
	Agents int // simulated agents; required
	Steps  int // steps of the no-op migration; default 3
	// Connections is how many NATS connections the agents use. 0: one per agent, with its own
	// credentials, if they fit the open-file limit, else every agent multiplexed over as few relay
	// connections as can carry them (bus.MaxRelayAgents each). Fewer than Agents: every agent is
	// multiplexed over that many relay connections. Multiplexed or not, each agent connects with
	// its own credentials and its own permissions (bus.ConnectRelay).
	Connections int
	Hub         string        // HubAuto (default), HubChild or HubInProcess
	Heartbeat   time.Duration // the hub's heartbeat interval; default 5s (the hub's default)
	Timeout     time.Duration // how long the rollout may take; default 10m
	TempDir     string
	Keep        bool   // keep the hub's data dir and log, and say where
	HeapProfile string // write a heap profile of this process here once the rollout is over
	// SkipRawLimits skips measuring the raw NATS and store limits before the hub starts.
	SkipRawLimits bool
	// HubHeapProfile is where the hub's heap profile, taken once every agent event is stored, is
	// kept; default a new file in TempDir (or the system's).
	HubHeapProfile string
	// HubMemoryLimit, when set, is the child hub's GOMEMLIMIT (its Go runtime's soft memory
	// limit, e.g. "900MiB"): GC tuning, said so in the output.
	HubMemoryLimit string
	Out            io.Writer

	// CPU profiles of the rollout alone (apply → succeeded): of a child hub, and of this
	// process (the simulated agents, and an in-process hub).
	HubCPUProfile, AgentsCPUProfile string

	raw rawSettings // sizes of the raw measurements (tests make them small)
}

func (c *FleetConfig) defaults() error {
	if c.Steps == 0 {
		c.Steps = 3
	}
	if c.Hub == "" {
		c.Hub = HubAuto
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	switch {
	case c.Agents < 1:
		return fault.Invalid("agents", "must be at least 1 (got %d)", c.Agents)
	case c.Steps < 1 || c.Steps > 50:
		return fault.Invalid("steps", "must be between 1 and 50 (got %d)", c.Steps)
	case c.Connections < 0:
		return fault.Invalid("connections", "must not be negative (got %d)", c.Connections)
	case c.Hub != HubAuto && c.Hub != HubChild && c.Hub != HubInProcess:
		return fault.Invalid("hub", "must be %s, %s or %s (got %q)", HubAuto, HubChild, HubInProcess, c.Hub)
	case c.HubMemoryLimit != "" && c.Hub == HubInProcess:
		return fault.Invalid("hub-memory-limit", "applies to a child hub only; in process it would limit the agents too")
	case c.Heartbeat < 100*time.Millisecond:
		return fault.Invalid("heartbeat", "must be at least 100ms (got %s)", c.Heartbeat)
	}
	return nil
}

// connPlan says how the agents reach NATS.
type connPlan struct {
	inProcess bool
	own       int // agents [0, own) each have a connection with their own credentials
	relays    int // relay connections carrying agents [own, Agents), each with its own credentials
}

// multiplexed is how many agents ride relay connections.
func (p connPlan) multiplexed(agents int) int { return agents - p.own }

// planConnections decides how the agents reach NATS within the open-file limit. Each connection
// takes a descriptor in the hub and one in the agents' process: with a child hub each process has
// the whole limit, in process both ends count against it. Agents that do not all fit one
// connection each are all multiplexed, agentsPerRelay to a relay connection.
func planConnections(cfg FleetConfig, fdLimit uint64) (connPlan, error) {
	n := cfg.Agents
	p := connPlan{inProcess: cfg.Hub == HubInProcess}
	budget := max(0, int(fdLimit)-fdReserve)
	if p.inProcess {
		budget /= 2
	}
	minRelays := (n + bus.MaxRelayAgents - 1) / bus.MaxRelayAgents
	switch {
	case cfg.Connections > 0 && cfg.Connections < n:
		if cfg.Connections < minRelays {
			return p, fault.Invalid("connections", "%d connections cannot carry %d agents: a relay connection carries at most %d, "+
				"so at least %d are needed", cfg.Connections, n, bus.MaxRelayAgents, minRelays)
		}
		p.relays = cfg.Connections
	case n <= budget:
		p.own = n
	case cfg.Connections >= n:
		return p, fault.Invalid("connections", "%d agents with a connection each do not fit the open-file limit (%d); "+
			"use fewer connections to multiplex agents", n, fdLimit)
	default:
		p.relays = (n + agentsPerRelay - 1) / agentsPerRelay
	}
	if p.relays > budget {
		return p, fault.Invalid("agents", "%d agents need %d relay connections, more than the open-file limit (%d) allows",
			n, p.relays, fdLimit)
	}
	return p, nil
}

// relayCarries returns the agents of relay k of relays over agents [own, n): as even a share
// as can be, in order.
func relayCarries(own, n, relays, k int) (from, to int) {
	m := n - own
	return own + k*m/relays, own + (k+1)*m/relays
}

// FleetResult holds the figures of one run.
type FleetResult struct {
	Agents, Steps   int
	Rollout         time.Duration // apply until the migration is succeeded
	FirstDesired    time.Duration // apply until an agent first read a desired assignment
	LastFinished    time.Duration // apply until the last agent reported its assignment finished
	Drained         time.Duration // apply until every agent event was stored
	EventsInRollout float64       // events the ingest stored between apply and succeeded
	EventsDrained   float64       // events it stored between apply and Drained
	AgentRequests   int64         // agents' requests between apply and succeeded
	PeakRSS         int64         // hub VmHWM, bytes
	PeakHeapInUse   int64         // the largest Go heap in use of the hub's once-a-second samples, bytes
	SelfPeakRSS     int64         // this process's VmHWM, bytes
	HubCPU, OwnCPU  float64       // CPUs used on average during the rollout
	OtherCPU        float64
}

// RunFleet runs the fleet benchmark and prints its figures to cfg.Out.
func RunFleet(ctx context.Context, cfg FleetConfig) (FleetResult, error) {
	res := FleetResult{Agents: cfg.Agents, Steps: cfg.Steps}
	if err := cfg.defaults(); err != nil {
		return res, err
	}
	out := cfg.Out
	limit, err := raiseOpenFileLimit()
	if err != nil {
		return res, err
	}
	plan, err := planConnections(cfg, limit)
	if err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp(cfg.TempDir, "godwit-bench-fleet-")
	if err != nil {
		return res, err
	}
	if cfg.Keep {
		defer fmt.Fprintf(out, "kept: hub data dir %s, hub log %s\n", filepath.Join(dir, "hub"), filepath.Join(dir, "hub.log"))
	} else {
		defer os.RemoveAll(dir)
	}

	var raw rawLimits
	if !cfg.SkipRawLimits {
		t := time.Now()
		rs := cfg.raw.withDefaults()
		if raw, err = measureRawLimits(ctx, dir, rs); err != nil {
			return res, err
		}
		fmt.Fprintf(out, "raw limits on this machine, measured before the hub starts (%s): %.0f KV put+get round trips/s (%s, "+
			"JetStream file store, %d clients over %d connections, %s); %.0f events/s store.InsertEvents into a fresh SQLite "+
			"database (%d events, %d a call)\n", round(time.Since(t)), raw.KVRoundTrips, natsServerVersion(), rawKVClients,
			rawKVConns, rs.kvTime, raw.InsertRate, rs.events, rawBatch)
	}

	settings := hubSettings{dataDir: filepath.Join(dir, "hub"), heartbeat: cfg.Heartbeat, grace: 4 * cfg.Heartbeat,
		logFile: filepath.Join(dir, "hub.log"), relays: plan.relays > 0, memoryLimit: cfg.HubMemoryLimit,
		cpuProfile: cfg.HubCPUProfile}
	start := time.Now()
	var h *hubUnderTest
	if plan.inProcess && cfg.HubMemoryLimit != "" {
		return res, fault.Invalid("hub-memory-limit", "applies to a child hub only, and these agents need an in-process hub")
	}
	if plan.inProcess {
		h, err = startInProcessHub(ctx, settings)
	} else {
		h, err = startChildHub(ctx, settings)
	}
	if err != nil {
		return res, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.stop(sctx); err != nil {
			fmt.Fprintf(out, "warning: stopping the hub: %v\n", err)
		}
	}()

	mem := watchHubMemory(ctx, h, time.Second)
	defer mem.result()

	fmt.Fprintf(out, "godwit bench fleet: %d agents, %d-step no-op migration at 100%% batch, %d CPUs (GOMAXPROCS %d), %s\n",
		cfg.Agents, cfg.Steps, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	switch {
	case plan.inProcess:
		fmt.Fprintf(out, "hub: in this process (hub.New), SQLite + embedded NATS; its peak RSS INCLUDES the simulated agents\n")
	case settings.relays:
		fmt.Fprintf(out, "hub: child process `godwit bench fleet-hub` (pid %s: `godwit hub` with relay connections accepted), "+
			"SQLite + embedded NATS; peak RSS is the hub's own (VmHWM)\n", h.pid)
	default:
		fmt.Fprintf(out, "hub: child process `godwit hub` (pid %s), SQLite + embedded NATS; peak RSS is the hub's own (VmHWM)\n", h.pid)
	}
	gcNote := ""
	if cfg.HubMemoryLimit != "" {
		gcNote = ", GOMEMLIMIT=" + cfg.HubMemoryLimit + " (GC TUNING: a soft memory limit makes the Go runtime collect more often)"
	}
	fmt.Fprintf(out, "hub settings: heartbeat %s, liveness grace %s%s, everything else default; started in %s\n",
		cfg.Heartbeat, settings.grace, gcNote, round(time.Since(start)))
	if plan.relays == 0 {
		fmt.Fprintf(out, "agents: each with its own NATS connection and its own credentials (open-file limit %d)\n", limit)
	} else {
		fmt.Fprintf(out, "multiplexed: %d agents over %d connections, each agent with its own credentials' subjects (open-file "+
			"limit %d). Each agent is enrolled through the API with its own credentials; a relay connection presents the "+
			"credentials of the agents it carries (up to %d), each checked by the hub as the agent's own connection would be, "+
			"and may use only the union of their permissions in the agents' account; each agent heartbeats, reads and watches "+
			"its own keys and publishes its own events. Replies to all of a connection's requests arrive on its first agent's "+
			"inbox.\n", plan.multiplexed(cfg.Agents), plan.relays, limit, bus.MaxRelayAgents)
	}

	// Enrollment through the API, as agents do.
	t := time.Now()
	creds, err := enrollFleet(ctx, h.api, cfg.Agents)
	if err != nil {
		return res, err
	}
	enrolled := time.Since(t)

	t = time.Now()
	stats := &fleetStats{}
	conns, agents, err := connectFleet(ctx, h, plan, creds, cfg.Heartbeat, stats)
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	if err != nil {
		return res, err
	}
	connected := time.Since(t)

	actx, stopAgents := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopAgents()
		wg.Wait()
	}()
	for _, a := range agents {
		wg.Go(func() { a.run(actx) })
	}
	t = time.Now()
	if err := waitOnline(ctx, h.api, cfg.Agents); err != nil {
		return res, err
	}
	fmt.Fprintf(out, "setup: enrolled through POST /api/v1/enroll in %s, connected and watching in %s, all online %s later\n",
		round(enrolled), round(connected), round(time.Since(t)))

	// The rollout.
	name := "bench-noop-" + strings.ToLower(rand.Text()[:8])
	before, err := h.api.metric(ctx, "godwit_ingest_events_ingested_total")
	if err != nil {
		return res, err
	}
	pids := []string{h.pid}
	if h.pid != "self" {
		pids = append(pids, "self")
	}
	stopProfiles, err := h.profileRollout(cfg.HubCPUProfile != "", cfg.AgentsCPUProfile)
	if err != nil {
		return res, err
	}
	meter := newCPUMeter(pids...)
	requestsBefore := stats.requests()
	applied := time.Now()
	stats.applied.Store(applied.UnixNano())
	var ar struct {
		Matched int `json:"matched"`
	}
	if err := h.api.do(ctx, http.MethodPost, "/api/v1/migrations", []byte(noopSpec(name, cfg.Steps)), &ar); err != nil {
		return res, fmt.Errorf("apply: %w", err)
	}
	if ar.Matched != cfg.Agents {
		return res, fmt.Errorf("apply: the migration matched %d agents, want %d", ar.Matched, cfg.Agents)
	}
	err = waitMigration(ctx, h.api, name, applied.Add(cfg.Timeout))
	res.Rollout = time.Since(applied)
	if err := errors.Join(err, stopProfiles()); err != nil {
		return res, err
	}
	res.AgentRequests = stats.requests() - requestsBefore
	cpu, others := meter.cores()
	res.HubCPU, res.OtherCPU = cpu[0], others
	if len(cpu) > 1 {
		res.OwnCPU = cpu[1]
	}
	after, err := h.api.metric(ctx, "godwit_ingest_events_ingested_total")
	if err != nil {
		return res, err
	}
	res.EventsInRollout = after - before
	if ns := stats.firstDesired.Load(); ns != 0 {
		res.FirstDesired = time.Unix(0, ns).Sub(applied)
	}
	if ns := stats.lastFinished.Load(); ns != 0 {
		res.LastFinished = time.Unix(0, ns).Sub(applied)
	}

	// Every agent event stored: the agents have published all of theirs and the ingest has
	// nothing pending.
	perAgent := eventsPerAgent(cfg.Steps)
	if err := waitDrained(ctx, h.api, stats, int64(cfg.Agents*(perAgent+1)), applied.Add(cfg.Timeout)); err != nil {
		return res, err
	}
	res.Drained = time.Since(applied)
	if drained, err := h.api.metric(ctx, "godwit_ingest_events_ingested_total"); err == nil {
		res.EventsDrained = drained - before
	}
	if res.PeakRSS, err = h.peakRSS(); err != nil {
		return res, err
	}
	if kb, err := procStatusKB("self", "VmHWM"); err == nil {
		res.SelfPeakRSS = kb << 10
	}
	if err := HeapProfile(cfg.HeapProfile); err != nil {
		return res, err
	}
	atPeak, peakHeap, samples, failed := mem.result()
	res.PeakHeapInUse = peakHeap
	hubProfile, heap, perr := takeHubHeapProfile(ctx, h, settings.dataDir, cfg.HubHeapProfile, cfg.TempDir)

	fmt.Fprintf(out, "rollout: applied → succeeded in %s (an agent first read its assignment after %s; the last agent "+
		"reported succeeded after %s)\n", round(res.Rollout), round(res.FirstDesired), round(res.LastFinished))
	fmt.Fprintf(out, "events: %d per agent (%d in all) plus the hub's own; %.0f ingested between apply and succeeded (%.0f/s); "+
		"all agent events stored %s after apply (%.0f ingested, %.0f/s)\n",
		perAgent, cfg.Agents*perAgent, res.EventsInRollout, res.EventsInRollout/res.Rollout.Seconds(), round(res.Drained),
		res.EventsDrained, res.EventsDrained/res.Drained.Seconds())
	fmt.Fprintf(out, "agent requests (whole run): heartbeats %d (%d failed), desired reads %d (%d failed), observed puts %d (%d retried), "+
		"events %d in %d publishes (%d publishes retried); first connections made again after a failure: %d\n", stats.heartbeats.Load(), stats.heartbeatErrors.Load(), stats.desiredReads.Load(),
		stats.desiredReadErrors.Load(), stats.observedPuts.Load(), stats.observedRetries.Load(), stats.events.Load(), stats.eventPublishes.Load(),
		stats.eventRetries.Load(), stats.connectRetries.Load())
	fmt.Fprintf(out, "agents read their assignment (after apply): %s; each then took %s to report it succeeded\n",
		&stats.gotWork, &stats.workTimes)
	fmt.Fprintf(out, "watch messages answered by a read of no newer revision (read again shortly, as the agent does): %d\n",
		stats.staleNudges.Load())
	if !cfg.SkipRawLimits {
		printRatios(out, res, raw)
	}
	fmt.Fprintf(out, "request latency seen by the agents: observed-state put %s; event publish (one batch) %s\n", &stats.putLatency, &stats.eventLatency)
	if h.pid == "self" {
		fmt.Fprintf(out, "CPUs busy during the rollout: %.2f this process (hub and simulated agents), %.2f other processes\n",
			res.HubCPU, res.OtherCPU)
		fmt.Fprintf(out, "peak RSS (VmHWM of this process: hub AND %d simulated agents): %s\n", cfg.Agents, mib(res.PeakRSS))
	} else {
		fmt.Fprintf(out, "CPUs busy during the rollout: %.2f hub, %.2f this process (simulated agents), %.2f other processes\n",
			res.HubCPU, res.OwnCPU, res.OtherCPU)
		fmt.Fprintf(out, "hub peak RSS (VmHWM of pid %s): %s; this process (simulated agents): %s\n", h.pid, mib(res.PeakRSS),
			mib(res.SelfPeakRSS))
	}
	printHubMemory(out, cfg.Agents, res.PeakRSS, atPeak, peakHeap, samples, failed, hubProfile, heap, perr)
	rss := "HUB PEAK RSS"
	if h.pid == "self" {
		rss = "PEAK RSS (HUB+AGENTS)"
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "AGENTS\tSTEPS\tAPPLY→SUCCEEDED\tEVENTS/S INGESTED\t%s\t\n", rss)
	fmt.Fprintf(tw, "%d\t%d\t%s\t%.0f\t%s\t\n", cfg.Agents, cfg.Steps, round(res.Rollout),
		res.EventsInRollout/res.Rollout.Seconds(), mib(res.PeakRSS))
	return res, tw.Flush()
}

// eventsPerAgent is what the runner reports for a no-op migration whose steps have a detect
// command: per step detection.succeeded and step.started, then execution.succeeded.
func eventsPerAgent(steps int) int { return 2*steps + 1 }

// noopSpec is a migration of steps no-op steps over every benchmark agent, in one batch.
func noopSpec(name string, steps int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: %s
  description: godwit bench fleet - a no-op migration
spec:
  selector:
    matchLabels:
      bench: fleet
  fromVersion: "1"
  toVersion: "2"
  steps:
`, name)
	for i := range steps {
		fmt.Fprintf(&b, "    - name: step-%d\n      detect: 'exit 0'\n      run: 'true'\n      timeout: 1m\n", i+1)
	}
	b.WriteString(`  rollout:
    batchSize: 100%
    approval: auto
    onFailure: pause
  timeouts:
    assignment: 1h
    migration: 2h
`)
	return b.String()
}

type credential struct{ id, password string }

// enrollFleet makes one enrollment token for n uses and enrolls n agents with it, in parallel.
func enrollFleet(ctx context.Context, api *apiClient, n int) ([]credential, error) {
	var tok wire.CreateTokenResponse
	if err := api.do(ctx, http.MethodPost, "/api/v1/tokens", wire.CreateTokenRequest{Uses: n, TTL: "1h", Description: "godwit bench fleet"}, &tok); err != nil {
		return nil, fmt.Errorf("enrollment token: %w", err)
	}
	creds := make([]credential, n)
	err := parallel(ctx, n, 32, func(ctx context.Context, i int) error {
		var r wire.EnrollResponse
		req := wire.EnrollRequest{Token: tok.Token, Name: fmt.Sprintf("bench-agent-%05d", i), Labels: map[string]string{"bench": "fleet"},
			Version: "bench", System: wire.SystemInfo{OS: "linux", Arch: "amd64", Hostname: fmt.Sprintf("sim-%05d", i)}}
		if err := api.do(ctx, http.MethodPost, "/api/v1/enroll", req, &r); err != nil {
			return fmt.Errorf("enroll agent %d: %w", i, err)
		}
		creds[i] = credential{id: r.AgentID, password: r.NATSPassword}
		return nil
	})
	return creds, err
}

// connectFleet opens the agents' connections, per plan, and subscribes each agent to its
// desired-state key. It returns every connection opened, also on error.
func connectFleet(ctx context.Context, h *hubUnderTest, plan connPlan, creds []credential, interval time.Duration, stats *fleetStats) ([]*nats.Conn, []*simAgent, error) {
	agents := make([]*simAgent, len(creds))
	conns := make([]*nats.Conn, plan.own+plan.relays)
	var natsErrs atomic.Int64
	onErr := nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) { natsErrs.Add(1) })
	err := parallel(ctx, plan.own, 64, func(ctx context.Context, i int) error {
		nc, err := connectRetrying(ctx, &stats.connectRetries, func() (*nats.Conn, error) {
			return bus.ConnectAgent(h.nats, creds[i].id, creds[i].password, onErr)
		})
		if err != nil {
			return fmt.Errorf("agent %d: %w", i, err)
		}
		conns[i] = nc
		agents[i] = newSimAgent(creds[i].id, nc, interval, stats)
		return nil
	})
	if err != nil {
		return compact(conns), nil, err
	}
	err = parallel(ctx, plan.relays, 64, func(ctx context.Context, k int) error {
		from, to := relayCarries(plan.own, len(creds), plan.relays, k)
		rc := make([]bus.RelayCredential, 0, to-from)
		for _, c := range creds[from:to] {
			rc = append(rc, bus.RelayCredential{AgentID: c.id, Password: c.password})
		}
		nc, err := connectRetrying(ctx, &stats.connectRetries, func() (*nats.Conn, error) {
			return bus.ConnectRelay(h.nats, rc, onErr)
		})
		if err != nil {
			return fmt.Errorf("relay connection %d (agents %d to %d): %w", k, from, to-1, err)
		}
		conns[plan.own+k] = nc
		for i := from; i < to; i++ {
			agents[i] = newSimAgent(creds[i].id, nc, interval, stats)
		}
		return nil
	})
	if err != nil {
		return compact(conns), nil, err
	}
	for _, a := range agents {
		if _, err := a.watch(); err != nil {
			return conns, nil, err
		}
	}
	return conns, agents, nil
}

// connectRetrying makes a first connection as an agent restarted by its service manager would:
// again after a back-off when it failed (a connection storm on a loaded machine times some
// out), counted in retries, up to connectAttempts attempts in all. A refused credential, or a
// hub that is not there (the connection refused: the child hub died), is not tried again: that
// is not the load.
func connectRetrying(ctx context.Context, retries *atomic.Int64, connect func() (*nats.Conn, error)) (*nats.Conn, error) {
	return connectRetryingWith(ctx, retries, sleepCtx, connect)
}

// connectAttempts bounds the attempts of one first connection: with the back-off doubling from
// retryFirst, the last comes about half a minute after the first.
const connectAttempts = 6

func connectRetryingWith(ctx context.Context, retries *atomic.Int64, sleep func(context.Context, time.Duration) error,
	connect func() (*nats.Conn, error)) (*nats.Conn, error) {
	var nc *nats.Conn
	attempts := 0
	err := retryWith(ctx, retries, &backoff{}, sleep, func(context.Context) error {
		var err error
		nc, err = connect()
		attempts++
		if err != nil && (attempts >= connectAttempts || errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrNoServers)) {
			return permanent{err}
		}
		return err
	})
	return nc, err
}

func compact(conns []*nats.Conn) []*nats.Conn {
	out := conns[:0]
	for _, nc := range conns {
		if nc != nil {
			out = append(out, nc)
		}
	}
	return out
}

// parallel calls fn for 0..n-1 on up to workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// waitOnline polls the hub's status until n agents are online.
func waitOnline(ctx context.Context, api *apiClient, n int) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var st wire.HubStatus
		err := api.do(ctx, http.MethodGet, "/api/v1/status", nil, &st)
		if err == nil && st.Agents[wire.StatusOnline] == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents online after 5m (%v)", st.Agents[wire.StatusOnline], n, err)
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitMigration polls the migration until it is succeeded; any other final state, or paused, is
// an error.
func waitMigration(ctx context.Context, api *apiClient, name string, deadline time.Time) error {
	for {
		var l wire.List[wire.Migration]
		if err := api.do(ctx, http.MethodGet, "/api/v1/migrations", nil, &l); err != nil {
			return err
		}
		for _, m := range l.Items {
			if m.Name != name {
				continue
			}
			switch s := state.MigrationState(m.State); {
			case s == state.MigrationSucceeded:
				return nil
			case s.Final() || s == state.MigrationPaused:
				return fmt.Errorf("migration %s ended %s: %s", name, m.State, m.Reason)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("migration %s still %s at the time limit: %s", name, m.State, m.Reason)
			}
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitDrained waits until the agents have published want events and the ingest has nothing
// pending or unacknowledged.
func waitDrained(ctx context.Context, api *apiClient, stats *fleetStats, want int64, deadline time.Time) error {
	for {
		if stats.events.Load() >= want {
			var st wire.HubStatus
			if err := api.do(ctx, http.MethodGet, "/api/v1/status", nil, &st); err != nil {
				return err
			}
			if st.Ingest != nil && st.Ingest.Pending == 0 && st.Ingest.AckPending == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent events not all stored at the time limit (%d of %d published)", stats.events.Load(), want)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
