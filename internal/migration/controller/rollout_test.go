package controller

import (
	"context"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/wire"
)

// onFailure: abort supersedes the agents of the batches not yet started. A retry of the failed
// agents runs the migration again: the rollout goes on to those agents, and the migration does
// not end "succeeded" while they never ran.
func TestRetryAfterAbortByBudgetRollsOutTheRest(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	b.apply(t, "m1", "    batchSize: 1\n    maxFailures: 0\n    onFailure: abort\n    onAgentFailure: leave")
	b.pass(t)
	b.report(t, 1, "m1", aFailed, "boom")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mFailed {
		t.Fatalf("after the budget: %s %q; want failed", m.State, m.Reason)
	}
	if a := b.latest(t, "m1")["agent-2"]; a.State != aSuperseded {
		t.Fatalf("agent-2 after the abort: %s; want superseded", a.State)
	}
	b.act(t, "m1", wire.MigrationRetry)
	b.pass(t)
	b.report(t, 1, "m1", aSucceeded, "")
	b.pass(t)
	b.pass(t)
	m := b.migration(t, "m1")
	a2 := b.latest(t, "m1")["agent-2"]
	if m.State == mSucceeded && a2.State != aSucceeded {
		t.Fatalf("migration %s %q while agent-2 is %s", m.State, m.Reason, a2.State)
	}
	if a2.DispatchedAt.IsZero() || a2.State != aPending {
		t.Fatalf("agent-2 after the retry and batch 1: %+v; want it dispatched", a2)
	}
	b.report(t, 2, "m1", aSucceeded, "")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mSucceeded {
		t.Fatalf("after agent-2 succeeded: %s %q", m.State, m.Reason)
	}
}

// A migration whose rollback failed on one agent, retried for the agent that had failed, does
// not end "succeeded: every agent succeeded" while the other agent's rollback failed.
func TestRetryAfterAFailedRollbackDoesNotClaimSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	b.apply(t, "m1", "    batchSize: 100%\n    maxFailures: 0\n    onFailure: rollback")
	b.pass(t)
	b.report(t, 1, "m1", aSucceeded, "")
	b.report(t, 2, "m1", aFailed, "boom")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mRollingBack {
		t.Fatalf("after the budget: %s %q; want rolling_back", m.State, m.Reason)
	}
	b.report(t, 1, "m1", aRollbackFailed, "rollback: permission denied")
	b.report(t, 2, "m1", aRolledBack, "")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mFailed {
		t.Fatalf("after the failed rollback: %s %q; want failed", m.State, m.Reason)
	}
	b.act(t, "m1", wire.MigrationRetry)
	b.pass(t)
	b.report(t, 2, "m1", aSucceeded, "")
	b.pass(t)
	m := b.migration(t, "m1")
	if a1 := b.latest(t, "m1")["agent-1"]; m.State == mSucceeded || strings.Contains(m.Reason, "every agent succeeded") {
		t.Fatalf("migration %s %q while agent-1 is %s", m.State, m.Reason, a1.State)
	}
}

// An abort while the migration rolls back stops the rollback commands as it stops apply
// commands ("running steps are stopped"): the agent is told to cancel, ends rollback_failed, and
// a later rollback resumes it.
func TestAbortDuringRollbackStopsTheRollback(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	b.report(t, 1, "m1", aSucceeded, "")
	b.pass(t)
	b.act(t, "m1", wire.MigrationRollback)
	b.pass(t)
	b.report(t, 1, "m1", aRollingBack, "")
	b.pass(t)
	b.act(t, "m1", wire.MigrationAbort)
	b.pass(t)
	d := b.desired(t, 1)
	if len(d.Assignments) != 1 || d.Assignments[0].Action != wire.ActionCancel {
		t.Fatalf("agent-1's desired state after the abort: %+v; want a cancel of its rollback", d.Assignments)
	}
	b.report(t, 1, "m1", aRollbackFailed, "cancelled")
	b.pass(t)
	if a := b.latest(t, "m1")["agent-1"]; a.State != aRollbackFailed || wanted(&a) {
		t.Fatalf("agent-1 after its confirmed cancel: %s, action %s; want rollback_failed and nothing asked", a.State, a.Action)
	}
	if m := b.migration(t, "m1"); m.State != mCancelled {
		t.Fatalf("migration %s %q; want cancelled", m.State, m.Reason)
	}
	// The rollback resumes where the abort stopped it.
	b.act(t, "m1", wire.MigrationRollback)
	b.pass(t)
	if d := b.desired(t, 1); len(d.Assignments) != 1 || d.Assignments[0].Action != wire.ActionRollback {
		t.Fatalf("agent-1's desired state after rollback again: %+v", d.Assignments)
	}
	b.report(t, 1, "m1", aRolledBack, "")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mRolledBack {
		t.Fatalf("migration %s %q; want rolled_back", m.State, m.Reason)
	}
}

// An abort that reaches an agent before it began the rollback it was asked for (it still
// reports the attempt succeeded) leaves nothing asked of the agent once it confirms: the
// assignment is rollback_failed, and a later rollback resumes it.
func TestAbortBeforeTheAgentBeganItsRollback(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	b.report(t, 1, "m1", aSucceeded, "")
	b.pass(t)
	b.act(t, "m1", wire.MigrationRollback)
	b.pass(t)
	b.act(t, "m1", wire.MigrationAbort)
	b.pass(t)
	b.report(t, 1, "m1", aSucceeded, "")
	b.pass(t)
	if a := b.latest(t, "m1")["agent-1"]; wanted(&a) || a.State != aRollbackFailed {
		t.Fatalf("agent-1 after its confirmed cancel: %s, action %s, acked %d of %d; want rollback_failed and nothing asked",
			a.State, a.Action, a.AckedGeneration, a.Generation)
	}
	if err := b.c.Delete(ctx, "m1", "admin"); err != nil {
		t.Fatalf("delete after the abort: %v", err)
	}
}

// onAgentFailure: rollback undoes a failed agent at once, also when it fails while the
// migration is paused (here by its failure budget, with the rest of the batch still running).
func TestAgentFailingWhilePausedIsRolledBack(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	b.apply(t, "m1", "    batchSize: 100%\n    maxFailures: 0\n    onFailure: pause")
	b.pass(t)
	b.report(t, 1, "m1", aFailed, "boom")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mPaused {
		t.Fatalf("after the budget: %s %q; want paused", m.State, m.Reason)
	}
	b.report(t, 2, "m1", aFailed, "boom")
	b.pass(t)
	if a := b.latest(t, "m1")["agent-2"]; a.State != aRollingBack || a.Action != wire.ActionRollback {
		t.Fatalf("agent-2 failed while paused: %s, action %s; want it rolled back", a.State, a.Action)
	}
}

// act performs an operator action as admin, failing the test if it is refused.
func (b *bundle) act(t *testing.T, name string, action wire.MigrationAction) {
	t.Helper()
	if _, err := b.c.Act(context.Background(), name, action, "admin"); err != nil {
		t.Fatal(err)
	}
}
