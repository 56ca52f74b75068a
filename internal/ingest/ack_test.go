package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Acknowledgements run behind the worker (the acker), so that the next batch is written while
// the server confirms the last one's. However far behind they run, no delivery is acknowledged
// before its transaction committed: with a backlog in the stream (full batches, one fetched
// ahead) and the database going down mid-batch, every event the consumer counts as
// acknowledged is in the store, and every committed one is acknowledged by the time Stop
// returns.
func TestAcknowledgedEventsAreStored(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	const batch, total, commits = 25, 400, 4

	var (
		mu        sync.Mutex
		committed = map[string]bool{}
		calls     int
		early     []string // acknowledged deliveries not (yet) committed, seen from inside the store
	)
	errDown := errors.New("database went away mid-transaction")
	down := make(chan struct{})
	var once sync.Once
	flaky := &wrapStore{Store: bd.store}
	flaky.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		// Batches are read in stream order, so what committed is a prefix of the stream: the ack
		// floor ends exactly there. Before each transaction, what the server counts as acknowledged must already be stored.
		if bad := bd.ackedNotIn(t, ctx, &mu, committed); len(bad) > 0 {
			mu.Lock()
			early = append(early, bad...)
			mu.Unlock()
		}
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n > commits {
			once.Do(func() { close(down) })
			return 0, errDown // rolled back: nothing of this batch is stored
		}
		inserted, err := bd.store.InsertEvents(ctx, events, states)
		if err == nil {
			mu.Lock()
			for _, e := range events {
				committed[e.ID] = true
			}
			mu.Unlock()
		}
		return inserted, err
	}

	a := newAgentID(t)
	base := time.Now()
	for k := range total {
		bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventExecutionSucceeded, base.Add(time.Duration(k)*time.Millisecond), "m1"))
	}
	ing, _ := bd.ingester(t, "hub", Config{Store: flaky, Batch: batch, IsTransient: func(err error) bool { return errors.Is(err, errDown) }})
	<-down
	if err := ing.Stop(testCtx(t)); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(early) > 0 {
		t.Errorf("acknowledged before their transaction committed: %v", early)
	}
	if bad := bd.ackedNotIn(t, testCtx(t), nil, committed); len(bad) > 0 {
		t.Errorf("acknowledged but not stored: %v", bad)
	}
	if len(committed) == 0 {
		t.Fatal("nothing committed before the database went down")
	}
	if n := bd.count(t); n != int64(len(committed)) {
		t.Errorf("store holds %d events, want the %d committed", n, len(committed))
	}
	floor := bd.ackFloor(t, testCtx(t))
	if floor != uint64(len(committed)) {
		t.Errorf("ack floor after Stop = %d, want every committed event (%d) acknowledged and no other", floor, len(committed))
	}
}

// ackFloor is the consumer's ack floor: every stream sequence up to it is acknowledged.
func (bd *bundle) ackFloor(t *testing.T, ctx context.Context) uint64 {
	c, err := bd.js.Consumer(ctx, wire.StreamEvents, DefaultConsumer)
	if err != nil {
		t.Error(err)
		return 0
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Error(err)
		return 0
	}
	return info.AckFloor.Stream
}

// ackedNotIn returns the events up to the consumer's ack floor that are not in stored (read
// under mu when mu is not nil).
func (bd *bundle) ackedNotIn(t *testing.T, ctx context.Context, mu *sync.Mutex, stored map[string]bool) []string {
	floor := bd.ackFloor(t, ctx)
	s, err := bd.js.Stream(ctx, wire.StreamEvents)
	if err != nil {
		t.Error(err)
		return nil
	}
	var bad []string
	for seq := uint64(1); seq <= floor; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Error(err)
			return nil
		}
		ev, err := wire.DecodeEvent(m.Data)
		if err != nil {
			t.Error(err)
			return nil
		}
		if mu != nil {
			mu.Lock()
		}
		ok := stored[ev.ID]
		if mu != nil {
			mu.Unlock()
		}
		if !ok {
			bad = append(bad, fmt.Sprintf("seq %d (%s)", seq, ev.ID))
		}
	}
	return bad
}
