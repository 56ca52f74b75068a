package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// recorder remembers the state rows of every InsertEvents call, by event id.
type recorder struct {
	mu     sync.Mutex
	states map[string][]store.EventState
}

func (r *recorder) wrap(s store.Store) *wrapStore {
	w := &wrapStore{Store: s}
	w.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		n, err := s.InsertEvents(ctx, events, states)
		if err == nil {
			r.mu.Lock()
			for _, e := range events {
				r.states[e.ID] = states
			}
			r.mu.Unlock()
		}
		return n, err
	}
	return w
}

func (r *recorder) rowsWith(id string) []store.EventState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.states[id]
}

// A fresh ingester on an existing database loads an agent's derived state from SQL on its first
// event (once per agent), writes only rows that move it forward, and never moves it backwards.
func TestDerivedStateIsRehydrated(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	a, b := newAgentID(t), newAgentID(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	// What an earlier hub process left in the database.
	prev := agentEvent(a, wire.EventExecutionSucceeded, t0.Add(10*time.Second), "m1")
	prevState := func(mig string) store.EventState {
		return store.EventState{AgentID: a, Migration: mig, LastEventID: prev.ID, LastType: prev.Type,
			LastSeverity: prev.Severity, LastTime: prev.Time}
	}
	if _, err := bd.store.InsertEvents(ctx, []store.StoredEvent{{Event: prev, ReceivedAt: prev.Time}},
		[]store.EventState{prevState(""), prevState("m1")}); err != nil {
		t.Fatal(err)
	}

	rec := &recorder{states: map[string][]store.EventState{}}
	ing, reg := bd.ingester(t, "hub", Config{Store: rec.wrap(bd.store)})
	rehydrations := func() float64 { return metric(t, reg, "godwit_ingest_rehydrations_total") }
	stateOf := func(agent string) map[string]store.EventState {
		rows, err := bd.store.AgentEventStates(ctx, []string{agent})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]store.EventState{}
		for _, r := range rows {
			out[r.Migration] = r
		}
		return out
	}
	stored := int64(1)
	send := func(ev wire.Event) {
		t.Helper()
		bd.publish(t, wire.EventSubject(ev.Source[len("/agents/"):]), ev)
		stored++
		bd.waitDrained(t, stored)
	}

	// An event older than what SQL holds: stored, but it moves nothing.
	old := agentEvent(a, wire.EventDetectionSucceeded, t0, "m1")
	send(old)
	if rows := rec.rowsWith(old.ID); len(rows) != 0 {
		t.Errorf("an older event wrote state rows %+v", rows)
	}
	if st := stateOf(a); st[""].LastEventID != prev.ID || st["m1"].LastEventID != prev.ID {
		t.Errorf("state moved backwards: %+v", st)
	}
	if got := rehydrations(); got != 1 {
		t.Errorf("rehydrations_total = %v after the first event of one agent, want 1", got)
	}

	// Older overall but the first of migration m2: only the m2 row.
	m2 := agentEvent(a, wire.EventDetectionNotNeeded, t0.Add(5*time.Second), "m2")
	send(m2)
	if rows := rec.rowsWith(m2.ID); len(rows) != 1 || rows[0].Migration != "m2" {
		t.Errorf("state rows for a first m2 event: %+v", rows)
	}

	// Newer: both rows move, from the cache, without another load.
	newer := agentEvent(a, wire.EventExecutionFailed, t0.Add(20*time.Second), "m1")
	send(newer)
	if rows := rec.rowsWith(newer.ID); len(rows) != 2 {
		t.Errorf("state rows for a newer event: %+v", rows)
	}
	if st := stateOf(a); st[""].LastEventID != newer.ID || st["m1"].LastEventID != newer.ID || st["m2"].LastEventID != m2.ID {
		t.Errorf("state after a newer event: %+v", st)
	}
	if got := rehydrations(); got != 1 {
		t.Errorf("rehydrations_total = %v, want still 1", got)
	}

	// Another agent: one more load.
	send(agentEvent(b, wire.EventAgentStarted, t0, ""))
	if got := rehydrations(); got != 2 {
		t.Errorf("rehydrations_total = %v after a second agent, want 2", got)
	}

	// Another replica moved agent a further meanwhile: this ingester's cache is behind, the row
	// it sends is refused by the store's condition, and SQL keeps the newest.
	far := agentEvent(a, wire.EventRollbackSucceeded, t0.Add(time.Hour), "m1")
	if _, err := bd.store.InsertEvents(ctx, []store.StoredEvent{{Event: far, ReceivedAt: far.Time}},
		[]store.EventState{{AgentID: a, LastEventID: far.ID, LastType: far.Type, LastSeverity: far.Severity, LastTime: far.Time}}); err != nil {
		t.Fatal(err)
	}
	stored++
	mid := agentEvent(a, wire.EventExecutionSucceeded, t0.Add(30*time.Second), "m1")
	send(mid)
	if st := stateOf(a); st[""].LastEventID != far.ID || st["m1"].LastEventID != mid.ID {
		t.Errorf("state after a stale cache: %+v", st)
	}

	// Rehydrate drops the cache: the next event loads again.
	ing.Rehydrate(a)
	send(agentEvent(a, wire.EventAgentStarted, t0.Add(2*time.Hour), ""))
	if got := rehydrations(); got != 3 {
		t.Errorf("rehydrations_total = %v after Rehydrate, want 3", got)
	}
}

// After a start, the first batch names many agents the ingester does not know yet: their state is
// loaded with one store call for the batch, not one per agent, and what SQL held still decides
// which rows move.
func TestStatesOfABatchAreLoadedAtOnce(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const agents = 30
	ids := make([]string, agents)
	var known []store.EventState // what an earlier hub process left: every third agent, at t0+1h
	for n := range ids {
		ids[n] = newAgentID(t)
		if n%3 == 0 {
			prev := agentEvent(ids[n], wire.EventExecutionSucceeded, t0.Add(time.Hour), "")
			known = append(known, store.EventState{AgentID: ids[n], LastEventID: prev.ID, LastType: prev.Type,
				LastSeverity: prev.Severity, LastTime: prev.Time})
		}
	}
	if _, err := bd.store.InsertEvents(ctx, nil, known); err != nil {
		t.Fatal(err)
	}
	for n, a := range ids {
		bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, t0.Add(time.Duration(n)*time.Second), ""))
	}

	var mu sync.Mutex
	var calls [][]string
	counting := &wrapStore{Store: bd.store}
	counting.AgentEventStatesFunc = func(ctx context.Context, agentIDs []string) ([]store.EventState, error) {
		mu.Lock()
		calls = append(calls, slices.Clone(agentIDs))
		mu.Unlock()
		return bd.store.AgentEventStates(ctx, agentIDs)
	}
	_, reg := bd.ingester(t, "hub", Config{Store: counting, Batch: 2 * agents})
	bd.waitDrained(t, agents)

	mu.Lock()
	defer mu.Unlock()
	var loaded []string
	for _, c := range calls {
		loaded = append(loaded, c...)
	}
	slices.Sort(loaded)
	want := slices.Sorted(slices.Values(ids))
	if !slices.Equal(loaded, want) {
		t.Errorf("loaded %v, want every agent once: %v", loaded, want)
	}
	// The whole backlog fits one batch; a read may still end early on a pause, so allow a second.
	if len(calls) > 2 {
		t.Errorf("%d store calls to load the state of %d agents, want one per batch", len(calls), agents)
	}
	if got := metric(t, reg, "godwit_ingest_rehydrations_total"); got != agents {
		t.Errorf("rehydrations_total = %v, want %d", got, agents)
	}
	rows, err := bd.store.AgentEventStates(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		n := slices.Index(ids, r.AgentID)
		want := t0.Add(time.Duration(n) * time.Second)
		if n%3 == 0 {
			want = t0.Add(time.Hour) // SQL's row was newer than the event
		}
		if !r.LastTime.Equal(want) {
			t.Errorf("agent %d: state at %s, want %s", n, r.LastTime, want)
		}
	}
	if len(rows) != agents {
		t.Errorf("%d state rows, want one per agent (%d)", len(rows), agents)
	}
}

// Loading the state of a batch's new agents is part of its store call: when it fails, nothing of
// the batch is stored or acknowledged, the batch is handed back, and it is stored once the load
// works again.
func TestFailedStateLoadHandsTheBatchBack(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	var failures atomic.Int64
	failures.Store(2)
	flaky := &wrapStore{Store: bd.store}
	flaky.AgentEventStatesFunc = func(ctx context.Context, agentIDs []string) ([]store.EventState, error) {
		if failures.Add(-1) >= 0 {
			if floor := bd.ackFloor(t, ctx); floor != 0 {
				t.Errorf("ack floor %d before anything was stored", floor)
			}
			return nil, fmt.Errorf("agent event state: %w", errBusy)
		}
		return bd.store.AgentEventStates(ctx, agentIDs)
	}
	_, reg := bd.ingester(t, "hub", Config{Store: flaky, IsTransient: func(err error) bool { return errors.Is(err, errBusy) }})
	const events = 10
	for k := range events {
		a := newAgentID(t)
		bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, time.Now().Add(time.Duration(k)), ""))
	}
	bd.waitDrained(t, events)
	if calls := 2 - failures.Load(); calls < 3 {
		t.Fatalf("the state was loaded %d times, want two failures and a success", calls)
	}
	if got := metric(t, reg, "godwit_ingest_redeliveries_total"); got < 1 {
		t.Errorf("redeliveries_total = %v, want the batch handed back", got)
	}
	waitFor(t, 10*time.Second, func() error {
		if floor := bd.ackFloor(t, testCtx(t)); floor != events {
			return fmt.Errorf("ack floor %d, want %d", floor, events)
		}
		return nil
	})
}
