package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/migration/state"
	"godwit.dev/godwit/internal/wire"
)

// Pass is one reconcile pass over every migration, then the desired states. The controller's
// own loop runs the two apart: it decides, hands the documents to its desired writer and goes
// on (see desiredWriter); Pass does both in turn.
//
// What goes wrong is kept where it belongs. The store that cannot be read is an outage: nothing
// is judged, the time until a pass gets through again is not counted, and the first pass that
// reads it again settles (Config.Settle). A migration the
// controller cannot run (its stored spec does not parse, or its desired document would not fit
// in a NATS message) fails on its own, with the reason, and the others go on. A desired document
// the bus refuses is that agent's trouble and is tried again on the next pass; only losing the
// connection to NATS stops deadlines.
func (c *Controller) Pass(ctx context.Context) error {
	docs, err := c.decide(ctx)
	if docs == nil {
		return err
	}
	return errors.Join(err, c.writeDesired(ctx, docs))
}

// decide is a pass up to the desired documents: it reads, decides and saves every migration,
// and returns each agent's desired document (nil when the pass could not get that far).
func (c *Controller) decide(ctx context.Context) (map[string][]byte, error) {
	now := c.cfg.Clock.Now()
	c.mu.Lock()
	// Each migration counts the time since its last pass that got through (Controller.counted);
	// this pass puts back the marks of the migrations it saves, and only those.
	counted := c.counted
	c.counted = map[string]time.Time{}
	touch := now.Sub(c.touched) >= touchEvery
	c.mu.Unlock()
	c.followBus(now)
	c.events.Flush(ctx)

	if touch {
		if err := c.cfg.Store.TouchEpoch(ctx, c.fence(), now); err != nil {
			return nil, c.storeDown(err)
		}
		c.mu.Lock()
		c.touched = now
		c.mu.Unlock()
	}
	ms, err := c.cfg.Store.ListMigrations(ctx)
	if err != nil {
		return nil, c.storeDown(err)
	}
	agents, moved, reread, err := c.reachability(ctx)
	if err != nil {
		return nil, c.storeDown(err)
	}
	c.mu.Lock()
	if c.failing {
		c.failing = false
		c.judgeFrom, c.recoveredAt = now.Add(c.cfg.Settle), now
		c.log.Info("migration controller: the store is back; deadlines enforced again after the settle time", "settle", c.cfg.Settle)
	}
	v := &view{c: c, agents: agents, recovered: c.recoveredAt, obs: map[string]seenState{}}
	c.mu.Unlock()
	changed, entries := c.takeObserved()
	c.stats = passStats{}
	// What can make an agent's observation newly applicable: the observation itself, and its
	// agent becoming reachable (or not). The first read of the index may have changed any.
	d := delta{all: reread, agents: changed}
	if len(moved) > 0 {
		d.agents = maps.Clone(changed)
		for _, id := range moved {
			d.agents[id] = true
		}
	}
	var errs []error
	passes := make([]*pass, 0, len(ms))
	for _, m := range ms {
		if v, ok := c.idle[m.Name]; ok && v == m.Version && !entries[m.Name] {
			continue // finished, nothing left to send, nothing new heard: no per-agent work
		}
		delete(c.idle, m.Name)
		var elapsed time.Duration
		if at, ok := counted[m.Name]; ok {
			elapsed = now.Sub(at)
		}
		p, err := c.reconcile(ctx, m, v, d, elapsed, now)
		if err != nil {
			if errors.Is(err, fault.ErrFenced) {
				return nil, err
			}
			errs = append(errs, fmt.Errorf("migration %s: %w", m.Name, err))
		}
		if p != nil {
			passes = append(passes, p)
		}
	}
	// What is kept of a deleted migration goes with it.
	exists := make(map[string]bool, len(ms))
	for _, m := range ms {
		exists[m.Name] = true
	}
	for name := range c.rows {
		if !exists[name] {
			delete(c.rows, name)
		}
	}
	c.mu.Lock()
	for name := range c.unsaved {
		if !exists[name] {
			delete(c.unsaved, name)
		}
	}
	c.mu.Unlock()
	docs, err := c.desiredDocuments(ctx, passes, c.toRender(passes))
	if err != nil {
		if errors.Is(err, fault.ErrFenced) {
			return nil, err
		}
		errs = append(errs, err)
	}
	if docs == nil {
		docs = map[string][]byte{}
	}
	return docs, errors.Join(errs...)
}

// touchEvery is how often the leader records that it is alive.
const touchEvery = 5 * time.Second

// followBus notes the connection to NATS: while it is down no deadline is judged; when it is
// back the controller settles again and re-reads every agent's observed state.
func (c *Controller) followBus(now time.Time) {
	connected := c.cfg.Connected == nil || c.cfg.Connected()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !connected && !c.busDown:
		c.busDown = true
		c.log.Warn("migration controller: not connected to NATS; no deadline is enforced until it is back")
	case connected && c.busDown:
		c.busDown, c.judgeFrom, c.recoveredAt = false, now.Add(c.cfg.Settle), now
		select {
		case c.rewatch <- struct{}{}:
		default:
		}
		c.log.Info("migration controller: bus is back; deadlines enforced again after the settle time", "settle", c.cfg.Settle)
	}
}

// storeDown marks the store unreadable (a fenced write is not that: it ends the run).
func (c *Controller) storeDown(err error) error {
	if !errors.Is(err, fault.ErrFenced) {
		c.mu.Lock()
		c.failing = true
		c.mu.Unlock()
	}
	return err
}

func (c *Controller) parsedSpec(m wire.Migration) (*spec.Migration, error) {
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
	m        wire.Migration
	orig     wire.Migration
	sp       *spec.Migration // nil when the stored spec does not parse
	all      []wire.Assignment
	latest   map[string]*wire.Assignment // agent → its latest attempt
	order    []string                    // agents in stable order
	dirty    map[string]bool
	now      time.Time
	events   []wire.Event
	view     *view
	unsaved  *counting // active time counted and not yet stored
	flush    flushHeap // assignments to write for their active time alone (see activeFlush)
	flushMax int       // how many the pass may write
	seq      int64     // the pass's number (Controller.seq)
	fresh    bool      // the rows were read from the store (or kept from before the last pass)
	saved    []string  // the agents whose assignment this pass changed and wrote
	adopting bool      // the first reconcile of this migration since taking the lead
	judge    bool      // settled: every deadline may be enforced, new work may start
	busUp    bool      // while settling, deadlines of agents heard from again may be enforced
	overdue  bool      // the migration's deadline has passed (judged or not)

	requests map[request]entry // the desired entries made so far (desiredEntry)
}

func (p *pass) touch(a *wire.Assignment) {
	a.UpdatedAt = p.now
	p.dirty[a.AgentID] = true
}

// setAssignment moves an assignment to a new state if the state machine allows it. Leaving
// agent_unreachable forgets when it began; the callers that mean "the agent is back" say so
// with reachableAgain.
func (p *pass) setAssignment(a *wire.Assignment, to string) bool {
	if a.State == to {
		return false
	}
	if err := state.CheckAssignment(state.AssignmentState(a.State), state.AssignmentState(to)); err != nil {
		p.c.log.Warn("migration controller: refused assignment transition", "migration", a.Migration, "agent", a.AgentID, "err", err)
		return false
	}
	a.State = to
	if to == aUnreachable {
		a.UnreachableSince = p.now
	} else {
		a.UnreachableSince = time.Time{}
	}
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

// reconcile runs one migration's pass and saves it. It returns the pass (for the desired
// documents) unless the migration's records could not be read. A migration that cannot be run
// is failed here, with the reason, and is not an error of the pass.
func (c *Controller) reconcile(ctx context.Context, m wire.Migration, v *view, d delta, elapsed time.Duration, now time.Time) (*pass, error) {
	sp, perr := c.parsedSpec(m)
	c.mu.Lock()
	adopting := !c.adopted[m.Name]
	seq := c.seq
	c.mu.Unlock()
	busUp, settled := c.judging(now)
	p := &pass{c: c, m: m, orig: m, sp: sp, dirty: map[string]bool{}, now: now,
		view: v, adopting: adopting, judge: settled, busUp: busUp, seq: seq}
	// The pass owns the migration's rows until it has saved them: a pass cut short leaves
	// nothing behind, and the next one reads them from the store.
	r, kept := c.rows[m.Name]
	delete(c.rows, m.Name)
	if kept && r.version == m.Version {
		p.all, p.latest, p.order = r.all, r.latest, r.order
		p.keepCounting()
		// Rows kept by an earlier pass than the last (one cut short after it saved them, say)
		// missed what changed in between: look at them all, as at rows read.
		p.fresh = r.seq != seq-1
		if !p.fresh && !d.all && !adopting {
			// The last pass left these rows with every observation that applied to them: only
			// what changed since, and the agents it wrote, can apply anew.
			p.observeSome(d.agents, r.recheck)
		} else {
			p.observe()
		}
	} else {
		all, err := c.cfg.Store.ListAssignments(ctx, m.Name)
		if err != nil {
			return nil, err
		}
		p.all, p.latest = all, map[string]*wire.Assignment{}
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
		p.fresh = true
		p.addUnsaved()
		p.observe()
	}
	why := c.unrunnableReason(m, sp, perr)
	switch {
	case why != "" && !migrationFinal(p.m.State) && p.m.State != mRollingBack:
		// Nothing of it can reach an agent: stop what may run and fail it, with the reason.
		p.cancelInFlight(why, false)
		p.setMigration(mFailed, why)
	case why != "" && p.m.State == mRollingBack && sp == nil:
		// A rollback goes on without steps (each agent rolls back from its journal), but no
		// deadline can be judged without the spec.
		p.setMigration(mFailed, why+"; run rollback again to resume it once the spec is fixed")
	case !migrationFinal(p.m.State):
		p.deadlines(elapsed)
		p.advance()
	case p.m.State == mCancelled:
		p.cancelInFlight("migration aborted", true)
	}
	if err := p.save(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.adopted[m.Name] = true
	c.counted[m.Name] = now
	c.mu.Unlock()
	if p.idle() {
		c.idle[m.Name] = p.m.Version
		delete(c.rows, m.Name) // not read again until it changes
	}
	return p, nil
}

// rows is one migration's assignments as the last pass left them: what the store holds, plus
// the active time counted and not yet stored (see addUnsaved). They are good for as long as the
// migration's row keeps the version they were saved (or read) with: every write of an
// assignment is a SaveMigration, which moves that version, so a pass reads a migration's
// assignments from the store only after someone else wrote it, on the first pass of a run, and
// after a pass of its own was cut short.
type rows struct {
	version int64
	all     []wire.Assignment
	latest  map[string]*wire.Assignment // agent → its latest attempt, in all
	order   []string                    // agents in stable order
	// seq is the pass that kept them, and recheck the agents it wrote: the next pass looks at
	// those again (a new generation, say, may make an observation apply).
	seq     int64
	recheck []string
}

// keepRows hands the pass's assignments to the next pass: they are what the store holds at
// the migration's version p.m.Version.
func (p *pass) keepRows() {
	p.c.rows[p.m.Name] = &rows{version: p.m.Version, all: p.all, latest: p.latest, order: p.order, seq: p.seq, recheck: p.saved}
}

// asStored sets a's times to what the store gives back for them (microseconds, UTC), so that
// rows kept in memory compare as rows read again would.
func asStored(a *wire.Assignment) {
	for _, t := range []*time.Time{&a.DispatchedAt, &a.UnreachableSince, &a.CreatedAt, &a.UpdatedAt, &a.FinishedAt} {
		if !t.IsZero() {
			*t = time.UnixMicro(t.UnixMicro()).UTC()
		}
	}
}

// idle reports whether the migration is finished, saved, and leaves nothing for any agent to
// act on or confirm: passes skip it until it or one of its agents changes.
func (p *pass) idle() bool {
	if !migrationFinal(p.m.State) || p.m != p.orig || len(p.dirty) > 0 {
		return false
	}
	for _, a := range p.latest {
		if wanted(a) {
			return false
		}
	}
	return true
}

// unrunnableReason says why a stored migration cannot be run, or "" if it can. It is logged
// once per migration (the migration's failure, with the reason, is its event).
func (c *Controller) unrunnableReason(m wire.Migration, sp *spec.Migration, perr error) string {
	why := ""
	switch {
	case perr != nil:
		why = perr.Error()
	default:
		if err := c.deliverable(sp); err != nil {
			why = err.Error()
		}
	}
	if why == "" {
		return ""
	}
	c.mu.Lock()
	first := !c.unrunnable[m.Name]
	c.unrunnable[m.Name] = true
	c.mu.Unlock()
	if first && !migrationFinal(m.State) {
		c.log.Error("migration controller: migration cannot be run; it fails, the others go on", "migration", m.Name, "reason", why)
	}
	return why
}

// observe records what each agent confirmed and applies its reports for the current generation
// of each latest attempt.
func (p *pass) observe() {
	for _, id := range p.order {
		p.observeAgent(id)
	}
}

// observeSome is observe for the agents named in changed or again (those of the migration's,
// in order).
func (p *pass) observeSome(changed map[string]bool, again []string) {
	ids := make([]string, 0, len(changed)+len(again))
	if len(changed) < len(p.order) {
		for id := range changed {
			if _, ok := p.latest[id]; ok {
				ids = append(ids, id)
			}
		}
	} else {
		for _, id := range p.order {
			if changed[id] {
				ids = append(ids, id)
			}
		}
	}
	ids = append(ids, again...)
	slices.Sort(ids)
	for _, id := range slices.Compact(ids) {
		p.observeAgent(id)
	}
}

func (p *pass) observeAgent(id string) {
	a := p.latest[id]
	if a.DispatchedAt.IsZero() {
		return
	}
	p.c.stats.observed++
	seen := p.view.seen(id)
	if !seen.ok {
		return
	}
	doc := seen.doc
	for _, o := range doc.Assignments {
		if o.Migration != a.Migration || o.Attempt != a.Attempt {
			continue // another migration, or a stale attempt: fenced out
		}
		if o.Generation > a.AckedGeneration && o.Generation <= a.Generation {
			a.AckedGeneration = o.Generation
			p.touch(a)
		}
		if o.Generation != a.Generation {
			break // the agent has not acted on the current request yet (or reports an older one)
		}
		p.applyObservation(a, o)
		break
	}
}

// delta is what changed since the last pass that can make an agent's observation apply anew:
// all, or the agents named.
type delta struct {
	all    bool
	agents map[string]bool
}

// passStats is what a pass looked at.
type passStats struct {
	observed int // agents whose observed state a pass looked at
	rendered int // desired documents rendered
}

func (p *pass) applyObservation(a *wire.Assignment, o wire.ObservedAssignment) {
	from, since := a.State, a.UnreachableSince
	if from == aUnreachable && !p.view.reachable(a.AgentID) && !assignmentSettled(o.State) {
		// What the agent last said before it went away, read again: not news. The agent is
		// back when liveness says so, or when it reports a result.
		return
	}
	defer func() {
		switch {
		case from == a.State:
		case from == aUnreachable:
			p.reachableAgain(a, since)
		case p.adopting:
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

// observedFor returns the agent's report about this attempt, if any.
func (p *pass) observedFor(a *wire.Assignment) (wire.ObservedAssignment, bool) {
	for _, o := range p.view.seen(a.AgentID).doc.Assignments {
		if o.Migration == a.Migration && o.Attempt == a.Attempt {
			return o, true
		}
	}
	return wire.ObservedAssignment{}, false
}

func (p *pass) assignmentEvent(a *wire.Assignment, sev, msg string) wire.Event {
	return wire.NewEvent(wire.HubSource(p.c.cfg.HubID), wire.EventAssignmentReconciled, sev,
		wire.EventData{AgentID: a.AgentID, Migration: a.Migration, Attempt: a.Attempt, Message: msg})
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// save writes what changed, fenced, and then sends the pass's events. A migration deleted
// meanwhile is gone and has nothing to save.
func (p *pass) save(ctx context.Context) error {
	timeOnly := p.flushActive()
	ids := make([]string, 0, len(p.dirty))
	for id := range p.dirty {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	changed := make([]wire.Assignment, 0, len(ids))
	for _, id := range ids {
		changed = append(changed, *p.latest[id])
	}
	if len(changed) == 0 && p.m == p.orig {
		p.keepUnsaved()
		p.keepRows()
		return nil
	}
	p.m.UpdatedAt = p.now
	delete(p.c.rows, p.m.Name)
	if err := p.c.cfg.Store.SaveMigration(ctx, p.c.fence(), p.m, changed); err != nil {
		if errors.Is(err, fault.ErrConflict) || errors.Is(err, fault.ErrNotFound) {
			// An operator changed (or deleted) it meanwhile: the next pass starts from theirs.
			p.events = nil
			return nil
		}
		return err
	}
	p.m.Version++
	for id := range p.dirty {
		asStored(p.latest[id])
	}
	for _, id := range ids {
		if !timeOnly[id] {
			p.saved = append(p.saved, id)
		}
	}
	p.keepUnsaved()
	p.keepRows()
	p.orig, p.dirty = p.m, map[string]bool{}
	for _, e := range p.events {
		p.c.publish(ctx, e)
	}
	p.events = nil
	return nil
}

// wanted reports whether the hub expects the agent to act on a: dispatched and not settled, or
// asked to stop (a cancel after a deadline, say) and not yet confirmed.
func wanted(a *wire.Assignment) bool {
	if a.DispatchedAt.IsZero() {
		return false
	}
	return !assignmentSettled(a.State) || (a.Action == wire.ActionCancel && a.AckedGeneration < a.Generation)
}

// desiredEntry is what the agent should currently work on in this migration, if anything.
// The agents of one request (attempt, generation, action) of a migration get the same entry:
// the pass makes and encodes it once.
func (p *pass) desiredEntry(id string) (entry, bool) {
	a, ok := p.latest[id]
	if !ok || !wanted(a) {
		return entry{}, false
	}
	k := request{a.Migration, a.Attempt, a.Generation, a.Action}
	if e, ok := p.requests[k]; ok {
		return e, true
	}
	d := wire.DesiredAssignment{Migration: a.Migration, Attempt: a.Attempt, Generation: a.Generation, Action: a.Action}
	if p.sp != nil {
		d.FromVersion, d.ToVersion = p.sp.Spec.FromVersion, p.sp.Spec.ToVersion
		if a.Action != wire.ActionCancel {
			// A cancel needs no steps: whatever the spec, the agent can always be told to stop.
			d.Steps, d.Signature = stepSpecs(p.sp), p.sp.Spec.Signature
		}
	}
	e := entry{DesiredAssignment: d, created: p.m.CreatedAt}
	e.encoded, _ = json.Marshal(d)
	if p.requests == nil {
		p.requests = map[request]entry{}
	}
	p.requests[k] = e
	return e, true
}

// request is what makes an agent's entry of a migration's desired document (desiredEntry).
type request struct {
	migration           string
	attempt, generation int
	action              string
}

// undeliverable fails an agent's attempt whose request does not fit in its desired document,
// and tells the agent to stop it in case an earlier document reached it.
func (p *pass) undeliverable(agentID, reason string) {
	a, ok := p.latest[agentID]
	if !ok || a.Action != wire.ActionApply || assignmentSettled(a.State) {
		return
	}
	a.Error, a.Failure, a.FailedStep = reason, reason, ""
	if p.setAssignment(a, aFailed) {
		a.Action, a.Generation = wire.ActionCancel, a.Generation+1
		p.events = append(p.events, p.assignmentEvent(a, wire.SeverityError, reason))
	}
}
