package controller

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"godwit.dev/godwit/internal/wire"
)

// burstKV is the real desired bucket, with the puts counted: how many run at once, and a hook
// run inside the put numbered at.
type burstKV struct {
	jetstream.KeyValue
	puts, inFlight, peak atomic.Int64
	at                   int64
	hook                 func()
	once                 sync.Once
}

func (k *burstKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	n := k.inFlight.Add(1)
	defer k.inFlight.Add(-1)
	for p := k.peak.Load(); n > p && !k.peak.CompareAndSwap(p, n); p = k.peak.Load() {
	}
	if k.puts.Add(1) == k.at {
		k.once.Do(k.hook)
	}
	return k.KeyValue.Put(ctx, key, value)
}

// The desired documents of a pass are put concurrently (bounded), and a NATS server restarted on
// the same store in the middle of that burst loses no agent's desired state: every put that did
// not complete is tried again by the next passes, and in the end each agent's key holds exactly
// its document.
func TestPipelinedDesiredWritesSurviveNATSRestart(t *testing.T) {
	t.Parallel()
	const n = 300
	b := setup(t, n)
	kv := &burstKV{KeyValue: b.kv, at: n / 3}
	restarted := make(chan error, 1)
	kv.hook = func() {
		// The server goes down while this put and others of the burst are in flight, and comes
		// back on the same store and port.
		go func() {
			b.srv.Halt()
			restarted <- b.srv.Resume()
		}()
	}
	b.c.cfg.Desired = kv
	// As the hub does: the puts in flight end once the connection is seen down, rather than
	// each waiting for its time-out.
	b.c.cfg.Connected = b.nc.IsConnected
	b.apply(t, "m1", "    batchSize: 100%")

	// No deadline of its own, as in the controller's loop.
	firstErr := b.c.Pass(context.Background())
	select {
	case err := <-restarted:
		if err != nil {
			t.Fatalf("restart nats: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the restart never happened: the burst did not reach its middle")
	}
	t.Logf("first pass: %d puts, at most %d in flight; failed: %v (ended by the lost connection: %v)", kv.puts.Load(), kv.peak.Load(),
		firstErr != nil, errors.Is(firstErr, errBusLost))
	if p := kv.peak.Load(); p < 2 || p > desiredInFlight {
		t.Fatalf("at most %d puts in flight, want pipelined (2..%d)", p, desiredInFlight)
	}

	want := func(d wire.DesiredState, id string) bool {
		return d.AgentID == id && len(d.Assignments) == 1 && d.Assignments[0].Migration == "m1" &&
			d.Assignments[0].Action == wire.ActionApply && d.Assignments[0].Attempt == 1 && len(d.Assignments[0].Steps) == 2
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := b.c.Pass(context.Background())
		bad := 0
		for i := 1; i <= n; i++ {
			if !want(b.desired(t, i), b.agents[i-1].ID) {
				bad++
			}
		}
		if bad == 0 && err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d agents without their desired document after the restart (last pass: %v)", bad, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Once all is written, a pass writes nothing again: what the controller recorded as written
	// is what the bucket holds.
	before := kv.puts.Load()
	b.pass(t)
	if got := kv.puts.Load() - before; got != 0 {
		t.Fatalf("a pass after everything was written put %d documents", got)
	}
}

// heldKV is the real desired bucket whose puts wait until release is closed.
type heldKV struct {
	jetstream.KeyValue
	release chan struct{}
	held    atomic.Int64 // puts waiting now
	puts    atomic.Int64
}

func (k *heldKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	k.held.Add(1)
	select {
	case <-k.release:
	case <-ctx.Done():
		k.held.Add(-1)
		return 0, ctx.Err()
	}
	k.held.Add(-1)
	k.puts.Add(1)
	return k.KeyValue.Put(ctx, key, value)
}

// The run loop's passes hand their desired documents to a writer beside them: a pass decides
// and saves while the puts of an earlier one are still under way, and the writer, once free,
// writes only the newest documents, so every agent's key ends with what the last pass decided.
func TestPassesDoNotWaitForDesiredWrites(t *testing.T) {
	t.Parallel()
	const n = 5
	b := setup(t, n)
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t) // every agent has its assignment
	kv := &heldKV{KeyValue: b.kv, release: make(chan struct{})}
	b.c.cfg.Desired = kv
	w := newDesiredWriter()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx, b.c) }()
	defer func() { cancel(); <-done }()
	pass := func() {
		t.Helper()
		docs, err := b.c.decide(ctx)
		if err != nil {
			t.Fatalf("pass: %v", err)
		}
		w.offer(docs)
	}

	// agent-1 is done: its empty document is being put, and the put does not go through.
	b.report(t, 1, "m1", aSucceeded, "")
	pass()
	for deadline := time.Now().Add(30 * time.Second); kv.held.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the writer never put agent-1's empty document")
		}
	}
	// The others finish meanwhile: the next passes decide and save without waiting for it.
	for i := 2; i <= n; i++ {
		b.report(t, i, "m1", aSucceeded, "")
	}
	pass()
	pass()
	if m := b.migration(t, "m1"); m.State != mSucceeded {
		t.Fatalf("migration %s (%s) while a desired put of an earlier pass was held, want succeeded", m.State, m.Reason)
	}
	if h := kv.held.Load(); h != 1 {
		t.Fatalf("%d puts waiting, want agent-1's alone (the writer takes the next documents once it is free)", h)
	}

	close(kv.release)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		left := 0
		for i := 1; i <= n; i++ {
			if d := b.desired(t, i); len(d.Assignments) != 0 {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d agents still hold their assignment after the puts were released", left)
		}
	}
	// One put per agent: the documents the second pass replaced were never written.
	for deadline := time.Now().Add(10 * time.Second); kv.puts.Load() < n && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
	}
	if p := kv.puts.Load(); p != n {
		t.Fatalf("%d desired puts after the release, want %d (one empty document per agent)", p, n)
	}
}
