package controller

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/worker"
)

// The controller's lifecycle (package worker): Start, Stop and Start again each lead under a new
// epoch and write the agents' desired documents under it; a run that is deposed ends by itself
// and says so, and the next Start leads again — as a hub that loses and regains the lead does.
func TestStartStopStartAndDeposal(t *testing.T) {
	t.Parallel()
	b := setup(t, 1) // its controller leads with epoch 1 and is never started
	ctx := context.Background()
	exits := make(chan worker.Exit, 4)
	cfg := b.c.cfg
	cfg.Interval, cfg.OnExit = 10*time.Millisecond, func(e worker.Exit) { exits <- e }
	c := New(cfg)
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	if _, err := c.Apply(ctx, []byte(fmt.Sprintf(specTmpl, "m1", "    batchSize: 100%")), false); err != nil {
		t.Fatal(err)
	}
	// waitEpoch waits for agent-1's desired document to carry the assignment under an epoch
	// above the given one.
	waitEpoch := func(what string, above int64) int64 {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			if d := b.desired(t, 1); d.Epoch > above && len(d.Assignments) == 1 {
				return d.Epoch
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no desired document under an epoch above %d within 10s (have %+v)", what, above, b.desired(t, 1))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first := waitEpoch("first start", 1)
	for range 2 {
		if err := c.Stop(ctx); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	second := waitEpoch("Start after Stop", first)

	// Another hub takes the lead: this run's next write is fenced, and it ends by itself.
	if _, err := b.store.AcquireEpoch(ctx, LeadershipName, "other-hub", b.clock.Now()); err != nil {
		t.Fatal(err)
	}
	b.clock.Add(touchEvery) // the next pass records that it is alive, under its old epoch
	c.Nudge()
	select {
	case e := <-exits:
		if e.Worker != "migrations" || !errors.Is(e, fault.ErrFenced) {
			t.Fatalf("exit = %v, want the migrations worker fenced", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the deposed controller did not report that it stopped")
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start after deposal: %v", err)
	}
	waitEpoch("Start after deposal", second+1) // the other hub held second+1
	select {
	case e := <-exits:
		t.Fatalf("unexpected exit: %v", e)
	default:
	}
}

// Two hubs starting together: another takes the lead between this one's taking it and its first
// record of being alive. Start does not fail (the hub would exit); the run is deposed on its
// first pass and says so, as a hub deposed a moment later does.
func TestLeadTakenAtOnceIsADeposalNotAFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	exits := make(chan worker.Exit, 1)
	cfg := b.c.cfg
	cfg.Interval, cfg.OnExit = 10*time.Millisecond, func(e worker.Exit) { exits <- e }
	cfg.Leader = racedLeader{Leadership: cfg.Leader, other: func() {
		if _, err := b.store.AcquireEpoch(context.Background(), LeadershipName, "other-hub", b.clock.Now()); err != nil {
			t.Error(err)
		}
	}}
	c := New(cfg)
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("Start when another hub took the lead at once: %v", err)
	}
	b.clock.Add(touchEvery) // the next pass records that it is alive, and finds it is not the leader
	select {
	case e := <-exits:
		if !errors.Is(e.Err, fault.ErrFenced) {
			t.Fatalf("run ended with %v, want deposed (fenced)", e.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the deposed run did not end within 10s")
	}
}

// racedLeader lets another hub acquire right after this one did.
type racedLeader struct {
	Leadership
	other func()
}

func (r racedLeader) Acquire(ctx context.Context) (int64, error) {
	e, err := r.Leadership.Acquire(ctx)
	r.other()
	return e, err
}
