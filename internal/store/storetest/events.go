package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// event builds a stored event of agent at base+offset.
func event(agent, migration, typ, severity string, offset time.Duration) store.StoredEvent {
	e := wire.NewEvent(wire.AgentSource(agent), typ, severity, wire.EventData{AgentID: agent, Migration: migration, Message: typ})
	e.Time = base.Add(offset).UTC()
	raw, _ := json.Marshal(e)
	return store.StoredEvent{Event: e, Raw: raw, ReceivedAt: base.Add(offset + time.Second)}
}

func runEvents(t *testing.T, setup func(t *testing.T) store.Store) {
	t.Run("Events", func(t *testing.T) {
		t.Run("InsertIsIdempotent", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			batch := []store.StoredEvent{
				event("a1", "m1", wire.EventExecutionFailed, wire.SeverityError, 0),
				event("a1", "m1", wire.EventRollbackSucceeded, wire.SeverityInfo, time.Second),
			}
			n, err := s.InsertEvents(ctx, batch, nil)
			if err != nil || n != 2 {
				t.Fatalf("first insert = %d, %v; want 2", n, err)
			}
			// The same ids again, mixed with one new: only the new one counts.
			again := append(batch, event("a2", "", wire.EventAgentStarted, wire.SeverityInfo, 2*time.Second))
			n, err = s.InsertEvents(ctx, again, nil)
			if err != nil || n != 1 {
				t.Fatalf("re-insert = %d, %v; want 1", n, err)
			}
			if c, err := s.CountEvents(ctx); err != nil || c != 3 {
				t.Fatalf("CountEvents = %d, %v; want 3", c, err)
			}
			page, _, err := s.QueryEvents(ctx, store.EventQuery{AgentID: "a1", Limit: 10})
			if err != nil || len(page) != 2 {
				t.Fatalf("query a1 = %d events, %v", len(page), err)
			}
			got := page[1]
			if got.ID != batch[0].ID || !got.Time.Equal(batch[0].Time) || got.Data.Message != wire.EventExecutionFailed ||
				!got.ReceivedAt.Equal(stored(batch[0].ReceivedAt)) || string(got.Raw) != string(batch[0].Raw) {
				t.Fatalf("round trip: got %+v, want %+v", got, batch[0])
			}
		})

		t.Run("ClampedTime", func(t *testing.T) {
			// The ingest replaced an agent's time that was too far ahead with the receipt time:
			// the event is listed and filtered by the receipt time, and read back with both.
			s := setup(t)
			ctx := t.Context()
			early := event("a1", "", wire.EventAgentStarted, wire.SeverityInfo, 0)
			late := event("a1", "", wire.EventAgentStarted, wire.SeverityInfo, time.Minute)
			ahead := event("a1", "", wire.EventExecutionFailed, wire.SeverityError, 1000*time.Hour) // body: the agent's time
			agentTime := ahead.Time
			ahead.Time = base.Add(30 * time.Second).UTC() // the receipt time
			if _, err := s.InsertEvents(ctx, []store.StoredEvent{early, late, ahead}, nil); err != nil {
				t.Fatal(err)
			}
			page, _, err := s.QueryEvents(ctx, store.EventQuery{Limit: 10})
			if err != nil || len(page) != 3 {
				t.Fatalf("QueryEvents = %d events, %v", len(page), err)
			}
			if page[0].ID != late.ID || page[1].ID != ahead.ID || page[2].ID != early.ID {
				t.Fatalf("order %s %s %s; want the clamped event between the other two", page[0].ID, page[1].ID, page[2].ID)
			}
			got := page[1]
			if !got.Time.Equal(stored(ahead.Time)) || got.AgentTime == nil || !got.AgentTime.Equal(agentTime) || string(got.Raw) != string(ahead.Raw) {
				t.Fatalf("clamped event: time %v, agent time %v; want %v and %v, body as received", got.Time, got.AgentTime, ahead.Time, agentTime)
			}
			if page[0].AgentTime != nil || page[2].AgentTime != nil {
				t.Fatal("an event not clamped has an agent time")
			}
			rec := got.Record()
			if rec.AgentTime == nil || !rec.Time.Equal(got.Time) {
				t.Fatalf("Record() = %+v", rec)
			}
			// Filters use the listed time, not the agent's.
			page, _, err = s.QueryEvents(ctx, store.EventQuery{Since: base.Add(time.Hour), Limit: 10})
			if err != nil || len(page) != 0 {
				t.Fatalf("events since base+1h = %d, %v; want none", len(page), err)
			}
		})

		t.Run("ConcurrentBatches", func(t *testing.T) {
			// Writers in parallel (hub replicas, or the ingest beside the hub's own events), each
			// batch overlapping the next writer's: every event is stored once, and a writer whose
			// context ends while it waits for another's batch gives up without storing anything.
			s := setup(t)
			ctx := t.Context()
			var all []store.StoredEvent
			for i := range 400 {
				all = append(all, event(fmt.Sprintf("a%d", i%9), "", wire.EventAgentStarted, wire.SeverityInfo, time.Duration(i)*time.Millisecond))
			}
			const writers, per = 4, 100
			errs := make(chan error, writers)
			for w := range writers {
				go func() {
					var err error
					for start := w * per; start < len(all) && err == nil; start += writers * per / 2 {
						_, err = s.InsertEvents(ctx, all[start:min(start+per+per/2, len(all))], nil)
					}
					errs <- err
				}()
			}
			for range writers {
				if err := <-errs; err != nil {
					t.Fatalf("concurrent InsertEvents: %v", err)
				}
			}
			if c, err := s.CountEvents(ctx); err != nil || c != int64(len(all)) {
				t.Fatalf("CountEvents = %d, %v; want %d", c, err, len(all))
			}
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := s.InsertEvents(cctx, []store.StoredEvent{event("late", "", wire.EventAgentStarted, wire.SeverityInfo, time.Hour)}, nil); err == nil {
				t.Fatal("InsertEvents with a cancelled context succeeded")
			}
			if c, _ := s.CountEvents(ctx); c != int64(len(all)) {
				t.Fatalf("count after a cancelled insert = %d, want %d", c, len(all))
			}
		})

		t.Run("LargeBatch", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			var batch []store.StoredEvent
			for i := range 1234 { // several INSERT chunks
				batch = append(batch, event(fmt.Sprintf("a%d", i%7), "", wire.EventAgentStarted, wire.SeverityInfo, time.Duration(i)*time.Millisecond))
			}
			if n, err := s.InsertEvents(ctx, batch, nil); err != nil || n != len(batch) {
				t.Fatalf("insert = %d, %v; want %d", n, err, len(batch))
			}
			if c, _ := s.CountEvents(ctx); c != int64(len(batch)) {
				t.Fatalf("count = %d", c)
			}
		})

		t.Run("FailedBatchStoresNothing", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			good := event("a1", "", wire.EventAgentStarted, wire.SeverityInfo, 0)
			bad := []store.EventState{{AgentID: "a1", Migration: "", LastEventID: good.ID, LastType: good.Type, LastSeverity: "info", LastTime: good.Time}}
			// A failing transaction (here: a cancelled context) must leave neither events nor state.
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := s.InsertEvents(cctx, []store.StoredEvent{good}, bad); err == nil {
				t.Fatal("InsertEvents with a cancelled context succeeded")
			}
			if c, _ := s.CountEvents(ctx); c != 0 {
				t.Fatalf("count after failed insert = %d, want 0", c)
			}
		})

		t.Run("FiltersAndPages", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			var all []store.StoredEvent
			for i := range 50 {
				agent := []string{"a1", "a2"}[i%2]
				typ, sev := wire.EventDetectionSucceeded, wire.SeverityInfo
				if i%5 == 0 {
					typ, sev = wire.EventExecutionFailed, wire.SeverityError
				} else if i%5 == 1 {
					typ, sev = wire.EventRollbackFailed, wire.SeverityWarning
				}
				all = append(all, event(agent, fmt.Sprintf("m%d", i%3), typ, sev, time.Duration(i)*time.Minute))
			}
			// Two events in the same microsecond: the id breaks the tie, so paging never skips one.
			twin := event("a1", "m0", wire.EventAgentStarted, wire.SeverityInfo, 10*time.Minute)
			all = append(all, twin)
			if _, err := s.InsertEvents(ctx, all, nil); err != nil {
				t.Fatal(err)
			}
			count := func(q store.EventQuery) int {
				t.Helper()
				q.Limit = 7
				seen := map[string]bool{}
				var last time.Time
				for {
					page, next, err := s.QueryEvents(ctx, q)
					if err != nil {
						t.Fatalf("query %+v: %v", q, err)
					}
					for _, e := range page {
						if seen[e.ID] {
							t.Fatalf("event %s on two pages", e.ID)
						}
						if !last.IsZero() && e.Time.After(last) {
							t.Fatalf("not newest first: %v after %v", e.Time, last)
						}
						seen[e.ID], last = true, e.Time
					}
					if next == "" {
						return len(seen)
					}
					q.Cursor = next
				}
			}
			cases := []struct {
				q    store.EventQuery
				want int
			}{
				{store.EventQuery{}, 51},
				{store.EventQuery{AgentID: "a1"}, 26},
				{store.EventQuery{Migration: "m0"}, 18},
				{store.EventQuery{Severities: []string{wire.SeverityError}}, 10},
				{store.EventQuery{Severities: []string{wire.SeverityError, wire.SeverityWarning}}, 20},
				{store.EventQuery{Types: []string{"migration.rollback.*"}}, 10},
				{store.EventQuery{Types: []string{wire.EventExecutionFailed, wire.EventRollbackFailed}}, 20},
				{store.EventQuery{Since: base.Add(40 * time.Minute)}, 10},
				{store.EventQuery{Until: base.Add(10 * time.Minute)}, 10},
				{store.EventQuery{AgentID: "a2", Severities: []string{wire.SeverityError}, Since: base.Add(20 * time.Minute)}, 3},
			}
			for _, tc := range cases {
				if got := count(tc.q); got != tc.want {
					t.Errorf("query %+v: %d events, want %d", tc.q, got, tc.want)
				}
			}
			for _, bad := range []store.EventQuery{{Limit: 0}, {Limit: 1001}, {Limit: 5, Cursor: "garbage"}, {Limit: 5, Severities: []string{"fatal"}}} {
				if _, _, err := s.QueryEvents(ctx, bad); !errors.Is(err, fault.ErrInvalid) {
					t.Errorf("query %+v: err = %v, want ErrInvalid", bad, err)
				}
			}
		})

		t.Run("StateMovesForwardOnly", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			st := func(id string, typ string, offset time.Duration) store.EventState {
				return store.EventState{AgentID: "a1", Migration: "m1", LastEventID: id, LastType: typ, LastSeverity: wire.SeverityWarning, LastTime: base.Add(offset)}
			}
			newer := st(uuid.Must(uuid.NewV7()).String(), wire.EventExecutionSucceeded, time.Hour)
			older := st(uuid.Must(uuid.NewV7()).String(), wire.EventExecutionFailed, 0)
			if _, err := s.InsertEvents(ctx, nil, []store.EventState{newer}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.InsertEvents(ctx, nil, []store.EventState{older}); err != nil {
				t.Fatal(err)
			}
			got, err := s.AgentEventStates(ctx, []string{"a1"})
			if err != nil || len(got) != 1 {
				t.Fatalf("states = %+v, %v", got, err)
			}
			if got[0].LastEventID != newer.LastEventID || got[0].LastType != newer.LastType || got[0].LastSeverity != wire.SeverityWarning ||
				!got[0].LastTime.Equal(stored(newer.LastTime)) {
				t.Fatalf("state = %+v, want the newer %+v", got[0], newer)
			}
			if other, _ := s.AgentEventStates(ctx, []string{"a2"}); len(other) != 0 {
				t.Fatalf("a2 has states %+v", other)
			}
		})

		// The ingest loads every agent new to it in a batch with one call.
		t.Run("StatesOfManyAgents", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			var want []store.EventState
			// More agents than one query names, so that the chunks are joined.
			for n := range 1203 {
				agent := fmt.Sprintf("agent-%04d", n)
				if n%3 == 0 {
					continue // no rows: absent from the result
				}
				for _, mig := range []string{"", "m1"} {
					want = append(want, store.EventState{AgentID: agent, Migration: mig, LastEventID: uuid.Must(uuid.NewV7()).String(),
						LastType: wire.EventExecutionSucceeded, LastSeverity: wire.SeverityInfo, LastTime: base.Add(time.Duration(n) * time.Second)})
				}
			}
			if _, err := s.InsertEvents(ctx, nil, want); err != nil {
				t.Fatal(err)
			}
			var ask []string
			for n := 1202; n >= 0; n-- { // out of order, with a repeat and an unknown agent
				ask = append(ask, fmt.Sprintf("agent-%04d", n))
			}
			ask = append(ask, "agent-0001", "nobody")
			got, err := s.AgentEventStates(ctx, ask)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d rows, want %d", len(got), len(want))
			}
			for n := range want {
				w, g := want[n], got[n]
				if g.AgentID != w.AgentID || g.Migration != w.Migration || g.LastEventID != w.LastEventID || !g.LastTime.Equal(stored(w.LastTime)) {
					t.Fatalf("row %d = %+v, want %+v", n, g, w)
				}
			}
			if got, err := s.AgentEventStates(ctx, nil); err != nil || len(got) != 0 {
				t.Fatalf("no agents: %+v, %v", got, err)
			}
		})
	})
}
