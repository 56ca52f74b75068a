package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/store/sqlstore"
	"godwit.dev/godwit/internal/wire"
)

func openSQLite(t *testing.T) *sqlstore.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// waitFor polls cond until it holds (a goroutine has reached a wait the test cannot observe
// otherwise), failing the test after a generous bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// On SQLite, writers wait for their turn in the order they came: none overtakes one that waits
// longer.
func TestWritersTakeTurnsInOrder(t *testing.T) {
	s := openSQLite(t)
	hold, err := s.Turn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			done, err := s.Turn(t.Context())
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			done()
		})
		waitFor(t, fmt.Sprintf("writer %d to wait", i), func() bool { return s.WaitingWriters() == i+1 })
	}
	hold()
	wg.Wait()
	for i, got := range order {
		if got != i {
			t.Fatalf("writers took their turns in the order %v, want 0..%d", order, n-1)
		}
	}
}

// A write waits while another holds the turn, and is stored once it is given up; a write whose
// context ends while it waits fails with that and stores nothing.
func TestWriteWaitsForItsTurn(t *testing.T) {
	s := openSQLite(t)
	ctx := t.Context()
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	hold, err := s.Turn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		_, err := s.AcquireEpoch(cctx, "cancelled", "h1", at)
		gaveUp <- err
	}()
	waitFor(t, "the first write to wait", func() bool { return s.WaitingWriters() == 1 })
	stored := make(chan error, 1)
	go func() {
		_, err := s.AcquireEpoch(ctx, "controller", "h1", at)
		stored <- err
	}()
	waitFor(t, "the second write to wait", func() bool { return s.WaitingWriters() == 2 })
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("a write cancelled while waiting returned %v, want context.Canceled", err)
	}
	select {
	case err := <-stored:
		t.Fatalf("a write went through while another held the turn (err %v)", err)
	default:
	}
	hold()
	if err := <-stored; err != nil {
		t.Fatal(err)
	}
	if _, epoch, _, err := s.Leader(ctx, "controller"); err != nil || epoch != 1 {
		t.Fatalf("after its turn: epoch %d, err %v; want 1", epoch, err)
	}
	if _, _, _, err := s.Leader(ctx, "cancelled"); err == nil {
		t.Fatal("the cancelled write was stored")
	}
}

// A writer that commits and begins again at once (the ingest working off a backlog) does not
// keep the others out: each of another writer's writes waits for the batch being written when it
// came, and counting may catch one or two more committed before the count is read; without the
// queue a write waited for about a hundred, or failed with SQLITE_BUSY after the busy timeout.
func TestBacklogDoesNotStarveOtherWriters(t *testing.T) {
	s := openSQLite(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var batches atomic.Int64
	ingest := make(chan error, 1)
	// As the ingest does, the next batch is ready when one is committed: the writer begins again
	// at once.
	ready := make(chan []store.StoredEvent, 4)
	go func() {
		defer close(ready)
		at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		for n := 0; ; n++ {
			events := make([]store.StoredEvent, 2000)
			for i := range events {
				e := wire.NewEvent(wire.HubSource("h"), wire.EventOperatorAction, wire.SeverityInfo, wire.EventData{})
				e.Time = at.Add(time.Duration(n*len(events)+i) * time.Millisecond)
				events[i] = store.StoredEvent{Event: e, ReceivedAt: e.Time}
			}
			select {
			case ready <- events:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		defer close(ingest)
		for events := range ready {
			if _, err := s.InsertEvents(ctx, events, nil); err != nil {
				if ctx.Err() == nil {
					ingest <- err
				}
				return
			}
			batches.Add(1)
		}
	}()
	waitFor(t, "the backlog to be written", func() bool { return batches.Load() >= 2 })
	for i := range 10 {
		before := batches.Load()
		if _, err := s.AcquireEpoch(ctx, "controller", "h1", time.Now()); err != nil {
			t.Fatal(err)
		}
		if waited := batches.Load() - before; waited > 4 {
			t.Fatalf("write %d waited for %d batches of the backlog, want at most 4", i, waited)
		}
	}
	cancel()
	if err := <-ingest; err != nil {
		t.Fatal(err)
	}
}
