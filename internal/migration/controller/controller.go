// Package controller is the hub's migration controller. It runs on the leader only, and every
// write it makes carries the leader's fencing epoch (see Leadership).
//
// It is level-triggered: each pass reads the migrations and assignments from SQL and the agents'
// observed state from the observed bucket, decides, writes the decision to SQL, and then writes
// each agent's desired state (derived from SQL alone) to the desired bucket. A pass after an
// outage of any length starts from what is stored, never from a backlog of messages.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/plan"
	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/migration/state"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Clock tells the time. Deadlines under the "active" policy add up the differences between
// successive passes, so a test clock that jumps hours counts hours of hub up-time.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Config wires a controller.
type Config struct {
	Store    store.Store
	Desired  jetstream.KeyValue
	Observed jetstream.KeyValue
	Leader   Leadership
	Logger   *slog.Logger
	// Interval between passes; a Nudge runs one sooner. Default 500ms.
	Interval time.Duration
	Clock    Clock
	// Publish records a hub event (state changes, timeouts); nil drops them.
	Publish func(ctx context.Context, e wire.Event) error
	// HubID names this hub in event sources.
	HubID string
	// Settle is how long, after taking the lead and after the bus comes back, the controller
	// starts nothing new and judges no deadline of an agent it has not heard from again, so
	// agents can report what they finished while nobody could hear them: an outcome never
	// depends on which component came back first. It must cover an agent's reconnect back-off.
	// Default (0) 45s; negative: none (tests that step passes by hand).
	Settle time.Duration
	// Connected reports whether the hub can reach NATS; while it cannot, deadlines are not
	// enforced (nobody can hear the agents). Nil: always connected.
	Connected func() bool
	// Registry receives the controller's metrics; nil: not exported.
	Registry prometheus.Registerer
}

// Controller runs migrations.
type Controller struct {
	cfg Config
	log *slog.Logger

	nudge chan struct{}

	mu       sync.Mutex
	epoch    int64
	observed map[string]wire.ObservedState // agent → latest observed document
	specs    map[string]*spec.Migration    // spec hash → parsed spec
	written  map[string]string             // agent → desired document last written
	lastPass time.Time
	touched  time.Time // last TouchEpoch
	// resumed is true until the first pass after taking the lead has completed: what that pass
	// adopts from the agents happened while no controller ran, and each becomes an event.
	resumed bool
	// judgeFrom is when deadlines may be enforced again (see Config.Settle); busDown is set
	// while desired-state writes fail.
	judgeFrom time.Time
	busDown   bool
	// failing is set while passes fail (e.g. the database is unreachable); the first pass that
	// can read the store again settles before judging, as after a start.
	failing bool
	synced  chan struct{} // closed once the observed watcher delivered its initial values
	rewatch chan struct{} // asks the observed watcher to start over (the bus came back)
	// heardAt is when each agent's observed state last arrived; recoveredAt when the controller
	// took the lead or the bus came back. While settling, an agent is judged once it has been
	// heard from again since then.
	heardAt     map[string]time.Time
	recoveredAt time.Time
	passes      *prometheus.CounterVec

	startStop sync.Mutex
	cancel    context.CancelFunc
	done      chan struct{}
}

// New returns a controller; Start makes it run.
func New(cfg Config) *Controller {
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	switch {
	case cfg.Settle == 0:
		cfg.Settle = DefaultSettle
	case cfg.Settle < 0:
		cfg.Settle = 0
	}
	passes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "godwit_migration_controller_passes_total", Help: "Migration controller passes by result (ok, error).",
	}, []string{"result"})
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(passes)
	}
	return &Controller{cfg: cfg, log: cfg.Logger, nudge: make(chan struct{}, 1), synced: make(chan struct{}), rewatch: make(chan struct{}, 1),
		heardAt: map[string]time.Time{}, passes: passes,
		observed: map[string]wire.ObservedState{}, specs: map[string]*spec.Migration{}, written: map[string]string{}}
}

// Start acquires leadership, starts following observed state and runs passes until Stop.
func (c *Controller) Start(ctx context.Context) error {
	c.startStop.Lock()
	defer c.startStop.Unlock()
	if c.cancel != nil {
		return nil
	}
	if err := c.lead(ctx); err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel, c.done = cancel, make(chan struct{})
	go c.run(rctx)
	return nil
}

func (c *Controller) lead(ctx context.Context) error {
	prevHolder, _, prevSeen, prevErr := c.cfg.Store.Leader(ctx, LeadershipName)
	epoch, err := c.cfg.Leader.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migration controller: leadership: %w", err)
	}
	now := c.cfg.Clock.Now()
	c.mu.Lock()
	c.epoch, c.resumed, c.touched = epoch, true, now
	c.judgeFrom, c.recoveredAt = now.Add(c.cfg.Settle), now
	c.mu.Unlock()
	if err := c.cfg.Store.TouchEpoch(ctx, c.fence(), now); err != nil {
		return fmt.Errorf("migration controller: %w", err)
	}
	if prevErr != nil {
		c.log.Info("migration controller leading", "epoch", epoch)
		return nil
	}
	// The hub records its own up-time, so a restart can tell how long no controller ran.
	away := now.Sub(prevSeen).Round(time.Second)
	msg := fmt.Sprintf("migration controller resumes after %s without one (last seen: %s at %s)", away, prevHolder, prevSeen.UTC().Format(time.RFC3339))
	c.log.Info(msg, "epoch", epoch)
	extra, _ := json.Marshal(map[string]any{"away_seconds": int64(away.Seconds()), "previous_holder": prevHolder, "epoch": epoch})
	c.publish(ctx, wire.NewEvent(wire.HubSource(c.cfg.HubID), wire.EventControllerResumed, wire.SeverityInfo, wire.EventData{Message: msg, Extra: extra}))
	return nil
}

func (c *Controller) publish(ctx context.Context, e wire.Event) {
	if c.cfg.Publish == nil {
		return
	}
	if err := c.cfg.Publish(ctx, e); err != nil {
		c.log.Warn("migration controller: event not recorded", "type", e.Type, "err", err)
	}
}

// Stop ends the controller and waits for its pass to finish. Safe to call twice.
func (c *Controller) Stop(ctx context.Context) error {
	c.startStop.Lock()
	defer c.startStop.Unlock()
	if c.cancel == nil {
		return nil
	}
	c.cancel()
	select {
	case <-c.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.cancel = nil
	return nil
}

// Nudge asks for a pass as soon as possible (after an operator action or an observation).
func (c *Controller) Nudge() {
	select {
	case c.nudge <- struct{}{}:
	default:
	}
}

func (c *Controller) run(ctx context.Context) {
	defer close(c.done)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.watchObserved(ctx) }()
	defer wg.Wait()
	// Decide nothing before the agents' last reports are in.
	select {
	case <-c.synced:
	case <-ctx.Done():
		return
	case <-time.After(c.cfg.Settle):
		c.log.Warn("migration controller: observed state not read within the settle time; going on")
	}
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	check := time.NewTicker(checkEvery)
	defer check.Stop()
	for {
		err := c.Pass(ctx)
		if err != nil {
			c.passes.WithLabelValues("error").Inc()
			c.mu.Lock()
			c.failing = true
			c.mu.Unlock()
		} else {
			c.passes.WithLabelValues("ok").Inc()
		}
		if err != nil {
			if errors.Is(err, fault.ErrFenced) {
				c.log.Error("migration controller deposed: another hub holds a newer epoch; stopping", "err", err)
				return
			}
			if ctx.Err() == nil {
				c.log.Warn("migration controller pass failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.nudge:
		case <-check.C:
			if _, err := c.Check(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("consistency check failed", "err", err)
			}
		}
	}
}

// checkEvery is how often the leader runs the consistency check on its own.
const checkEvery = time.Minute

// watchObserved keeps the latest observed document of every agent, restarting the watch if it
// breaks (NATS restarted). Its initial values give a restarted hub every agent's last report.
func (c *Controller) watchObserved(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := c.cfg.Observed.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err != nil {
			c.log.Warn("migration controller: watch observed state", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(c.cfg.Interval):
			}
			continue
		}
		// The values delivered before the watch's first nil are the stored reports; only what
		// arrives after it is an agent heard from again.
		live := false
	updates:
		for {
			var e jetstream.KeyValueEntry
			var ok bool
			select {
			case <-ctx.Done():
				_ = w.Stop()
				return
			case <-c.rewatch:
				// The bus came back: watch again from the stored values rather than wait for
				// the old watch to notice that its server went away.
				break updates
			case e, ok = <-w.Updates():
				if !ok {
					break updates
				}
			}
			if e == nil {
				live = true
				c.markSynced()
				continue
			}
			var o wire.ObservedState
			if err := json.Unmarshal(e.Value(), &o); err != nil || o.AgentID != e.Key() {
				c.log.Warn("migration controller: ignoring malformed observed state", "agent", e.Key())
				continue
			}
			c.mu.Lock()
			c.observed[e.Key()] = o
			if live {
				c.heardAt[e.Key()] = c.cfg.Clock.Now()
			}
			c.mu.Unlock()
			c.Nudge()
		}
		_ = w.Stop()
	}
}

func (c *Controller) markSynced() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.synced:
	default:
		close(c.synced)
	}
}

// DefaultSettle covers an agent's longest reconnect back-off (30s plus jitter) and a heartbeat.
const DefaultSettle = 45 * time.Second

// judging reports whether the bus is up and whether the settle time has passed at now.
func (c *Controller) judging(now time.Time) (busUp, settled bool) {
	if c.cfg.Connected != nil && !c.cfg.Connected() {
		c.mu.Lock()
		c.busDown = true
		c.mu.Unlock()
		return false, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.busDown, !c.busDown && !now.Before(c.judgeFrom)
}

// ObserveForTest injects an observed document (tests without a bucket).
func (c *Controller) ObserveForTest(o wire.ObservedState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observed[o.AgentID] = o
	c.heardAt[o.AgentID] = c.cfg.Clock.Now()
}

func (c *Controller) fence() store.Fence {
	c.mu.Lock()
	defer c.mu.Unlock()
	return store.Fence{Name: LeadershipName, Epoch: c.epoch}
}

// Pass is one reconcile pass over every migration that is not final, then the desired states.
func (c *Controller) Pass(ctx context.Context) error {
	now := c.cfg.Clock.Now()
	c.mu.Lock()
	var delta time.Duration
	if !c.lastPass.IsZero() {
		delta = now.Sub(c.lastPass)
	}
	c.lastPass = now
	c.mu.Unlock()

	c.mu.Lock()
	touch := now.Sub(c.touched) >= touchEvery
	c.mu.Unlock()
	if touch {
		if err := c.cfg.Store.TouchEpoch(ctx, c.fence(), now); err != nil {
			return err
		}
		c.mu.Lock()
		c.touched = now
		c.mu.Unlock()
	}
	ms, err := c.cfg.Store.ListMigrations(ctx)
	if err != nil {
		return err
	}
	agents, err := c.cfg.Store.ListAgents(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.failing {
		c.failing = false
		c.judgeFrom, c.recoveredAt = now.Add(c.cfg.Settle), now
		c.log.Info("migration controller: the store is back; deadlines enforced again after the settle time", "settle", c.cfg.Settle)
	}
	c.mu.Unlock()
	reachable := map[string]bool{}
	for _, a := range agents {
		reachable[a.ID] = a.Status == wire.StatusOnline && a.RevokedAt == nil
	}
	// A snapshot: the watcher keeps updating the live map while this pass decides.
	c.mu.Lock()
	observed := make(map[string]wire.ObservedState, len(c.observed))
	for k, v := range c.observed {
		observed[k] = v
	}
	heard := map[string]bool{}
	for k, at := range c.heardAt {
		heard[k] = !at.Before(c.recoveredAt)
	}
	c.mu.Unlock()
	var errs []error
	desired := map[string][]wire.DesiredAssignment{}
	for _, m := range ms {
		if err := c.reconcile(ctx, m, observed, heard, reachable, delta, now, desired); err != nil {
			if errors.Is(err, fault.ErrFenced) {
				return err
			}
			errs = append(errs, fmt.Errorf("migration %s: %w", m.Name, err))
		}
	}
	werr := c.writeDesired(ctx, desired)
	if werr == nil && c.cfg.Connected != nil && !c.cfg.Connected() {
		werr = errors.New("not connected to NATS")
	}
	c.mu.Lock()
	switch {
	case werr != nil && !c.busDown:
		c.busDown = true
		c.log.Warn("migration controller: cannot write desired state; deadlines are not enforced until the bus is back", "err", werr)
	case werr == nil && c.busDown:
		c.busDown, c.judgeFrom, c.recoveredAt = false, now.Add(c.cfg.Settle), now
		select {
		case c.rewatch <- struct{}{}:
		default:
		}
		c.log.Info("migration controller: bus is back; deadlines enforced again after the settle time", "settle", c.cfg.Settle)
	}
	c.mu.Unlock()
	if werr != nil {
		errs = append(errs, werr)
	}
	if len(errs) == 0 {
		c.mu.Lock()
		c.resumed = false
		c.mu.Unlock()
	}
	return errors.Join(errs...)
}

// touchEvery is how often the leader records that it is alive.
const touchEvery = 5 * time.Second

func (c *Controller) parsedSpec(m store.Migration) (*spec.Migration, error) {
	c.mu.Lock()
	sp, ok := c.specs[m.SpecHash]
	c.mu.Unlock()
	if ok {
		return sp, nil
	}
	sp, err := spec.Parse([]byte(m.Spec))
	if err != nil {
		return nil, fmt.Errorf("stored spec does not parse: %w", err)
	}
	c.mu.Lock()
	c.specs[m.SpecHash] = sp
	c.mu.Unlock()
	return sp, nil
}

// pass holds one migration's working set during a pass.
type pass struct {
	c        *Controller
	m        store.Migration
	orig     store.Migration
	sp       *spec.Migration
	all      []store.Assignment
	latest   map[string]*store.Assignment // agent → its latest attempt
	order    []string                     // agents in stable order
	dirty    map[string]bool
	now      time.Time
	events   []wire.Event
	observed map[string]wire.ObservedState
	resumed  bool            // first pass after taking the lead
	judge    bool            // settled: every deadline may be enforced, new work may start
	busUp    bool            // while settling, deadlines of agents heard from again may be enforced
	overdue  bool            // the migration's deadline has passed (judged or not)
	heard    map[string]bool // agents heard from since the controller took the lead or the bus came back
}

func (p *pass) touch(a *store.Assignment) {
	a.UpdatedAt = p.now
	p.dirty[a.AgentID] = true
}

// setAssignment moves an assignment to a new state if the state machine allows it.
func (p *pass) setAssignment(a *store.Assignment, to string) bool {
	if a.State == to {
		return false
	}
	if err := state.CheckAssignment(state.AssignmentState(a.State), state.AssignmentState(to)); err != nil {
		p.c.log.Warn("migration controller: refused assignment transition", "migration", a.Migration, "agent", a.AgentID, "err", err)
		return false
	}
	a.State = to
	if assignmentSettled(to) {
		a.FinishedAt = p.now
	}
	p.touch(a)
	return true
}

// setMigration moves the migration to a new state with a reason, if allowed.
func (p *pass) setMigration(to, reason string) {
	if p.m.State == to {
		p.m.Reason = reason
		return
	}
	if err := state.CheckMigration(state.MigrationState(p.m.State), state.MigrationState(to)); err != nil {
		p.c.log.Warn("migration controller: refused migration transition", "migration", p.m.Name, "err", err)
		return
	}
	p.c.log.Info("migration state changed", "migration", p.m.Name, "from", p.m.State, "to", to, "reason", reason)
	sev := wire.SeverityInfo
	switch to {
	case mFailed:
		sev = wire.SeverityError
	case mPaused, mPartiallySucceeded, mRollingBack, mCancelled:
		sev = wire.SeverityWarning
	}
	extra, _ := json.Marshal(map[string]string{"from": p.m.State, "to": to})
	p.events = append(p.events, wire.NewEvent(wire.HubSource(p.c.cfg.HubID), wire.EventMigrationStateChanged, sev,
		wire.EventData{Migration: p.m.Name, Message: fmt.Sprintf("migration %s: %s → %s: %s", p.m.Name, p.m.State, to, reason), Extra: extra}))
	p.m.State, p.m.Reason = to, reason
	if migrationFinal(to) {
		p.m.FinishedAt = p.now
	} else {
		p.m.FinishedAt = time.Time{}
	}
}

func (c *Controller) reconcile(ctx context.Context, m store.Migration, observed map[string]wire.ObservedState, heard, reachable map[string]bool, delta time.Duration, now time.Time, desired map[string][]wire.DesiredAssignment) error {
	sp, err := c.parsedSpec(m)
	if err != nil {
		return err
	}
	all, err := c.cfg.Store.ListAssignments(ctx, m.Name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	resumed := c.resumed
	c.mu.Unlock()
	busUp, settled := c.judging(now)
	p := &pass{c: c, m: m, orig: m, sp: sp, all: all, latest: map[string]*store.Assignment{}, dirty: map[string]bool{}, now: now,
		observed: observed, resumed: resumed, judge: settled, busUp: busUp, heard: heard}
	for i := range p.all {
		a := &p.all[i]
		if cur, ok := p.latest[a.AgentID]; !ok || a.Attempt > cur.Attempt {
			p.latest[a.AgentID] = a
		}
	}
	for id := range p.latest {
		p.order = append(p.order, id)
	}
	sort.Strings(p.order)

	p.observe(observed)
	if !migrationFinal(p.m.State) {
		p.deadlines(reachable, delta)
		p.advance()
	} else if p.m.State == mCancelled {
		p.cancelInFlight("migration aborted")
	}
	if err := p.save(ctx); err != nil {
		return err
	}
	p.collectDesired(desired)
	return nil
}

// observe applies the agents' reports for the current generation of each latest attempt.
func (p *pass) observe(obs map[string]wire.ObservedState) {
	for _, id := range p.order {
		a := p.latest[id]
		if a.DispatchedAt.IsZero() {
			continue
		}
		doc, ok := obs[id]
		if !ok {
			continue
		}
		for _, o := range doc.Assignments {
			if o.Migration != a.Migration || o.Attempt != a.Attempt {
				continue // another migration, or a stale attempt: fenced out
			}
			if o.Generation != a.Generation {
				break // the agent has not acted on the current request yet (or reports an older one)
			}
			p.applyObservation(a, o)
			break
		}
	}
}

func (p *pass) applyObservation(a *store.Assignment, o wire.ObservedAssignment) {
	from := a.State
	defer func() {
		if p.resumed && from != a.State {
			p.events = append(p.events, p.assignmentEvent(a, wire.SeverityInfo,
				fmt.Sprintf("reconciled after the controller was away: the agent reports %s (the hub had %s)", a.State, from)))
		}
	}()
	to := o.State
	if a.State == aTimedOut && (to == aFailed || to == aTimedOut) {
		to = aTimedOut // the hub's deadline stopped it; keep saying why
	}
	changed := false
	if to != a.State {
		changed = p.setAssignment(a, to)
		if !changed {
			return
		}
	}
	if isFailure(to) && a.Failure == "" {
		a.Failure = firstNonEmpty(o.Error, "failed without an error text")
		a.FailedStep = o.StepName
	}
	exit := a.ExitCode
	if o.ExitCode != nil {
		exit = o.ExitCode
	}
	if a.Step != o.Step || a.StepName != o.StepName || a.Error != o.Error || a.Applied != len(o.Applied) || !sameInt(a.ExitCode, exit) {
		a.Step, a.StepName, a.Error, a.Applied, a.ExitCode = o.Step, o.StepName, o.Error, len(o.Applied), exit
		changed = true
	}
	if changed {
		p.touch(a)
	}
}

func sameInt(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// deadlines counts time and enforces the assignment and migration deadlines.
//
// Under the "active" policy (the default) only time that could be used counts: time between
// passes of a running hub (a hub that was down counts nothing for its downtime, since the first
// pass after a start has no previous pass), for an assignment only while its agent is reachable,
// and for the migration only while it is running or rolling back and at least one of its agents
// is reachable. Under "wall", elapsed time since dispatch (assignment) or creation (migration)
// counts. A rollback gets a fresh timer when it is requested.
func (p *pass) deadlines(reachable map[string]bool, delta time.Duration) {
	active := p.sp.Spec.DeadlinePolicy != spec.DeadlineWall
	// The migration's time counts only while some agent with work in flight is reachable:
	// otherwise nothing could progress, whatever the hub does.
	workable := false
	for _, id := range p.order {
		a := p.latest[id]
		if reachable[id] && !a.DispatchedAt.IsZero() && !assignmentSettled(a.State) {
			workable = true
			break
		}
	}
	counting := (p.m.State == mRunning || p.m.State == mRollingBack) && workable
	if counting && active && delta > 0 {
		p.m.ActiveMS += delta.Milliseconds()
	}
	for _, id := range p.order {
		a := p.latest[id]
		if a.DispatchedAt.IsZero() || assignmentSettled(a.State) || a.Action == wire.ActionCancel {
			continue
		}
		p.reachability(a, reachable[id])
		if active && delta > 0 && reachable[id] {
			// A timer that started since the last pass (a rollback or retry requested
			// meanwhile) counts only from its start.
			a.ActiveMS += min(delta, max(p.now.Sub(a.DispatchedAt), 0)).Milliseconds()
			p.dirty[id] = true
		}
		limit := p.sp.Spec.Timeouts.Assignment
		used := time.Duration(a.ActiveMS) * time.Millisecond
		if !active {
			used = p.now.Sub(a.DispatchedAt)
		}
		// While settling, only an agent heard from again (it has reconnected and re-sent its
		// observed state) is judged; one still silent waits for the settle time.
		if used <= limit || !(p.judge || (p.busUp && reachable[id] && p.heard[id])) {
			continue
		}
		switch a.Action {
		case wire.ActionApply:
			a.Error = fmt.Sprintf("assignment deadline of %s (%s time) passed", limit, p.sp.Spec.DeadlinePolicy)
			a.Failure, a.FailedStep = a.Error, a.StepName
			if p.setAssignment(a, aTimedOut) {
				a.Action, a.Generation = wire.ActionCancel, a.Generation+1 // tell the agent to stop
				p.events = append(p.events, p.assignmentEvent(a, wire.SeverityError, a.Error))
			}
		case wire.ActionRollback:
			// A stuck rollback stops as rollback_failed, which `rollback` resumes with a fresh timer.
			a.Error = fmt.Sprintf("rollback deadline of %s (%s time) passed", limit, p.sp.Spec.DeadlinePolicy)
			if p.setAssignment(a, aRollbackFailed) {
				a.Action, a.Generation = wire.ActionCancel, a.Generation+1
				p.events = append(p.events, p.assignmentEvent(a, wire.SeverityError, a.Error))
			}
		}
	}
	if p.complete() || p.m.State == mRollingBack {
		return // nothing left that a deadline could stop
	}
	limit := p.sp.Spec.Timeouts.Migration
	used := time.Duration(p.m.ActiveMS) * time.Millisecond
	if !active {
		used = p.now.Sub(p.m.CreatedAt)
	}
	p.overdue = used > limit
	if !p.overdue || !p.judge {
		return
	}
	reason := fmt.Sprintf("migration deadline of %s (%s time) passed", limit, p.sp.Spec.DeadlinePolicy)
	switch p.sp.Spec.OnTimeout {
	case spec.OnTimeoutRollback:
		p.setMigration(mRollingBack, reason+"; onTimeout: rollback")
	case spec.OnTimeoutFail:
		p.cancelInFlight(reason)
		p.setMigration(mFailed, reason+"; onTimeout: fail")
	default:
		if p.m.State != mPaused {
			p.setMigration(mPaused, reason+"; onTimeout: pause")
		}
	}
}

// complete reports whether every batch was dispatched and every agent has settled: the
// migration can end on this pass whatever the clock says.
func (p *pass) complete() bool {
	if p.m.CurrentBatch+1 < p.m.Batches {
		return false
	}
	for _, a := range p.latest {
		if !assignmentSettled(a.State) && a.State != aNotNeeded {
			return false
		}
	}
	return true
}

// reachability marks an in-flight assignment agent_unreachable while its agent is not
// reachable — not failed: only its deadline can fail it — and puts it back when the agent is.
func (p *pass) reachability(a *store.Assignment, reachable bool) {
	switch {
	case !reachable && a.State != aUnreachable:
		if p.setAssignment(a, aUnreachable) {
			p.events = append(p.events, p.assignmentEvent(a, wire.SeverityWarning, "agent unreachable; its deadline counts on only while it is reachable (active policy)"))
		}
	case reachable && a.State == aUnreachable:
		back := aPending
		if o, ok := p.observedFor(a); ok && o.Generation == a.Generation {
			back = o.State
		} else if a.Action == wire.ActionRollback {
			back = aRollingBack
		}
		p.setAssignment(a, back)
	}
}

// observedFor returns the agent's report about this attempt, if any.
func (p *pass) observedFor(a *store.Assignment) (wire.ObservedAssignment, bool) {
	for _, o := range p.observed[a.AgentID].Assignments {
		if o.Migration == a.Migration && o.Attempt == a.Attempt {
			return o, true
		}
	}
	return wire.ObservedAssignment{}, false
}

func (p *pass) assignmentEvent(a *store.Assignment, sev, msg string) wire.Event {
	return wire.NewEvent(wire.HubSource(p.c.cfg.HubID), wire.EventAssignmentReconciled, sev,
		wire.EventData{AgentID: a.AgentID, Migration: a.Migration, Attempt: a.Attempt, Message: msg})
}

func (p *pass) failures() int {
	n := 0
	for _, a := range p.latest {
		if failedAttempt(a) {
			n++
		}
	}
	return n
}

// rollbackFailedAgents undoes the applied steps of agents whose attempt failed, unless the
// spec says to leave them (onAgentFailure: leave): no agent stays half-migrated by default.
func (p *pass) rollbackFailedAgents() {
	if p.sp.Spec.Rollout.OnAgentFailure == spec.OnAgentFailureLeave {
		return
	}
	for _, id := range p.order {
		a := p.latest[id]
		if isFailure(a.State) && a.Action != wire.ActionRollback {
			p.requestRollback(a)
			p.setAssignment(a, aRollingBack)
		}
	}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func (p *pass) budget() int {
	return plan.Plan{Matched: len(p.latest)}.FailureBudget(p.sp)
}

// advance moves a running or rolling-back migration forward.
func (p *pass) advance() {
	switch p.m.State {
	case mPending:
		p.setMigration(mRunning, "started")
		p.advanceRunning()
	case mRunning:
		p.advanceRunning()
	case mRollingBack:
		p.advanceRollback()
	}
}

func (p *pass) advanceRunning() {
	p.rollbackFailedAgents()
	if f, b := p.failures(), p.budget(); f > b {
		reason := fmt.Sprintf("failure budget exceeded: %d agents failed, %d allowed", f, b)
		switch p.sp.Spec.Rollout.OnFailure {
		case spec.OnFailureAbort:
			p.cancelInFlight(reason)
			p.setMigration(mFailed, reason+"; onFailure: abort")
		case spec.OnFailureRollback:
			p.setMigration(mRollingBack, reason+"; onFailure: rollback")
			p.advanceRollback()
		default:
			p.setMigration(mPaused, reason+"; onFailure: pause (retry --failed, rollback or abort)")
		}
		return
	}
	for _, a := range p.latest {
		if a.Batch <= p.m.CurrentBatch && !assignmentSettled(a.State) {
			return // the current batch is still running
		}
	}
	next := p.m.CurrentBatch + 1
	if next >= p.m.Batches {
		if f := p.failures(); f == 0 {
			p.setMigration(mSucceeded, "every agent succeeded or needed nothing")
		} else {
			p.setMigration(mPartiallySucceeded, fmt.Sprintf("%d of %d agents failed, within the failure budget", f, len(p.latest)))
		}
		return
	}
	if !p.judge && p.overdue {
		return // settling past the deadline: nothing new starts until it can be judged
	}
	if next > 0 && p.sp.Spec.Rollout.Approval == spec.ApprovalManual && p.m.ApprovedBatch < next {
		p.setMigration(mPaused, fmt.Sprintf("waiting for approval of batch %d of %d (godwit approve %s)", next+1, p.m.Batches, p.m.Name))
		return
	}
	p.dispatch(next)
}

func (p *pass) dispatch(batch int) {
	for _, id := range p.order {
		a := p.latest[id]
		if a.Batch != batch || a.State != aPending || !a.DispatchedAt.IsZero() {
			continue
		}
		a.Action, a.Generation, a.DispatchedAt = wire.ActionApply, a.Generation+1, p.now
		p.touch(a)
	}
	p.m.CurrentBatch = batch
	p.m.Reason = fmt.Sprintf("batch %d of %d dispatched", batch+1, p.m.Batches)
}

// advanceRollback asks every agent that may have changed something to roll back, and ends the
// rollback when none is left working.
func (p *pass) advanceRollback() {
	working, failedRollbacks := 0, 0
	for _, id := range p.order {
		a := p.latest[id]
		switch {
		case a.State == aPending && a.DispatchedAt.IsZero():
			p.setAssignment(a, aSuperseded) // never sent: nothing to undo
		case a.State == aRollbackFailed:
			failedRollbacks++
		case a.State == aRolledBack || a.State == aNotNeeded || a.State == aSuperseded:
		case a.Action != wire.ActionRollback:
			// In flight, finished or timed out: stop whatever runs and undo what was applied.
			p.requestRollback(a)
			if a.State != aPending && a.State != aDetecting && a.State != aApplying && a.State != aVerifying && a.State != aUnreachable {
				p.setAssignment(a, aRollingBack)
			}
			p.touch(a)
			working++
		default:
			working++
		}
	}
	if working > 0 {
		return
	}
	if failedRollbacks > 0 {
		p.setMigration(mFailed, fmt.Sprintf("rollback failed on %d agents; run rollback again to resume it", failedRollbacks))
		return
	}
	p.setMigration(mRolledBack, "every agent that changed was rolled back")
}

// requestRollback asks the agent to undo what it applied, with a fresh deadline timer.
func (p *pass) requestRollback(a *store.Assignment) {
	a.Action, a.Generation = wire.ActionRollback, a.Generation+1
	a.ActiveMS, a.DispatchedAt = 0, p.now
	p.touch(a)
}

// cancelInFlight supersedes what was never sent and asks agents to stop what runs.
func (p *pass) cancelInFlight(reason string) {
	for _, id := range p.order {
		a := p.latest[id]
		switch {
		case a.State == aPending && a.DispatchedAt.IsZero():
			a.Error = reason
			p.setAssignment(a, aSuperseded)
		case !assignmentSettled(a.State) && a.Action == wire.ActionApply:
			a.Action, a.Generation = wire.ActionCancel, a.Generation+1
			p.touch(a)
		}
	}
}

func (p *pass) save(ctx context.Context) error {
	var changed []store.Assignment
	for _, id := range p.order {
		if p.dirty[id] {
			changed = append(changed, *p.latest[id])
		}
	}
	if len(changed) == 0 && p.m == p.orig {
		return nil
	}
	p.m.UpdatedAt = p.now
	if err := p.c.cfg.Store.SaveMigration(ctx, p.c.fence(), p.m, changed); err != nil {
		if errors.Is(err, fault.ErrConflict) {
			return nil // an operator changed it meanwhile: the next pass starts from theirs
		}
		return err
	}
	p.m.Version++
	for _, e := range p.events {
		p.c.publish(ctx, e)
	}
	return nil
}

// collectDesired adds what each agent should currently work on. An assignment is desired while
// the hub expects the agent to act on it: dispatched and not settled, or being cancelled or rolled
// back until the agent confirms.
func (p *pass) collectDesired(desired map[string][]wire.DesiredAssignment) {
	for _, id := range p.order {
		a := p.latest[id]
		if a.DispatchedAt.IsZero() {
			continue
		}
		want := !assignmentSettled(a.State)
		if a.Action == wire.ActionCancel && !p.agentSettled(a) {
			want = true
		}
		if !want {
			continue
		}
		desired[id] = append(desired[id], wire.DesiredAssignment{
			Migration: a.Migration, Attempt: a.Attempt, Generation: a.Generation, Action: a.Action,
			FromVersion: p.sp.Spec.FromVersion, ToVersion: p.sp.Spec.ToVersion, Steps: StepSpecs(p.sp),
		})
	}
}

// agentSettled reports whether the agent has confirmed a settled state for this generation.
func (p *pass) agentSettled(a *store.Assignment) bool {
	o, ok := p.observedFor(a)
	return ok && o.Generation >= a.Generation && assignmentSettled(o.State)
}

// StepSpecs converts a spec's steps into what agents run.
func StepSpecs(sp *spec.Migration) []wire.StepSpec {
	out := make([]wire.StepSpec, len(sp.Spec.Steps))
	for i, s := range sp.Spec.Steps {
		out[i] = wire.StepSpec{Name: s.Name, Detect: s.Detect, Run: s.Run, Verify: s.Verify, Rollback: s.Rollback, TimeoutMS: s.Timeout.Milliseconds()}
	}
	return out
}
