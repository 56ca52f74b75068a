package liveness

import (
	"context"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// A hub that starts (or a replica that takes the lead) while it cannot reach the bus marks
// the agents stored online unknown once the grace has passed, like a hub that lost the bus
// while running: nobody can judge them, and "online" would be shown for as long as the bus
// stays away.
func TestBlindFromTheStartMarksUnknown(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	ctx := context.Background()
	f.run(f.controller(), time.Minute, 1, 2)
	f.run(f.controller(), time.Minute, 1) // agent-2 goes offline
	f.mu.Lock()
	f.blind = true
	f.mu.Unlock()
	c := f.controller()
	c.lastOK = time.Now().Add(-time.Hour)
	c.tick(ctx)
	for i, want := range []string{wire.StatusUnknown, wire.StatusOffline} {
		if a, _ := f.store.GetAgent(ctx, f.agents[i].ID); a.Status != want {
			t.Fatalf("agent-%d, judged by a hub blind since it started: %s, want %s", i+1, a.Status, want)
		}
	}
}
