package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// batchOf returns n fresh events of the agent, their ids and encodings.
func batchOf(t *testing.T, agent string, n int) ([]wire.Event, []string, [][]byte) {
	t.Helper()
	var evs []wire.Event
	var ids []string
	var payloads [][]byte
	for range n {
		ev := agentEvent(agent, wire.EventExecutionSucceeded, time.Now(), "m1")
		evs, ids, payloads = append(evs, ev), append(ids, ev.ID), append(payloads, marshalEvent(t, ev))
	}
	return evs, ids, payloads
}

// insertFailsOnce is the bundle's store whose call-th InsertEvents fails with errBusy (after
// committing, when commitFirst: as a crash after COMMIT looks); the others go through.
func insertFailsOnce(bd *bundle, call int64, commitFirst bool) *wrapStore {
	var calls atomic.Int64
	flaky := &wrapStore{Store: bd.store}
	flaky.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		if calls.Add(1) != call {
			return bd.store.InsertEvents(ctx, events, states)
		}
		if commitFirst {
			if _, err := bd.store.InsertEvents(ctx, events, states); err != nil {
				return 0, err
			}
		}
		return 0, errBusy
	}
	return flaky
}

// isBusy is the IsTransient of a store that fails with errBusy.
func isBusy(err error) bool { return errors.Is(err, errBusy) }

// requireStoredOnce fails t unless each of ids is stored exactly once and nothing was
// dead-lettered.
func (bd *bundle) requireStoredOnce(t *testing.T, ing *Ingester, agent string, ids []string) {
	t.Helper()
	got := storedIDs(t, bd, agent)
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("event %s stored %d times, want once", id, got[id])
		}
	}
	if dls, err := ing.DeadLetters(testCtx(t), 0, 10); err != nil || len(dls) != 0 {
		t.Errorf("%d dead letters (%v), want none: %+v", len(dls), err, dls)
	}
}

func storedIDs(t *testing.T, bd *bundle, agent string) map[string]int {
	t.Helper()
	page, _, err := bd.store.QueryEvents(testCtx(t), store.EventQuery{AgentID: agent, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range page {
		out[e.ID]++
	}
	return out
}

// A batch message whose events straddle the ingest's transactions, with the store failing after
// the first transaction committed (or committing and then reporting a failure, as a crash after
// COMMIT looks): the redelivery stores the rest, every event once, and nothing is dead-lettered.
func TestBatchPartlyCommittedIsCompletedOnRedelivery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		commitThen bool // the failing call commits before it fails
	}{{"outage after first chunk", false}, {"commit then failure", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bd := setup(t)
			agent, nc := bd.enroll(t)
			ing, _ := bd.ingester(t, "hub", Config{Store: insertFailsOnce(bd, 2, tc.commitThen), Batch: 2, IsTransient: isBusy})
			ctx := testCtx(t)
			_, ids, payloads := batchOf(t, agent, 5)
			if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
				t.Fatal(err)
			}
			bd.waitDrained(t, 5)
			bd.requireStoredOnce(t, ing, agent, ids)
		})
	}
}

// An ingest stopped while the events of a batch message are half written (its budget runs out
// during the second transaction) hands the message back; a new ingest stores the rest, every
// event once, and dead-letters nothing.
func TestBatchHandedBackByAStoppingIngestIsCompleted(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	agent, nc := bd.enroll(t)
	var calls atomic.Int64
	entered := make(chan struct{})
	stuck := &wrapStore{Store: bd.store}
	stuck.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		if calls.Add(1) == 2 {
			close(entered)
			<-ctx.Done()
			return 0, ctx.Err()
		}
		return bd.store.InsertEvents(ctx, events, states)
	}
	cfg := fast(Config{Store: stuck, Batch: 2, JS: bd.connect(t, "first")})
	cfg.Registry = nil
	cfg.Logger = bd.logs.logger().With("ingester", "first")
	first := New(cfg)
	if err := first.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	_, ids, payloads := batchOf(t, agent, 5)
	if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the second transaction did not start")
	}
	sctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_ = first.Stop(sctx) // runs out of budget: the batch is handed back
	cancel()
	if n := bd.count(t); n != 2 {
		t.Fatalf("%d events stored by the stopped ingest, want the first transaction's 2", n)
	}
	ing, _ := bd.ingester(t, "second", Config{Batch: 2})
	bd.waitDrained(t, 5)
	bd.requireStoredOnce(t, ing, agent, ids)
}

// An event refused for the agent's quota is dead-lettered, not stored: when its batch message is
// handed back for another event's sake (a transient store failure), the redelivery, which is not
// charged again, must not store it after all, or it is both stored and in the dead letters.
func TestQuotaRefusedEventOfABatchStaysUnstoredOnRedelivery(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	agent, nc := bd.enroll(t)
	ing, reg := bd.ingester(t, "hub", Config{Store: insertFailsOnce(bd, 1, false), Quota: Quota{EventsPerSecond: 0.001, EventBurst: 2},
		IsTransient: isBusy})
	ctx := testCtx(t)
	_, ids, payloads := batchOf(t, agent, 3)
	if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() error {
		p, ap := bd.consumerLag(t)
		if p != 0 || ap != 0 || metric(t, reg, "godwit_ingest_redeliveries_total") < 1 {
			return fmt.Errorf("%d pending, %d ack pending", p, ap)
		}
		return nil
	})
	dls, err := ing.DeadLetters(ctx, 0, 10)
	if err != nil || len(dls) != 1 || dls[0].Reason != ReasonQuota || dls[0].BatchIndex != 3 {
		t.Fatalf("dead letters %+v (%v), want the third event, for its quota", dls, err)
	}
	got := storedIDs(t, bd, agent)
	if got[ids[0]] != 1 || got[ids[1]] != 1 {
		t.Errorf("stored %v; want the first two events once", got)
	}
	if got[ids[2]] != 0 {
		t.Errorf("event %s is dead-lettered for its quota and stored as well (%d stored)", ids[2], len(got))
	}
}

// Events of another agent inside a batch are dead-lettered one by one, whatever field forges the
// identity; the agent's own are stored.
func TestSpoofingInsideABatch(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing, _ := bd.ingester(t, "hub", Config{})
	ctx := testCtx(t)
	agent, nc := bd.enroll(t)
	other, _ := bd.enroll(t)
	own := agentEvent(agent, wire.EventExecutionSucceeded, time.Now(), "m1")
	forgedSource := agentEvent(other, wire.EventExecutionSucceeded, time.Now(), "m1")
	forgedData := agentEvent(agent, wire.EventExecutionSucceeded, time.Now(), "m1")
	forgedData.Data.AgentID = other
	hubOnly := agentEvent(agent, wire.EventExecutionSucceeded, time.Now(), "m1")
	for typ := range wire.KnownEventTypes {
		if !wire.AgentEventTypes[typ] {
			hubOnly.Type = typ
			break
		}
	}
	hubSource := agentEvent(agent, wire.EventExecutionSucceeded, time.Now(), "m1")
	hubSource.Source = wire.HubSource("h1")
	evs := []wire.Event{own, forgedSource, forgedData, hubOnly, hubSource}
	var ids []string
	var payloads [][]byte
	for _, ev := range evs {
		ids, payloads = append(ids, ev.ID), append(payloads, marshalEvent(t, ev))
	}
	if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
		t.Fatal(err)
	}
	// The agent cannot put a batch on another agent's subject at all.
	m := nats.NewMsg(wire.EventSubject(other))
	m.Header.Set(wire.HeaderEvents, "1")
	m.Data = payloads[0]
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if resp, err := nc.RequestMsgWithContext(rctx, m); err == nil && bytes.Contains(resp.Data, []byte(`"seq"`)) {
		t.Errorf("agent %s published a batch on %s's subject: %s", agent, other, resp.Data)
	}
	var dls []wire.DeadLetter
	waitFor(t, 10*time.Second, func() error {
		var err error
		if dls, err = ing.DeadLetters(ctx, 0, 10); err != nil || len(dls) != 4 {
			return fmt.Errorf("%d dead letters (%v), want 4", len(dls), err)
		}
		return nil
	})
	bd.waitDrained(t, 1)
	for n, dl := range dls {
		if dl.BatchIndex != n+2 || dl.BatchCount != 5 || dl.Payload != string(payloads[n+1]) {
			t.Errorf("dead letter %d: index %d of %d, %s; want index %d of 5", n, dl.BatchIndex, dl.BatchCount, dl.Error, n+2)
		}
	}
	if got := storedIDs(t, bd, agent); len(got) != 1 || got[own.ID] != 1 {
		t.Errorf("stored %v, want only %s", got, own.ID)
	}
	if got := storedIDs(t, bd, other); len(got) != 0 {
		t.Errorf("stored under the other agent: %v", got)
	}
}

// An event id twice in one batch, and the same event in two batches (different message ids):
// each event stored once, every message acknowledged, nothing dead-lettered.
func TestDuplicateEventsAcrossAndWithinBatches(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing, _ := bd.ingester(t, "hub", Config{})
	ctx := testCtx(t)
	agent, nc := bd.enroll(t)
	_, ids, payloads := batchOf(t, agent, 3)
	if _, _, err := bus.PublishEvents(ctx, nc, agent, append(ids[:2:2], ids[0]), append(payloads[:2:2], payloads[0])); err != nil {
		t.Fatal(err)
	}
	if _, _, err := bus.PublishEvents(ctx, nc, agent, ids[1:], payloads[1:]); err != nil {
		t.Fatal(err)
	}
	bd.waitDrained(t, 3)
	bd.requireStoredOnce(t, ing, agent, ids)
}

// Count headers and bodies that do not agree are refused whole with an error naming the header;
// empty lines and lines over the event limit are dead-lettered on their own; a CRLF line end is
// refused as the element's own error, not taken silently.
func TestMalformedBatchesThroughTheIngest(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing, _ := bd.ingester(t, "hub", Config{})
	ctx := testCtx(t)
	agent, nc := bd.enroll(t)
	_, _, p := batchOf(t, agent, 8)
	join := func(parts ...[]byte) [][]byte { return parts }
	whole := []struct {
		count string
		body  [][]byte
		want  string
	}{
		{"0", join(p[0]), `is "0"`},
		{"-1", join(p[0]), `is "-1"`},
		{"+2", join(p[0], p[1]), `is "+2"`},
		{"99999999999999999999", join(p[0]), `is "99999999999999999999"`},
		{"1", join(p[0], p[1]), "says 1 events, the body has 2 lines"},
		{"2", join(p[0], p[1], []byte{}), "says 2 events, the body has 3 lines"}, // trailing newline
	}
	for _, w := range whole {
		publishBatch(t, nc, agent, w.count, w.body)
	}
	// Element-wise: an empty line, and a line over MaxEventBytes.
	big := append(bytes.Repeat([]byte(" "), wire.MaxEventBytes), p[3]...)
	publishBatch(t, nc, agent, "3", join(p[2], []byte{}, big))
	// CRLF line ends: the element keeps its "\r", which is JSON white space after the event.
	crlf := [][]byte{append(append([]byte{}, p[4]...), '\r'), p[5]}
	publishBatch(t, nc, agent, "2", crlf)
	want := len(whole) + 2
	var dls []wire.DeadLetter
	waitFor(t, 10*time.Second, func() error {
		var err error
		if dls, err = ing.DeadLetters(ctx, 0, 100); err != nil || len(dls) != want {
			return fmt.Errorf("%d dead letters (%v), want %d", len(dls), err, want)
		}
		return nil
	})
	bd.waitDrained(t, 3)
	for n, w := range whole {
		if dls[n].BatchIndex != 0 || dls[n].Reason != ReasonInvalid || !strings.Contains(dls[n].Error, w.want) {
			t.Errorf("count %q: dead letter %+v, want the whole batch refused naming %q", w.count, dls[n], w.want)
		}
	}
	if dl := dls[len(whole)]; dl.BatchIndex != 2 || dl.Reason != ReasonDecode {
		t.Errorf("empty line: %+v", dl)
	}
	if dl := dls[len(whole)+1]; dl.BatchIndex != 3 || dl.Reason != ReasonTooLarge {
		t.Errorf("line over the event limit: %+v", dl)
	}
}

// A batch refused whole (its count lies) keeps its headers in the dead letter; a replay sends it
// as it was, and it is refused again with the same clear error, its events not stored piecemeal.
func TestWholeBatchDeadLetterReplayedIsRefusedAgain(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing, _ := bd.ingester(t, "hub", Config{})
	ctx := testCtx(t)
	agent, nc := bd.enroll(t)
	_, _, p := batchOf(t, agent, 2)
	publishBatch(t, nc, agent, "3", p)
	var dls []wire.DeadLetter
	waitFor(t, 10*time.Second, func() error {
		var err error
		if dls, err = ing.DeadLetters(ctx, 0, 10); err != nil || len(dls) != 1 {
			return fmt.Errorf("%d dead letters (%v), want 1", len(dls), err)
		}
		return nil
	})
	if err := ing.Replay(ctx, dls[0].Seq); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	waitFor(t, 10*time.Second, func() error {
		var err error
		if dls, err = ing.DeadLetters(ctx, 0, 10); err != nil || len(dls) != 1 || dls[0].Seq == 1 {
			return fmt.Errorf("%d dead letters (%v), want the replay's", len(dls), err)
		}
		return nil
	})
	bd.waitDrained(t, 0)
	if dl := dls[0]; dl.BatchIndex != 0 || !strings.Contains(dl.Error, "says 3 events, the body has 2 lines") ||
		dl.Headers[wire.HeaderEvents][0] != "3" {
		t.Errorf("dead letter after replay: %+v", dl)
	}
}

// One small message of 64 empty lines is 64 dead letters, none of them charged to the agent's
// quota (only events that validate are). This records what a batch costs the dead-letter stream
// against what it costs the agent to send.
func TestBatchOfEmptyLinesDeadLettersEachLine(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing, _ := bd.ingester(t, "hub", Config{Quota: Quota{EventsPerSecond: 0.001, EventBurst: 1}})
	ctx := testCtx(t)
	agent, nc := bd.enroll(t)
	lines := make([][]byte, wire.MaxBatchEvents)
	publishBatch(t, nc, agent, fmt.Sprint(wire.MaxBatchEvents), lines)
	// One dead letter per line (the consumer's lag may read zero before the message is
	// delivered, so the count itself is what is waited for).
	dls := bd.waitDeadLetters(t, ing, wire.MaxBatchEvents)
	st, err := bd.js.Stream(ctx, wire.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a %d-byte batch of %d empty lines: %d dead letters, %d bytes in the dead-letter stream",
		wire.MaxBatchEvents-1, wire.MaxBatchEvents, len(dls), info.State.Bytes)
}
