package controller

import (
	"context"
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
	b.apply(t, "m1", "    batchSize: 100%")

	// No deadline of its own, as in the controller's loop: a put lost with the connection ends
	// with the bucket's request timeout.
	firstErr := b.c.Pass(context.Background())
	select {
	case err := <-restarted:
		if err != nil {
			t.Fatalf("restart nats: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the restart never happened: the burst did not reach its middle")
	}
	t.Logf("first pass: %d puts, at most %d in flight; failed: %v", kv.puts.Load(), kv.peak.Load(), firstErr != nil)
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
