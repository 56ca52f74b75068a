package controller

import (
	"container/heap"
	"fmt"
	"time"

	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/wire"
)

// DefaultSettle covers an agent's longest reconnect back-off (30s plus jitter) and a heartbeat.
const DefaultSettle = 45 * time.Second

// judging reports whether the bus is up and whether the settle time has passed at now.
func (c *Controller) judging(now time.Time) (busUp, settled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.busDown, !c.busDown && !now.Before(c.judgeFrom)
}

// deadlines counts time and enforces the assignment and migration deadlines.
//
// Under the "active" policy (the default) only time that could be used counts: time between
// passes of a running hub that read the store and saved what they counted (a hub that was down
// counts nothing for its downtime, since the first pass after a start has no previous pass, and
// an outage of the store counts nothing either, since a pass it cut short leaves none: delta is
// zero then), for an assignment only while its agent is reachable, and for the migration only
// while it is running or rolling back and at least one of its agents is reachable. Under "wall", elapsed time since dispatch (assignment) or creation (migration)
// counts. A rollback gets a fresh timer when it is requested.
func (p *pass) deadlines(delta time.Duration) {
	reachable := p.view.reachable
	active := p.sp.Spec.DeadlinePolicy != spec.DeadlineWall
	// The migration's time counts only while some agent with work in flight is reachable:
	// otherwise nothing could progress, whatever the hub does.
	workable := false
	for _, id := range p.order {
		a := p.latest[id]
		if reachable(id) && !a.DispatchedAt.IsZero() && !assignmentSettled(a.State) {
			workable = true
			break
		}
	}
	counting := (p.m.State == mRunning || p.m.State == mRollingBack) && workable
	p.flushMax = p.unsaved.allow(delta)
	if counting && active && delta > 0 {
		p.m.ActiveMS += delta.Milliseconds()
	}
	for _, id := range p.order {
		a := p.latest[id]
		if a.DispatchedAt.IsZero() || assignmentSettled(a.State) || a.Action == wire.ActionCancel {
			continue
		}
		p.reachability(a, reachable(id))
		if active && reachable(id) {
			// A timer that started since the last pass (a rollback or retry requested
			// meanwhile) counts only from its start. A pass that counts nothing still offers
			// what earlier ones left unsaved.
			ms := min(max(delta, 0), max(p.now.Sub(a.DispatchedAt), 0)).Milliseconds()
			a.ActiveMS += ms
			p.countUnsaved(a, ms)
		}
		limit := p.sp.Spec.Timeouts.Assignment
		used := time.Duration(a.ActiveMS) * time.Millisecond
		if !active {
			used = p.now.Sub(a.DispatchedAt)
		}
		// While settling, only an agent heard from again (it has reconnected and re-sent its
		// observed state) is judged; one still silent waits for the settle time.
		if used <= limit || !(p.judge || (p.busUp && reachable(id) && p.view.seen(id).heard)) {
			continue
		}
		// The error is written only with the move it explains: a refused move changes nothing.
		switch a.Action {
		case wire.ActionApply:
			if p.setAssignment(a, aTimedOut) {
				a.Error = fmt.Sprintf("assignment deadline of %s (%s time) passed", limit, p.sp.Spec.DeadlinePolicy)
				a.Failure, a.FailedStep = a.Error, a.StepName
				a.Action, a.Generation = wire.ActionCancel, a.Generation+1 // tell the agent to stop
				p.events = append(p.events, p.assignmentEvent(a, wire.SeverityError, a.Error))
			}
		case wire.ActionRollback:
			// A stuck rollback stops as rollback_failed, which `rollback` resumes with a fresh
			// timer. An agent that never reported rolling back (still applying, say) is taken
			// through rolling_back: the hub asked for it, and rollback_failed follows only that.
			switch a.State {
			case aPending, aDetecting, aApplying, aVerifying:
				p.setAssignment(a, aRollingBack)
			}
			if p.setAssignment(a, aRollbackFailed) {
				a.Error = fmt.Sprintf("rollback deadline of %s (%s time) passed", limit, p.sp.Spec.DeadlinePolicy)
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
		p.cancelInFlight(reason, false)
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

// reachability marks an in-flight assignment agent_unreachable when its agent becomes
// unreachable — not failed: only its deadline can fail it — and puts it back when the agent is
// reachable again. Each is one event, when it happens: the state is stored, so a pass (or a
// restarted hub) that finds the agent still away or still back says nothing more.
func (p *pass) reachability(a *wire.Assignment, reachable bool) {
	switch {
	case !reachable && a.State != aUnreachable:
		if p.setAssignment(a, aUnreachable) {
			msg := "agent unreachable (no heartbeat within the liveness grace): its deadline does not count while it is away (active policy)"
			if p.sp != nil && p.sp.Spec.DeadlinePolicy == spec.DeadlineWall {
				msg = "agent unreachable (no heartbeat within the liveness grace): its deadline counts on (wall policy)"
			}
			p.events = append(p.events, p.assignmentEvent(a, wire.SeverityWarning, msg))
		}
	case reachable && a.State == aUnreachable:
		since := a.UnreachableSince
		back := aPending
		if o, ok := p.observedFor(a); ok && o.Generation == a.Generation {
			back = o.State
		} else if a.Action == wire.ActionRollback {
			back = aRollingBack
		}
		if p.setAssignment(a, back) {
			p.reachableAgain(a, since)
		}
	}
}

// reachableAgain records that an assignment left agent_unreachable because its agent is back,
// with how long it was away (since is when it became unreachable; zero if that was not
// recorded).
func (p *pass) reachableAgain(a *wire.Assignment, since time.Time) {
	away := "for an unrecorded time"
	if !since.IsZero() {
		away = "after " + p.now.Sub(since).Round(time.Second).String() + " (unreachable since " + since.UTC().Format(time.RFC3339) + ")"
	}
	p.events = append(p.events, p.assignmentEvent(a, wire.SeverityInfo, fmt.Sprintf("agent reachable again %s; the assignment is %s", away, a.State)))
}

// activeFlush and activeFlushRate bound the active time an assignment may have counted in
// memory and not yet stored. Counting alone does not write an assignment on every pass: an
// assignment written for any other reason is written with all the time it counted, and one that
// is not has its time written once it holds at least activeFlush of it — at most
// activeFlushRate such assignments a second of a migration's passes (a pass may write what the
// time since the last one allows, at most a second's worth), those with the most unsaved time
// first (the longest unwritten: the time of reachable agents grows alike). So the writes for
// time alone stay under activeFlushRate rows a second whatever the size of the fleet and however
// often passes run. With fewer than activeFlushRate × activeFlush seconds (5,000) assignments
// at work, no assignment holds more than activeFlush unsaved (give or take a pass); with more,
// each waits its turn, about (assignments at work ÷ activeFlushRate) seconds — 200 s at 100,000.
// A new leader starts from the stored times, so a leader change loses at most that much of each
// assignment's counted time: its deadline comes that much later, never sooner.
const (
	activeFlush     = 10 * time.Second
	activeFlushRate = 500 // rows a second
)

// counting is one migration's active time counted and not yet stored, by agent. A pass changes
// it in place; saved is the last pass of the migration that saved what it counted, and an entry
// that a later pass changed (seq) and that pass was cut short is given back its value from
// before (see unsavedActive.before) when the next pass reads the rows again. credit is how many
// rows the migration's passes may still write for their time alone (activeFlushRate).
type counting struct {
	agents map[string]*unsavedActive
	saved  int64
	credit float64
}

// allow adds the credit for delta of passes and returns the rows this pass may write for their
// time alone.
func (u *counting) allow(delta time.Duration) int {
	u.credit = min(u.credit+activeFlushRate*max(delta, 0).Seconds(), activeFlushRate)
	return int(u.credit)
}

// unsavedActive is active time counted for an assignment and not yet stored; it belongs to the
// attempt and timer (DispatchedAt) it was counted for.
type unsavedActive struct {
	attempt    int
	dispatched time.Time
	ms         int64
	seq        int64 // the pass that last counted for it
	before     int64 // ms before that pass
}

// counting returns the migration's unsaved time, giving back what a pass cut short counted.
func (p *pass) counting() *counting {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	u := p.c.unsaved[p.m.Name]
	if u == nil {
		u = &counting{agents: map[string]*unsavedActive{}}
		p.c.unsaved[p.m.Name] = u
	}
	return u
}

// addUnsaved adds what earlier passes counted and did not store to the assignments read from
// the store. Rows are read again after a pass of the migration was cut short, whose counting
// is undone here (it never got through).
func (p *pass) addUnsaved() {
	p.unsaved = p.counting()
	for id, u := range p.unsaved.agents {
		if u.seq > p.unsaved.saved {
			u.ms, u.seq = u.before, p.unsaved.saved
		}
		a, ok := p.latest[id]
		if !ok || a.Attempt != u.attempt || !a.DispatchedAt.Equal(u.dispatched) {
			delete(p.unsaved.agents, id)
			continue
		}
		a.ActiveMS += u.ms
	}
}

// keepCounting takes over, for rows kept from the last pass, what earlier passes counted and
// did not store: the rows hold it already, and the last pass got through.
func (p *pass) keepCounting() { p.unsaved = p.counting() }

// countUnsaved records ms counted for a, and offers it to be written for its time alone once
// enough is unsaved (see activeFlush).
func (p *pass) countUnsaved(a *wire.Assignment, ms int64) {
	u := p.unsaved.agents[a.AgentID]
	if u == nil {
		if ms == 0 {
			return
		}
		u = &unsavedActive{}
		p.unsaved.agents[a.AgentID] = u
	}
	if u.attempt != a.Attempt || !u.dispatched.Equal(a.DispatchedAt) {
		*u = unsavedActive{attempt: a.Attempt, dispatched: a.DispatchedAt, seq: p.seq}
	}
	if u.seq != p.seq {
		u.before, u.seq = u.ms, p.seq
	}
	u.ms += ms
	if u.ms >= activeFlush.Milliseconds() && !p.dirty[a.AgentID] {
		p.flush.offer(a.AgentID, u.ms, p.flushMax)
	}
}

// flushHeap holds the assignments with the most unsaved time offered in a pass, as many as the
// pass may write for their time alone: the smallest on top, the one a larger offer replaces.
// Among equals the first offered (p.order) stays.
type flushHeap []flushItem

type flushItem struct {
	id string
	ms int64
}

func (h flushHeap) Len() int           { return len(h) }
func (h flushHeap) Less(i, j int) bool { return h[i].ms < h[j].ms }
func (h flushHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *flushHeap) Push(x any)        { *h = append(*h, x.(flushItem)) }
func (h *flushHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (h *flushHeap) offer(id string, ms int64, most int) {
	switch {
	case most <= 0:
	case len(*h) < most:
		heap.Push(h, flushItem{id, ms})
	case ms > (*h)[0].ms:
		(*h)[0] = flushItem{id, ms}
		heap.Fix(h, 0)
	}
}

// flushActive marks for writing the assignments chosen for their unsaved time alone, and
// returns those that nothing else changed: no agent needs to hear about them.
func (p *pass) flushActive() (timeOnly map[string]bool) {
	for _, f := range p.flush {
		if !p.dirty[f.id] {
			if timeOnly == nil {
				timeOnly = map[string]bool{}
			}
			timeOnly[f.id] = true
			p.dirty[f.id] = true
		}
	}
	p.flush = p.flush[:0]
	p.unsaved.credit -= float64(len(timeOnly))
	return timeOnly
}

// keepUnsaved records, once the pass is saved, that it got through: a written assignment has
// nothing unsaved left, and what the others counted stays for the next pass.
func (p *pass) keepUnsaved() {
	for id := range p.dirty {
		delete(p.unsaved.agents, id)
	}
	p.unsaved.saved = p.seq
}
