package sweep

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// Four hours of an hourly sweep with one agent offline all along and another that never answers
// (its checks run out of budget), passes every 5 seconds (2,880 of them) and a hub restart in
// the middle: each run is two sweep.progress events — it started, it ended — and the passes in
// between, which find nothing new, say nothing.
func TestFourHourOutageIsTwoEventsPerRun(t *testing.T) {
	t.Parallel()
	start := t0.Add(30 * time.Second) // just after a full hour
	h := newHarness(t, 2, start)
	h.setStatus(0, wire.StatusOffline)
	h.apply(sweepYAML("drift", `schedule: "0 * * * *"`, "maxSeconds: 1800"))
	for end := start.Add(4*time.Hour + 31*time.Minute); h.clock.Now().Before(end); { // the last run's budget ends at 14:30
		h.clock.Add(5 * time.Second)
		h.pass()
		if h.clock.Now().Equal(start.Add(2*time.Hour + 10*time.Minute)) {
			h.restart()
		}
	}
	runs := h.runs("drift")
	if len(runs) != 4 {
		t.Fatalf("%d runs in 4h of an hourly sweep, want 4", len(runs))
	}
	for _, r := range runs {
		if r.Status != wire.SweepRunCompleted || r.SkippedMissing != 1 || r.SkippedBudget != 1 {
			t.Fatalf("run of %s: %s, %d missing, %d over budget; want completed with agent-1 missing and agent-2 over budget",
				r.ScheduledFor.Format("15:04"), r.Status, r.SkippedMissing, r.SkippedBudget)
		}
	}
	var got []string
	for _, r := range h.progress() {
		got = append(got, fmt.Sprintf("%s %s", r.ScheduledFor.Format("15:04"), r.Status))
	}
	want := "11:00 running, 11:00 completed, 12:00 running, 12:00 completed, 13:00 running, 13:00 completed, 14:00 running, 14:00 completed"
	if strings.Join(got, ", ") != want {
		t.Fatalf("%d sweep.progress events:\n%s\nwant 8:\n%s", len(got), strings.Join(got, ", "), want)
	}
}
