package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"godwit.dev/godwit/internal/agent/health"
	"godwit.dev/godwit/internal/agent/policy"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// EventSink takes an event for delivery to the hub: the durable outbox's Append. It must return
// nil only once the event is durable.
type EventSink func(ctx context.Context, e wire.Event) error

// ObservedSink publishes the agent's observed state (a KV put). It may fail while the hub is
// down; the runner publishes again on the next change and on Resync.
type ObservedSink func(ctx context.Context, s wire.ObservedState) error

// Config configures a Runner.
type Config struct {
	AgentID     string // required
	JournalPath string // required; created when absent
	Logger      *slog.Logger
	Events      EventSink    // required
	Observed    ObservedSink // required
	// System is attached to every event; nil attaches none.
	System func() wire.SystemInfo
	// Grace is passed to execute: time between SIGTERM and SIGKILL; 0 is execute's default.
	Grace time.Duration
	// WorkDir is the commands' working directory; empty is the agent's.
	WorkDir string
	// Now is the clock for the journal's timestamps and events; nil is time.Now.
	Now func() time.Time
	// CanStart reports whether new work may start (false while the outbox is full or the
	// agent's storage is failing); nil is always true. See the package comment for what counts
	// as new work.
	CanStart func() bool
	// Policy is the agent policy every command is checked against before it runs, and which
	// decides the user, work directory and environment it runs with; nil allows everything.
	Policy *policy.Policy
}

func (c *Config) validate() error {
	switch {
	case c.AgentID == "":
		return fault.Invalid("AgentID", "required")
	case c.JournalPath == "":
		return fault.Invalid("JournalPath", "required")
	case c.Events == nil:
		return fault.Invalid("Events", "required")
	case c.Observed == nil:
		return fault.Invalid("Observed", "required")
	case c.Grace < 0:
		return fault.Invalid("Grace", "must not be negative")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.CanStart == nil {
		c.CanStart = func() bool { return true }
	}
	return nil
}

// Timing of the background work.
const (
	// publishTimeout bounds one call of the ObservedSink.
	publishTimeout = 10 * time.Second
	// republishEvery is how often Resync publishes the observed state even when nothing
	// changed, so a hub that lost its copy gets it back.
	republishEvery = time.Minute
	// holdRecheck is how often held work is looked at again besides Desired and Resync.
	holdRecheck = time.Second
)

// Runner is the agent's migration runner. Desired, Observed and Resync are safe to call from any
// goroutine; Run runs at most once at a time.
type Runner struct {
	cfg Config
	log *slog.Logger
	j   *journal

	wake    chan struct{} // something may have become runnable; capacity 1
	pubWake chan struct{} // the observed state changed; capacity 1
	dirty   atomic.Bool   // the observed state changed since the last successful publication
	running atomic.Bool
	cond    *health.Condition // the journal's failing writes

	// mu guards the fields below. Lock order: mu may be taken while holding pubMu or
	// deliverMu, never the reverse.
	mu         sync.Mutex
	closed     bool
	maxEpoch   int64
	desiredRaw []byte
	desired    *wire.DesiredState // immutable once stored; replaced whole
	cur        *inFlight          // the command running, if any
	logged     map[string]bool    // log-once keys (stale documents and assignments)
	holding    string             // the work held by CanStart, "" when none
	unsaved    *wire.DesiredState // an accepted document the journal could not take yet
	fatal      error              // a journal error only an operator can fix, for Run to return
	recovered  map[string]string  // what became of an interrupted command, by assignment (see recover.go)

	pubMu      sync.Mutex // serialises publications; guards the fields below
	lastPub    time.Time
	pubFailing bool

	deliverMu sync.Mutex      // serialises event delivery; guards refused
	refused   map[string]bool // events the outbox refused, logged once each
}

// inFlight identifies the running command, so that a newer desired state can stop it.
type inFlight struct {
	migration   string
	attempt     int
	generation  int
	rollingBack bool
	cancel      context.CancelCauseFunc
}

// Open opens the journal at cfg.JournalPath, creating it when absent (or upgrading its schema);
// it writes nothing else. A file that is not a runner journal, or is damaged, is refused with an
// error naming it, marked health.ErrNeedsOperator, and left untouched. Commands that were running
// when the agent stopped, and unfinished assignments, are taken up by Run.
func Open(cfg Config) (*Runner, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("runner config: %w", err)
	}
	ctx := context.Background()
	j, err := openJournal(ctx, cfg.JournalPath)
	if err != nil {
		return nil, err
	}
	r := &Runner{cfg: cfg, log: cfg.Logger, j: j, wake: make(chan struct{}, 1), pubWake: make(chan struct{}, 1),
		logged: map[string]bool{}, refused: map[string]bool{}, recovered: map[string]string{},
		cond: health.NewCondition("the runner journal "+cfg.JournalPath, cfg.Logger, cfg.Now)}
	if err := r.load(ctx); err != nil {
		_ = j.db.Close()
		return nil, fmt.Errorf("runner journal %s: %w", cfg.JournalPath, err)
	}
	r.dirty.Store(true) // publish once after every start
	return r, nil
}

func (r *Runner) load(ctx context.Context) error {
	epoch, raw, err := r.j.meta(ctx)
	if err != nil {
		return err
	}
	r.maxEpoch = epoch
	if raw != nil {
		var d wire.DesiredState
		if err := json.Unmarshal(raw, &d); err != nil {
			return fmt.Errorf("stored desired state: %w", err)
		}
		r.desired, r.desiredRaw = &d, raw
	}
	recs, err := r.j.unfinished(ctx)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		r.log.Warn("unfinished assignment found in the journal; Run resumes it", "migration", rec.Migration,
			"attempt", rec.Attempt, "generation", rec.Generation, "state", rec.State, "step", rec.Step,
			"phase", rec.Phase, "command_without_result", rec.InFlight)
	}
	return nil
}

func (r *Runner) now() time.Time { return r.cfg.Now() }

// Desired hands over the latest desired state. It is cheap when the document is unchanged. A
// document with a lower epoch than the highest accepted is ignored; an accepted one is written to
// the journal before it is acted on. A newer generation that cancels or rolls back the running
// assignment stops its command.
func (r *Runner) Desired(d wire.DesiredState) {
	if d.AgentID != "" && d.AgentID != r.cfg.AgentID {
		if r.once("agent:" + d.AgentID) {
			r.log.Error("ignoring a desired state addressed to another agent", "addressed_to", d.AgentID, "agent", r.cfg.AgentID)
		}
		return
	}
	raw, err := json.Marshal(d)
	if err != nil {
		r.log.Error("ignoring a desired state that cannot be encoded", "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	highest := r.maxEpoch
	if r.unsaved != nil {
		highest = max(highest, r.unsaved.Epoch) // accepted, waiting for the journal
	}
	if d.Epoch < highest {
		if r.onceLocked(fmt.Sprintf("epoch:%d", d.Epoch)) {
			r.log.Warn("ignoring a desired state from an older epoch (a deposed hub leader's late write)",
				"epoch", d.Epoch, "highest_epoch", highest)
		}
		return
	}
	if bytes.Equal(raw, r.desiredRaw) {
		return
	}
	r.unsaved = nil
	if err := r.writeOnce(func(ctx context.Context) error { return r.j.setDesired(ctx, d.Epoch, raw) }); err != nil {
		if health.Classify(err) == health.Operator {
			r.fatal = fmt.Errorf("record the desired state: %w", err)
			r.poke()
			return
		}
		// Acted on only once recorded: Resync offers it to the journal again.
		if r.onceLocked(fmt.Sprintf("unsaved:%d", d.Epoch)) {
			r.log.Warn("cannot record the desired state in the journal; not acting on it until it is recorded", "path", r.j.path,
				"epoch", d.Epoch, "err", err)
		}
		var doc wire.DesiredState
		_ = json.Unmarshal(raw, &doc) // a private copy: the caller keeps its slices
		r.unsaved = &doc
		return
	}
	var doc wire.DesiredState
	_ = json.Unmarshal(raw, &doc) // a private copy: the caller keeps its slices
	r.maxEpoch, r.desiredRaw, r.desired = d.Epoch, raw, &doc
	if r.cur != nil {
		if cause := r.preemptsLocked(r.cur); cause != nil {
			r.log.Info("stopping the running command", "migration", r.cur.migration, "attempt", r.cur.attempt, "reason", cause)
			r.cur.cancel(cause)
		}
	}
	r.changed() // the set of migrations reported may have changed
	r.poke()
}

// preemptsLocked returns why the desired state stops the running command, or nil.
func (r *Runner) preemptsLocked(c *inFlight) error {
	d, ok := wanted(r.desired, c.migration)
	if !ok || d.Attempt != c.attempt || d.Generation <= c.generation {
		return nil
	}
	switch {
	case d.Action == wire.ActionCancel:
		return fmt.Errorf("%w: cancel at generation %d", errPreempted, d.Generation)
	case d.Action == wire.ActionRollback && !c.rollingBack:
		return fmt.Errorf("%w: rollback at generation %d", errPreempted, d.Generation)
	}
	return nil
}

// wanted returns doc's assignment for migration (the highest attempt and generation when the
// document lists it more than once).
func wanted(doc *wire.DesiredState, migration string) (wire.DesiredAssignment, bool) {
	var best wire.DesiredAssignment
	found := false
	if doc == nil {
		return best, false
	}
	for _, d := range doc.Assignments {
		if d.Migration != migration || !validAction(d.Action) {
			continue
		}
		if !found || d.Attempt > best.Attempt || (d.Attempt == best.Attempt && d.Generation > best.Generation) {
			best, found = d, true
		}
	}
	return best, found
}

func validAction(a string) bool {
	return a == wire.ActionApply || a == wire.ActionRollback || a == wire.ActionCancel
}

func (r *Runner) currentDesired() *wire.DesiredState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.desired
}

func (r *Runner) once(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.onceLocked(key)
}

func (r *Runner) onceLocked(key string) bool {
	if r.logged[key] {
		return false
	}
	r.logged[key] = true
	return true
}

// poke wakes the work loop.
func (r *Runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// changed schedules a publication of the observed state.
func (r *Runner) changed() {
	r.dirty.Store(true)
	select {
	case r.pubWake <- struct{}{}:
	default:
	}
}

// Run is the work loop. It resumes unfinished assignments, then works through the desired ones,
// one at a time, until ctx ends; then it stops the running command (its assignment stays
// unfinished in the journal and is recovered by the next Run) and returns nil. It returns an
// error only when the journal cannot be written: no command starts without its record, so the
// host should treat that as fatal.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("runner: Run is already running")
	}
	defer r.running.Store(false)
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.publisher(pctx) })
	defer func() {
		stop()
		wg.Wait()
	}()

	r.deliver(ctx) // events left by the previous run
	r.changed()
	if err := r.recoverCommands(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("runner journal %s: %w", r.j.path, err)
	}
	for ctx.Err() == nil {
		j, held, err := r.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("runner journal %s: %w", r.j.path, err)
		}
		if j == nil {
			r.idle(ctx, held)
			continue
		}
		err = r.handle(ctx, j)
		switch {
		case err == nil, errors.Is(err, errPreempted), errors.Is(err, errRefused):
		case errors.Is(err, errStopped), ctx.Err() != nil:
			return nil
		default:
			return err
		}
	}
	return nil
}

// idle waits for a reason to look for work again.
func (r *Runner) idle(ctx context.Context, held bool) {
	var recheck <-chan time.Time
	if held {
		t := time.NewTimer(holdRecheck)
		defer t.Stop()
		recheck = t.C
	}
	select {
	case <-ctx.Done():
	case <-r.wake:
	case <-recheck:
	}
}

// publisher publishes the observed state after changes, off the work loop.
func (r *Runner) publisher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.pubWake:
			r.pubMu.Lock()
			r.publishLocked(ctx)
			r.pubMu.Unlock()
		}
	}
}

// publishLocked publishes the observed state; pubMu is held.
func (r *Runner) publishLocked(ctx context.Context) {
	r.dirty.Store(false)
	st, err := r.observed(ctx)
	if err != nil {
		r.dirty.Store(true)
		if ctx.Err() == nil {
			r.log.Error("cannot read the observed state from the journal", "path", r.j.path, "err", err)
		}
		return
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := r.cfg.Observed(pctx, st); err != nil {
		r.dirty.Store(true)
		if ctx.Err() != nil {
			return // stopping
		}
		if !r.pubFailing {
			r.log.Warn("cannot publish the observed state; retrying on the next change and on resync", "err", err)
		} else {
			r.log.Debug("publish observed state", "err", err)
		}
		r.pubFailing = true
		return
	}
	if r.pubFailing {
		r.log.Info("observed state published again")
	}
	r.pubFailing = false
	r.lastPub = r.now()
}

// Resync is called by the host on every heartbeat tick: it offers the journal the desired state
// it could not record yet and the outbox the events it has not taken yet, publishes the observed
// state when a publication failed or is over a minute old, and looks again at held work.
func (r *Runner) Resync(ctx context.Context) {
	r.mu.Lock()
	unsaved := r.unsaved
	r.mu.Unlock()
	if unsaved != nil {
		r.Desired(*unsaved)
	}
	r.deliver(ctx)
	// A publication in progress already reads the latest state; the next tick catches up.
	if r.pubMu.TryLock() {
		if r.dirty.Load() || r.now().Sub(r.lastPub) >= republishEvery {
			r.publishLocked(ctx)
		}
		r.pubMu.Unlock()
	}
	r.poke()
}

// deliver hands the events waiting in the journal to the outbox, oldest first, and removes
// those it took. One refused (an info event while the outbox is over its hard limit) stays
// and is offered again later; the others still go.
func (r *Runner) deliver(ctx context.Context) {
	r.deliverMu.Lock()
	defer r.deliverMu.Unlock()
	events, err := r.j.pendingEvents(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("cannot read pending events from the journal", "path", r.j.path, "err", err)
		}
		return
	}
	for _, e := range events {
		if err := r.cfg.Events(ctx, e); err != nil {
			if ctx.Err() != nil {
				return
			}
			if !r.refused[e.ID] {
				r.refused[e.ID] = true
				r.log.Error("the outbox refused an event; it stays in the runner journal and is offered again on every resync",
					"event_id", e.ID, "type", e.Type, "migration", e.Data.Migration, "step", e.Data.Step, "err", err)
			}
			continue
		}
		delete(r.refused, e.ID)
		if err := r.writeOnce(func(ctx context.Context) error { return r.j.eventDelivered(ctx, e.ID) }); err != nil {
			r.log.Debug("cannot remove a delivered event from the journal; it will be offered again (harmless: same id)",
				"event_id", e.ID, "err", err)
			return
		}
	}
}

// Observed returns the observed state from the journal: the latest attempt of every migration
// that is in the current desired state or unfinished.
func (r *Runner) Observed() wire.ObservedState {
	st, err := r.observed(context.Background())
	if err != nil {
		r.log.Error("cannot read the observed state from the journal", "path", r.j.path, "err", err)
	}
	return st
}

func (r *Runner) observed(ctx context.Context) (wire.ObservedState, error) {
	st := wire.ObservedState{AgentID: r.cfg.AgentID, Assignments: []wire.ObservedAssignment{}, UpdatedAt: r.now().UTC()}
	recs, err := r.j.latestAll(ctx)
	if err != nil {
		return st, err
	}
	order := map[string]int{}
	if doc := r.currentDesired(); doc != nil {
		for i, d := range doc.Assignments {
			if _, ok := order[d.Migration]; !ok {
				order[d.Migration] = i
			}
		}
	}
	kept := recs[:0]
	for _, rec := range recs {
		if _, ok := order[rec.Migration]; ok || !final(rec.State) {
			kept = append(kept, rec)
		}
	}
	rank := func(rec *record) int {
		if i, ok := order[rec.Migration]; ok {
			return i
		}
		return len(order)
	}
	sort.SliceStable(kept, func(a, b int) bool { return rank(kept[a]) < rank(kept[b]) })
	for _, rec := range kept {
		oa := wire.ObservedAssignment{Migration: rec.Migration, Attempt: rec.Attempt, Generation: rec.Generation,
			Action: rec.Action, State: rec.State, Step: rec.Step, Applied: rec.Applied, RolledBack: rec.RolledBack,
			Error: rec.Error, ExitCode: rec.ExitCode, UpdatedAt: rec.UpdatedAt}
		if rec.Step >= 0 && rec.Step < len(rec.Steps) {
			oa.StepName = rec.Steps[rec.Step].Name
		}
		st.Assignments = append(st.Assignments, oa)
	}
	return st, nil
}

// Degraded is "" while the journal takes every write, and otherwise says which write fails since
// when. The host reports it in its heartbeat and starts no new work meanwhile.
func (r *Runner) Degraded() string { return r.cond.Reason() }

// Close closes the journal. Call it after Run has returned; calling it twice is harmless.
func (r *Runner) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	return r.j.db.Close()
}
