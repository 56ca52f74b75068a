package ingest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// A fetch is written in transactions of at most WriteBatch events, so one event batch message
// can straddle several of them. These tests hold its acknowledgement, its redelivery, its
// dead letters and the counts to what a single transaction would give.

// publishSingle puts one event of the agent on its subject as a message of its own.
func (bd *bundle) publishSingle(t *testing.T, agent string) string {
	t.Helper()
	ev := agentEvent(agent, wire.EventExecutionSucceeded, time.Now(), "m1")
	bd.publish(t, wire.EventSubject(agent), ev)
	return ev.ID
}

// A batch message whose events straddle the write chunks is not acknowledged while a later
// chunk holding some of its events is still being written, though a message wholly in the
// first chunk is; it is once that chunk commits.
func TestMessageStraddlingWriteChunksIsAckedAfterItsLastChunk(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	agent, nc := bd.enroll(t)
	ctx := testCtx(t)
	single := bd.publishSingle(t, agent)
	_, ids, payloads := batchOf(t, agent, 5)
	if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	var firstCall atomic.Int64
	entered, release := make(chan struct{}), make(chan struct{})
	held := &wrapStore{Store: bd.store}
	held.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		switch calls.Add(1) {
		case 1:
			firstCall.Store(int64(len(events)))
		case 2:
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		return bd.store.InsertEvents(ctx, events, states)
	}
	ing, reg := bd.ingester(t, "hub", Config{Store: held, Batch: 20, WriteBatch: 2})
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the second write did not start")
	}
	// The single event's message is acknowledged after the first chunk (on its own when it was
	// fetched alone); the batch message, part of which waits in the second, is not.
	waitFor(t, 10*time.Second, func() error {
		if _, ap := bd.consumerLag(t); ap > 1 {
			return fmt.Errorf("%d ack pending, want the single event's message acknowledged", ap)
		}
		return nil
	})
	if p, ap := bd.consumerLag(t); p != 0 || ap != 1 {
		t.Fatalf("%d pending, %d ack pending while part of the batch message is unwritten; want it alone ack pending", p, ap)
	}
	if n := bd.count(t); n != firstCall.Load() {
		t.Fatalf("%d events stored while the second write waits, want the first write's %d", n, firstCall.Load())
	}
	close(release)
	bd.waitDrained(t, 6)
	bd.requireStoredOnce(t, ing, agent, append(ids, single))
	if got := metric(t, reg, "godwit_ingest_events_ingested_total"); got != 6 {
		t.Errorf("events_ingested_total = %v, want 6", got)
	}
}

// A write chunk that fails transiently after an earlier one committed (or that commits and then
// reports a failure, as a crash after COMMIT looks): the messages of the first chunk stay
// acknowledged, the batch message straddling the two and the messages of the later chunks are
// handed back; every event ends up stored once, none is dead-lettered, none counted as ingested
// twice.
func TestTransientFailureAfterAnEarlierWriteChunk(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		commitThen bool
	}{{"outage after first chunk", false}, {"commit then failure", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bd := setup(t)
			agent, nc := bd.enroll(t)
			ctx := testCtx(t)
			all := []string{bd.publishSingle(t, agent)}
			_, ids, payloads := batchOf(t, agent, 5)
			if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
				t.Fatal(err)
			}
			all = append(all, ids...)
			all = append(all, bd.publishSingle(t, agent), bd.publishSingle(t, agent))
			ing, reg := bd.ingester(t, "hub", Config{Store: insertFailsOnce(bd, 2, tc.commitThen), Batch: 20, WriteBatch: 3,
				IsTransient: isBusy})
			bd.waitDrained(t, int64(len(all)))
			bd.requireStoredOnce(t, ing, agent, all)
			got := metric(t, reg, "godwit_ingest_events_ingested_total")
			switch {
			case got > float64(len(all)):
				t.Errorf("events_ingested_total = %v for %d events: counted twice", got, len(all))
			case !tc.commitThen && got != float64(len(all)):
				t.Errorf("events_ingested_total = %v, want %d", got, len(all))
			}
		})
	}
}

// A batch message some of whose events the agent's quota refused is cut into write chunks, and a
// later chunk fails transiently: the redelivery (not charged again) stores the rest and keeps
// the refused events out of the store, each dead-lettered once.
func TestQuotaRefusedEventsOfAChunkedBatchOnRedelivery(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	agent, nc := bd.enroll(t)
	ctx := testCtx(t)
	_, ids, payloads := batchOf(t, agent, 5)
	if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
		t.Fatal(err)
	}
	ing, reg := bd.ingester(t, "hub", Config{Store: insertFailsOnce(bd, 2, false), Batch: 20, WriteBatch: 2,
		Quota: Quota{EventsPerSecond: 0.001, EventBurst: 3}, IsTransient: isBusy})
	waitFor(t, 20*time.Second, func() error {
		p, ap := bd.consumerLag(t)
		if p != 0 || ap != 0 || metric(t, reg, "godwit_ingest_redeliveries_total") < 1 {
			return fmt.Errorf("%d pending, %d ack pending, %v redeliveries", p, ap, metric(t, reg, "godwit_ingest_redeliveries_total"))
		}
		return nil
	})
	dls, err := ing.DeadLetters(ctx, 0, 10)
	if err != nil || len(dls) != 2 {
		t.Fatalf("dead letters %+v (%v), want the fourth and fifth events once each", dls, err)
	}
	for n, dl := range dls {
		if dl.Reason != ReasonQuota || dl.BatchIndex != n+4 {
			t.Errorf("dead letter %d: %+v, want index %d for its quota", n, dl, n+4)
		}
	}
	got := storedIDs(t, bd, agent)
	for n, id := range ids {
		want := 1
		if n >= 3 {
			want = 0
		}
		if got[id] != want {
			t.Errorf("event %d stored %d times, want %d", n+1, got[id], want)
		}
	}
}

// An event the store refuses (not transiently) in a later write chunk of a batch message: the
// other events of the message, before and after it, are stored once; the message is handed back
// until its delivery limit, then the event is dead-lettered and the message acknowledged.
func TestRefusedEventInALaterWriteChunk(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	agent, nc := bd.enroll(t)
	ctx := testCtx(t)
	_, ids, payloads := batchOf(t, agent, 5)
	bad := ids[3]
	var mu sync.Mutex
	var sizes []int
	picky := &wrapStore{Store: bd.store}
	picky.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		mu.Lock()
		sizes = append(sizes, len(events))
		mu.Unlock()
		for _, e := range events {
			if e.ID == bad {
				return 0, fmt.Errorf("insert events: %w", errRefused)
			}
		}
		return bd.store.InsertEvents(ctx, events, states)
	}
	if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
		t.Fatal(err)
	}
	const maxDeliver = 2
	ing, reg := bd.ingester(t, "hub", Config{Store: picky, Batch: 20, WriteBatch: 2, MaxDeliver: maxDeliver,
		IsTransient: func(error) bool { return false }})
	dls := bd.waitDeadLetters(t, ing, 1)
	bd.waitDrained(t, 4)
	if dl := dls[0]; dl.Reason != ReasonMaxDeliveries || dl.BatchIndex != 4 || dl.BatchCount != 5 || dl.Deliveries != maxDeliver {
		t.Errorf("dead letter %+v; want the fourth event of five, after %d deliveries", dl, maxDeliver)
	}
	got := storedIDs(t, bd, agent)
	for n, id := range ids {
		want := 1
		if id == bad {
			want = 0
		}
		if got[id] != want {
			t.Errorf("event %d stored %d times, want %d", n+1, got[id], want)
		}
	}
	if v := metric(t, reg, "godwit_ingest_events_ingested_total"); v != 4 {
		t.Errorf("events_ingested_total = %v, want 4", v)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, n := range sizes {
		if n > 2 {
			t.Errorf("a transaction of %d events, over the write batch of 2 (all: %v)", n, sizes)
		}
	}
}
