// Package sweepcheck runs the hub's sweep checks on an agent.
//
// It follows the agent's level-triggered pattern: the hub writes the checks it wants answered
// into the agent's key of the godwit-sweep bucket; the executor watches that key (a watch
// message is only a nudge: it re-reads the value with a direct get, and also on every resync
// tick), runs each requested check once with execute.Run, and writes its answers into the
// agent's key of godwit-sweep-results. Each answer is also recorded as a sweep.check.result
// event in the agent's outbox, so it is in the fleet's history like every other result.
//
// A check is read-only by contract, so the executor keeps no journal: a check interrupted by an
// agent restart runs again if the hub still asks for it. Exit 0 is clean, 1 is drifted, anything
// else (including a timeout or a command that cannot start) is an error. A check the hub stops
// asking for while it runs (the run's budget ran out) is stopped.
package sweepcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"godwit.dev/godwit/internal/agent/execute"
	"godwit.dev/godwit/internal/agent/policy"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// Defaults for Config.
const (
	DefaultResync = 5 * time.Second
	DefaultGrace  = 5 * time.Second
	// maxTail bounds the output carried in the results document (the event carries more).
	maxTail = 2048
)

// Config wires the executor.
type Config struct {
	Conn    *nats.Conn
	AgentID string
	// WorkDir is where checks run (the agent's work directory).
	WorkDir string
	// Events records an event durably (the agent's outbox); nil drops them.
	Events func(ctx context.Context, e wire.Event) error
	// System describes the node for events; nil leaves it out.
	System func() wire.SystemInfo
	Logger *slog.Logger
	// Resync is how often the requests are read again without a watch message. Default 5s.
	Resync time.Duration
	// Grace is the time between SIGTERM and SIGKILL for a check stopped early. Default 5s.
	Grace time.Duration
	// Policy is the agent policy checks are held to (its spec.commands.check allow-list, user,
	// maximum timeout and environment); nil allows every check. A refused check is answered as
	// an error that names the rule, without running.
	Policy *policy.Policy
}

// Start runs the executor until ctx ends or stop is called. stop stops running checks and
// waits for them and for the executor.
func Start(ctx context.Context, cfg Config) (stop func()) {
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	e := &executor{cfg: cfg, log: cfg.Logger, nudge: make(chan struct{}, 1),
		active: map[string]context.CancelFunc{}, results: map[string]wire.SweepCheckResult{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

type executor struct {
	cfg   Config
	log   *slog.Logger
	nudge chan struct{}
	wg    sync.WaitGroup

	mu        sync.Mutex
	epoch     int64
	active    map[string]context.CancelFunc // run id → its running check
	results   map[string]wire.SweepCheckResult
	published string // the results document last written
}

func (e *executor) poke() {
	select {
	case e.nudge <- struct{}{}:
	default:
	}
}

func (e *executor) run(ctx context.Context) {
	defer e.wg.Wait()
	sub, err := bus.WatchSweepRequests(e.cfg.Conn, e.cfg.AgentID, func([]byte, uint64) { e.poke() })
	if err != nil {
		e.log.Error("sweep checks: cannot watch requests; relying on resync", "err", err)
	} else {
		defer func() { _ = sub.Unsubscribe() }()
	}
	t := time.NewTicker(e.cfg.Resync)
	defer t.Stop()
	for {
		e.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.nudge:
		}
	}
}

// reconcile reads the requests and starts, stops and forgets checks to match them, then
// writes the results document if it changed (or its last write failed).
func (e *executor) reconcile(ctx context.Context) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	v, _, err := bus.GetSweepRequests(gctx, e.cfg.Conn, e.cfg.AgentID)
	cancel()
	var doc wire.SweepRequests
	switch {
	case errors.Is(err, fault.ErrNotFound):
	case err != nil:
		if ctx.Err() == nil && e.cfg.Conn.IsConnected() {
			e.log.Debug("sweep checks: read requests", "err", err)
		}
		return
	default:
		if err := json.Unmarshal(v, &doc); err != nil || (doc.AgentID != "" && doc.AgentID != e.cfg.AgentID) {
			e.log.Error("sweep checks: request document does not decode; ignored", "err", err)
			return
		}
	}
	want := map[string]wire.SweepCheckRequest{}
	for _, c := range doc.Checks {
		want[c.RunID] = c
	}
	e.mu.Lock()
	if doc.Epoch < e.epoch {
		e.mu.Unlock()
		return // a deposed leader's late write
	}
	e.epoch = doc.Epoch
	for run, stop := range e.active {
		if _, ok := want[run]; !ok {
			stop() // the hub no longer wants it: its budget ran out
		}
	}
	for run := range e.results {
		if _, ok := want[run]; !ok {
			delete(e.results, run)
		}
	}
	for run, req := range want {
		if _, ok := e.results[run]; ok {
			continue
		}
		cctx, stop := context.WithCancel(ctx)
		e.active[run] = stop
		e.results[run] = wire.SweepCheckResult{Sweep: req.Sweep, RunID: run, State: wire.CheckRunning}
		e.wg.Go(func() { e.check(ctx, cctx, req) })
	}
	e.mu.Unlock()
	e.publish(ctx)
}

// check runs one requested check and records its answer.
func (e *executor) check(ctx, cctx context.Context, req wire.SweepCheckRequest) {
	cmd := execute.Command{
		Script: req.Command, Dir: e.cfg.WorkDir, Timeout: time.Duration(req.TimeoutMS) * time.Millisecond, Grace: e.cfg.Grace,
		Env: []string{"GODWIT_SWEEP=" + req.Sweep, "GODWIT_SWEEP_RUN=" + req.RunID, "GODWIT_AGENT_ID=" + e.cfg.AgentID, "GODWIT_PHASE=check"},
	}
	var res execute.Result
	if err := e.cfg.Policy.Check(policy.Command{Kind: policy.KindCheck, Script: cmd.Script, Timeout: cmd.Timeout}); err != nil {
		// Refused, never run: an error answer whose text names the rule.
		e.log.Error("sweep checks: the agent policy refused a check", "sweep", req.Sweep, "run_id", req.RunID, "err", err)
		res = execute.Result{ExitCode: -1, StartErr: err}
	} else {
		e.cfg.Policy.Prepare(&cmd)
		res = execute.Run(cctx, cmd)
	}
	e.mu.Lock()
	delete(e.active, req.RunID)
	if res.Cancelled {
		// Withdrawn by the hub, or the agent is stopping: no answer. If the hub still wants one
		// after a restart, the check runs again.
		delete(e.results, req.RunID)
		e.mu.Unlock()
		return
	}
	out := result(req, res)
	e.results[req.RunID] = out
	e.mu.Unlock()
	e.event(ctx, req, res, out)
	e.publish(ctx)
	e.poke()
}

// result classifies a finished command: exit 0 clean, 1 drifted, anything else an error.
func result(req wire.SweepCheckRequest, res execute.Result) wire.SweepCheckResult {
	r := wire.SweepCheckResult{Sweep: req.Sweep, RunID: req.RunID, DurationMS: res.Duration.Milliseconds(), OutputTail: tail(res, maxTail)}
	code := res.ExitCode
	r.ExitCode = &code
	switch {
	case res.StartErr != nil:
		r.State, r.Error = wire.CheckError, "check could not start: "+res.StartErr.Error()
	case res.TimedOut:
		r.State, r.Error = wire.CheckError, fmt.Sprintf("check timed out after %s", time.Duration(req.TimeoutMS)*time.Millisecond)
	case code == 0:
		r.State = wire.CheckClean
	case code == 1:
		r.State = wire.CheckDrifted
	default:
		r.State, r.Error = wire.CheckError, fmt.Sprintf("check failed with exit code %d", code)
	}
	return r
}

// tail joins stderr and stdout, stderr first (that is where the reason usually is), keeping the
// last n bytes.
func tail(res execute.Result, n int) string {
	s := res.Stderr
	if res.Stdout != "" {
		if s != "" {
			s += "\n"
		}
		s += res.Stdout
	}
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

// publish writes the results document when it differs from the last one written.
func (e *executor) publish(ctx context.Context) {
	e.mu.Lock()
	results := make([]wire.SweepCheckResult, 0, len(e.results))
	for _, r := range e.results {
		results = append(results, r)
	}
	e.mu.Unlock()
	sort.Slice(results, func(i, j int) bool { return results[i].RunID < results[j].RunID })
	b, err := json.Marshal(wire.SweepResults{AgentID: e.cfg.AgentID, Results: results})
	if err != nil {
		return
	}
	e.mu.Lock()
	same := e.published == string(b)
	e.mu.Unlock()
	if same {
		return
	}
	// UpdatedAt is left out of the comparison above: it would make every document new.
	doc, _ := json.Marshal(wire.SweepResults{AgentID: e.cfg.AgentID, Results: results, UpdatedAt: time.Now().UTC()})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := bus.PutSweepResults(pctx, e.cfg.Conn, e.cfg.AgentID, doc); err != nil {
		if ctx.Err() == nil {
			e.log.Warn("sweep checks: results not written; retrying", "err", err)
		}
		return
	}
	e.mu.Lock()
	e.published = string(b)
	e.mu.Unlock()
}

func (e *executor) event(ctx context.Context, req wire.SweepCheckRequest, res execute.Result, r wire.SweepCheckResult) {
	if e.cfg.Events == nil {
		return
	}
	sev := wire.SeverityInfo
	switch r.State {
	case wire.CheckDrifted:
		sev = wire.SeverityWarning
	case wire.CheckError:
		sev = wire.SeverityError
	}
	extra, _ := json.Marshal(map[string]any{"sweep": req.Sweep, "run_id": req.RunID, "result": r.State, "timed_out": res.TimedOut})
	data := wire.EventData{AgentID: e.cfg.AgentID, Message: fmt.Sprintf("sweep %s check: %s", req.Sweep, r.State), Error: r.Error,
		ExitCode: r.ExitCode, OutputTail: tail(res, execute.DefaultTailBytes), DurationMS: r.DurationMS, Extra: extra}
	if e.cfg.System != nil {
		si := e.cfg.System()
		data.System = &si
	}
	ev := wire.NewEvent(wire.AgentSource(e.cfg.AgentID), wire.EventSweepCheckResult, sev, data)
	ev.Subject = "sweep/" + req.Sweep + "/run/" + req.RunID
	if err := e.cfg.Events(ctx, ev); err != nil {
		e.log.Error("sweep checks: could not record event", "err", err)
	}
}
