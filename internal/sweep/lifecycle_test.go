package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
	"godwit.dev/godwit/internal/worker"
)

// The leader side's lifecycle (package worker): Start, Stop and Start again each lead under a
// new epoch and write the agents' requests under it; a run that is deposed ends by itself and
// says so, and the next Start leads again and finishes the sweep run.
func TestLeaderStartStopStartAndDeposal(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1, t0) // its service leads with epoch 1 and is never started
	ctx := t.Context()
	exits := make(chan worker.Exit, 4)
	cfg := h.config()
	cfg.Interval, cfg.OnExit = 10*time.Millisecond, func(e worker.Exit) { exits <- e }
	svc := New(cfg)
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	h.apply(sweepYAML("drift", "maxSeconds: 3600"))
	run, err := svc.Trigger(ctx, "drift", wire.SweepTriggerRequest{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	// waitEpoch waits for agent-1's request document to ask about the run under an epoch above
	// the given one.
	waitEpoch := func(what string, above int64) int64 {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; {
			var doc wire.SweepRequests
			if e, err := h.bk.Sweep.Get(ctx, h.agents[0].ID); err == nil && json.Unmarshal(e.Value(), &doc) == nil &&
				doc.Epoch > above && len(doc.Checks) == 1 && doc.Checks[0].RunID == run.ID {
				return doc.Epoch
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no request under an epoch above %d within 30s", what, above)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first := waitEpoch("first start", 1)
	for range 2 {
		if err := svc.Stop(ctx); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	waitEpoch("Start after Stop", first)

	// Another hub takes the lead; the agent answers, and recording that answer is fenced.
	if _, err := h.store.AcquireEpoch(ctx, LeadershipName, "other-hub", h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.answer(0, answerOf(run, wire.CheckClean, 0))
	select {
	case e := <-exits:
		if e.Worker != "sweeps" || !errors.Is(e, fault.ErrFenced) {
			t.Fatalf("exit = %v, want the sweeps worker fenced", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the deposed scheduler did not report that it stopped")
	}
	if r := h.run(run.ID); r.Final() {
		t.Fatalf("the deposed scheduler finished the run: %+v", r)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatalf("Start after deposal: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); !h.run(run.ID).Final(); {
		if time.Now().After(deadline) {
			t.Fatalf("the run did not end after leading again: %+v", h.run(run.ID))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r := h.run(run.ID); r.Status != wire.SweepRunCompleted || r.SkippedClean != 1 {
		t.Fatalf("run = %+v", r)
	}
	select {
	case e := <-exits:
		t.Fatalf("unexpected exit: %v", e)
	default:
	}
}
