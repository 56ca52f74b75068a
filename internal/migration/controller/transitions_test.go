package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// hubEvents lists the events so far as "type: message" lines, the controller's resumption left
// out.
func (b *bundle) hubEvents(types ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, e := range b.events {
		for _, typ := range types {
			if e.Type == typ {
				out = append(out, e.Type+": "+e.Data.Message)
			}
		}
	}
	return out
}

// Two agents unreachable for four hours, with passes every 5 seconds (2,880 of them) and a hub
// restart in the middle, make four events: each agent became unreachable, and each is reachable again, with
// how long it was away. An agent's last report, read again on every pass, is not news.
func TestFourHourOutageMarksTransitionsOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	for n := 1; n <= 2; n++ {
		b.report(t, n, "m1", aApplying, "")
	}
	b.pass(t)
	b.setStatus(t, b.c, wire.StatusOffline, 1, 2)
	passes := func(c *Controller, d time.Duration) {
		for end := b.clock.Now().Add(d); b.clock.Now().Before(end); {
			b.clock.Add(5 * time.Second)
			if err := c.Pass(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	passes(b.c, 2*time.Hour)
	// The hub restarts: the new leader reads every agent's last (stale) report again.
	next := New(b.c.cfg)
	for _, a := range b.agents {
		next.ObserveForTest(b.c.observed[a.ID])
	}
	if err := next.lead(ctx); err != nil {
		t.Fatal(err)
	}
	passes(next, 2*time.Hour)
	for _, a := range b.latest(t, "m1") {
		if a.State != aUnreachable || a.ActiveMS != 0 {
			t.Fatalf("after 4h away: %+v", a)
		}
	}
	b.setStatus(t, next, wire.StatusOnline, 1, 2)
	passes(next, time.Minute)
	got := b.hubEvents(wire.EventAssignmentReconciled, wire.EventMigrationStateChanged, wire.EventCheckFinding)
	want := []string{"pending → running", // before the outage
		"agent unreachable", "agent unreachable", "agent reachable again after 4h0m0s", "agent reachable again after 4h0m0s"}
	if len(got) != len(want) {
		t.Fatalf("%d events over a 4h outage of 2 agents, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Fatalf("event %d = %q, want it to say %q (all: %s)", i, got[i], w, strings.Join(got, "\n"))
		}
	}
	if !strings.Contains(got[3], "the assignment is applying") {
		t.Fatalf("reachable-again event %q does not say where the assignment is", got[3])
	}
	for _, a := range b.latest(t, "m1") {
		if a.State != aApplying || !a.UnreachableSince.IsZero() {
			t.Fatalf("after the agents came back: %+v", a)
		}
	}
}
