package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// withDeadline is specTmpl in batches of one agent with a 2h migration deadline (90m for an
// assignment), the given deadline policy and onTimeout.
func withDeadline(name, policy, onTimeout string) []byte {
	return []byte(strings.Replace(fmt.Sprintf(specTmpl, name, "    batchSize: 1"), "    assignment: 1h\n",
		"    assignment: 90m\n    migration: 2h\n  deadlinePolicy: "+policy+"\n  onTimeout: "+onTimeout+"\n", 1))
}

// A migration its deadline paused (or failed) and an operator resumes (or retries) runs again
// with its deadline counting from the resume: it is not stopped again at the next pass for time
// it had already been judged on.
func TestResumeOrRetryPastTheDeadlineStartsItAgain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ onTimeout, stopped string }{
		{"pause", mPaused}, {"fail", mFailed},
	} {
		t.Run(tc.onTimeout, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 2)
			ctx := context.Background()
			if _, err := b.c.Apply(ctx, withDeadline("m1", "active", tc.onTimeout), false); err != nil {
				t.Fatal(err)
			}
			run := func(d time.Duration) {
				for range int(d / (10 * time.Minute)) {
					b.clock.Add(10 * time.Minute)
					b.pass(t)
				}
			}
			// 70m on agent-1's batch, then 60m on agent-2's: 2h10m of a 2h deadline, and
			// neither assignment past its 90m.
			b.pass(t)
			b.report(t, 1, "m1", aApplying, "")
			run(70 * time.Minute)
			b.report(t, 1, "m1", aSucceeded, "")
			b.pass(t)
			b.report(t, 2, "m1", aApplying, "")
			run(60 * time.Minute)
			if m := b.migration(t, "m1"); m.State != tc.stopped || !strings.Contains(m.Reason, "migration deadline") {
				t.Fatalf("after 2h10m of a 2h deadline: %s %q", m.State, m.Reason)
			}
			act := wire.MigrationResume
			if tc.stopped == mFailed {
				act = wire.MigrationRetry
				b.report(t, 2, "m1", aFailed, "cancelled") // the agent confirms the cancel
				b.pass(t)
			}
			got, err := b.c.Act(ctx, "m1", act, "alice")
			if err != nil {
				t.Fatalf("%s past the deadline: %v", act, err)
			}
			if got.ActiveMS != 0 {
				t.Fatalf("%s past the deadline kept %dms counted", act, got.ActiveMS)
			}
			b.pass(t)
			if tc.stopped == mFailed {
				b.report(t, 2, "m1", aApplying, "")
			}
			run(20 * time.Minute)
			m := b.migration(t, "m1")
			if m.State != mRunning {
				t.Fatalf("20m after the %s: %s %q; want running, its deadline started again", act, m.State, m.Reason)
			}
			if want := (20 * time.Minute).Milliseconds(); m.ActiveMS != want {
				t.Fatalf("20m after the %s: %dms counted, want %d", act, m.ActiveMS, want)
			}
		})
	}
}

// Under the wall policy the deadline counts from the migration's creation and cannot start
// again: a resume past it would be paused at once, so it is refused, saying why and what to do.
func TestResumePastAWallDeadlineIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	if _, err := b.c.Apply(ctx, withDeadline("m1", "wall", "pause"), false); err != nil {
		t.Fatal(err)
	}
	b.pass(t)
	b.clock.Add(3 * time.Hour)
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mPaused {
		t.Fatalf("after 3h of a 2h wall deadline: %s %q", m.State, m.Reason)
	}
	_, err := b.c.Act(ctx, "m1", wire.MigrationResume, "alice")
	if !errors.Is(err, fault.ErrConflict) || !strings.Contains(err.Error(), "deadline") || !strings.Contains(err.Error(), "roll it back") {
		t.Fatalf("resume past a wall deadline: %v; want a conflict naming the deadline and what to do", err)
	}
	if m := b.migration(t, "m1"); m.State != mPaused {
		t.Fatalf("after the refused resume: %s", m.State)
	}
}
