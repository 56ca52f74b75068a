package controller

import (
	"fmt"

	"godwit.dev/godwit/internal/migration/plan"
	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/wire"
)

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

func (p *pass) budget() int {
	return plan.Plan{Matched: len(p.latest)}.FailureBudget(p.sp)
}

// advance moves a running or rolling-back migration forward, and undoes the failed agents of a
// paused one.
func (p *pass) advance() {
	switch p.m.State {
	case mPending:
		p.setMigration(mRunning, "started")
		p.advanceRunning()
	case mRunning:
		p.advanceRunning()
	case mPaused:
		// Nothing new starts, but an agent that failed meanwhile is undone at once.
		p.rollbackFailedAgents()
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
			p.cancelInFlight(reason, false)
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
		// An agent whose latest attempt neither succeeded nor was needed and did not fail (one
		// rolled back, whose rollback failed, or never started) is not migrated either.
		f, other := p.failures(), 0
		for _, a := range p.latest {
			if !failedAttempt(a) && a.State != aSucceeded && a.State != aNotNeeded {
				other++
			}
		}
		switch {
		case f == 0 && other == 0:
			p.setMigration(mSucceeded, "every agent succeeded or needed nothing")
		case other == 0:
			p.setMigration(mPartiallySucceeded, fmt.Sprintf("%d of %d agents failed, within the failure budget", f, len(p.latest)))
		default:
			p.setMigration(mPartiallySucceeded, fmt.Sprintf("%d of %d agents failed, within the failure budget; %d were not migrated (rolled back, rollback failed or never started)", f, len(p.latest), other))
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
func (p *pass) requestRollback(a *wire.Assignment) {
	a.Action, a.Generation = wire.ActionRollback, a.Generation+1
	a.ActiveMS, a.DispatchedAt = 0, p.now
	p.touch(a)
}

// cancelInFlight supersedes what was never sent and asks agents to stop what they apply, and
// with rollbacks what they roll back too (an operator's abort stops every running step; an
// agent stopped mid-rollback ends rollback_failed, which a later rollback resumes).
func (p *pass) cancelInFlight(reason string, rollbacks bool) {
	for _, id := range p.order {
		a := p.latest[id]
		switch {
		case a.State == aPending && a.DispatchedAt.IsZero():
			a.Error = reason
			p.setAssignment(a, aSuperseded)
		case rollbacks && !assignmentSettled(a.State) && a.Action == wire.ActionRollback:
			// As at a rollback's deadline: rollback_failed, whatever the agent reports of the
			// cancel (it may not have begun the rollback), and a later rollback resumes it.
			if a.State != aRollingBack {
				p.setAssignment(a, aRollingBack)
			}
			if p.setAssignment(a, aRollbackFailed) {
				a.Error = "rollback stopped: " + reason
				a.Action, a.Generation = wire.ActionCancel, a.Generation+1
			}
		case !assignmentSettled(a.State) && a.Action == wire.ActionApply:
			a.Action, a.Generation = wire.ActionCancel, a.Generation+1
			p.touch(a)
		}
	}
}
