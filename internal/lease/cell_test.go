package lease

import (
	"context"
	"errors"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/lease/leasetest"
)

// Cell tells a conflict (nothing written) from an absent key and from a call of unknown
// outcome, on a real bucket, delete markers and purges included.
func TestCellCompareAndSet(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	kv, _ := ns.bucket(t)
	ctx := t.Context()
	c := Cell{KV: kv, Key: "cell", Timeout: 5 * time.Second}

	if _, err := c.Read(ctx); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("Read(absent) = %v, want not found", err)
	}
	r1, err := c.Create(ctx, []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, []byte("two")); !errors.Is(err, fault.ErrConflict) || OutcomeUnknown(err) {
		t.Fatalf("Create(existing) = %v, want a conflict", err)
	}
	r2, err := c.Swap(ctx, r1, []byte("two"))
	if err != nil || r2 <= r1 {
		t.Fatalf("Swap(r1) = %d, %v", r2, err)
	}
	if _, err := c.Swap(ctx, r1, []byte("three")); !errors.Is(err, fault.ErrConflict) {
		t.Fatalf("Swap(stale revision) = %v, want a conflict", err)
	}
	e, err := c.Read(ctx)
	if err != nil || e.Revision != r2 || string(e.Value) != "two" || e.Created.IsZero() {
		t.Fatalf("Read = %+v, %v", e, err)
	}

	// A delete marker: Read says absent, Create writes over it, a Swap on the old revision
	// conflicts.
	if err := kv.Delete(ctx, "cell"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(ctx); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("Read(deleted) = %v, want not found", err)
	}
	if _, err := c.Swap(ctx, r2, []byte("x")); !errors.Is(err, fault.ErrConflict) {
		t.Fatalf("Swap over a delete marker with the old revision = %v, want a conflict", err)
	}
	r3, err := c.Create(ctx, []byte("again"))
	if err != nil || r3 <= r2 {
		t.Fatalf("Create(deleted) = %d, %v: revisions must keep growing", r3, err)
	}
	// A purge removes the history; revisions still only grow.
	if err := kv.Purge(ctx, "cell"); err != nil {
		t.Fatal(err)
	}
	r4, err := c.Create(ctx, []byte("after purge"))
	if err != nil || r4 <= r3 {
		t.Fatalf("Create(purged) = %d, %v: revisions must keep growing", r4, err)
	}
}

// A call that does not answer within the timeout fails with ErrTimeout, an outcome unknown:
// the write lands anyway.
func TestCellTimeout(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	kv, _ := ns.bucket(t)
	clock := leasetest.NewManualClock()
	f := leasetest.NewFaultKV(kv, clock)
	defer f.Close()
	c := Cell{KV: f, Key: "slow", Timeout: time.Second, Clock: clock}

	f.SetLatency(1500*time.Millisecond, 1500*time.Millisecond) // the request reaches the store past the deadline
	errc := make(chan error, 1)
	go func() {
		_, err := c.Create(context.Background(), []byte("v"))
		errc <- err
	}()
	waitFor(t, 10*time.Second, "the call and its latency timer to be armed", func() bool { return clock.Pending() >= 2 })
	clock.Advance(time.Second)
	err := <-errc
	if !errors.Is(err, ErrTimeout) || !OutcomeUnknown(err) || !errors.Is(err, fault.ErrUnavailable) {
		t.Fatalf("Create past its deadline = %v, want ErrTimeout (outcome unknown)", err)
	}
	clock.Advance(time.Second) // the request lands at 1.5 s
	waitFor(t, 10*time.Second, "the late write to land", func() bool {
		e, err := kv.Get(t.Context(), "slow")
		return err == nil && string(e.Value()) == "v"
	})
}
