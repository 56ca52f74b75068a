package ingest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// publishBatch sends a batch message with the given header value and elements through the
// agent's own connection (its account's import of the events stream), as an agent would.
func publishBatch(t *testing.T, nc *nats.Conn, agent, count string, elements [][]byte) {
	t.Helper()
	m := nats.NewMsg(wire.EventSubject(agent))
	m.Header.Set(wire.HeaderEvents, count)
	m.Header.Set(bus.HeaderMsgID, fmt.Sprintf("test-batch-%d", time.Now().UnixNano()))
	m.Data = bytes.Join(elements, []byte{'\n'})
	resp, err := nc.RequestMsgWithContext(testCtx(t), m)
	if err != nil {
		t.Fatalf("publish batch: %v", err)
	}
	if !bytes.Contains(resp.Data, []byte(`"seq"`)) {
		t.Fatalf("publish batch: %s", resp.Data)
	}
}

// Every event of a batch message is stored and the message acknowledged; a bad event of a batch
// is dead-lettered on its own, with its place in the batch, while the others are stored; a
// message that is not a readable batch is dead-lettered whole. Metrics count events.
func TestBatchMessages(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing, reg := bd.ingester(t, "hub", Config{})
	ctx := testCtx(t)
	agent, nc := bd.enroll(t)
	other := newAgentID(t)
	good := func() wire.Event { return agentEvent(agent, wire.EventExecutionSucceeded, time.Now(), "m1") }

	var want []string
	var ids []string
	var payloads [][]byte
	for range 3 {
		ev := good()
		ids, payloads = append(ids, ev.ID), append(payloads, marshalEvent(t, ev))
	}
	if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
		t.Fatal(err)
	}
	want = append(want, ids...)
	single := good()
	if _, _, err := bus.PublishEvent(ctx, nc, agent, single.ID, marshalEvent(t, single)); err != nil {
		t.Fatal(err)
	}
	want = append(want, single.ID)

	// A batch of five with two bad events: not JSON (2nd), another agent's source (4th).
	g1, g3, g5 := good(), good(), good()
	forged := agentEvent(other, wire.EventExecutionSucceeded, time.Now(), "m1")
	mixed := [][]byte{marshalEvent(t, g1), []byte("PUT /etc/passwd"), marshalEvent(t, g3), marshalEvent(t, forged), marshalEvent(t, g5)}
	publishBatch(t, nc, agent, "5", mixed)
	want = append(want, g1.ID, g3.ID, g5.ID)

	// Not readable as batches: dead-lettered whole, good events and all.
	two := [][]byte{marshalEvent(t, good()), marshalEvent(t, good())}
	publishBatch(t, nc, agent, "3", two)
	publishBatch(t, nc, agent, "two", two)
	long := bytes.Repeat([]byte("x"), wire.MaxBatchBytes+1) // one line, over the size limit
	bd.publishRaw(t, wire.EventSubject(agent), long, nats.Header{wire.HeaderEvents: {"1"}})

	bd.waitDrained(t, int64(len(want)))
	page, _, err := bd.store.QueryEvents(ctx, store.EventQuery{AgentID: agent, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, e := range page {
		stored[e.ID] = true
	}
	for _, id := range want {
		if !stored[id] {
			t.Errorf("event %s not stored", id)
		}
	}
	if len(page) != len(want) {
		t.Errorf("%d events stored, want %d", len(page), len(want))
	}

	var dls []wire.DeadLetter
	waitFor(t, 10*time.Second, func() error {
		if dls, err = ing.DeadLetters(ctx, 0, 100); err != nil || len(dls) != 5 {
			return fmt.Errorf("%d dead letters (%v), want 5", len(dls), err)
		}
		return nil
	})
	for n, w := range []struct {
		reason, errText string
		index, count    int
		payload         []byte
	}{
		{ReasonDecode, "not a JSON event", 2, 5, mixed[1]},
		{ReasonInvalid, "forged source", 4, 5, mixed[3]},
		{ReasonInvalid, "says 3 events, the body has 2 lines", 0, 0, bytes.Join(two, []byte{'\n'})},
		{ReasonInvalid, `header Godwit-Events is "two"`, 0, 0, bytes.Join(two, []byte{'\n'})},
		{ReasonTooLarge, "over the", 0, 0, long},
	} {
		dl := dls[n]
		if dl.Reason != w.reason || !strings.Contains(dl.Error, w.errText) || dl.BatchIndex != w.index || dl.BatchCount != w.count ||
			dl.Payload != string(w.payload) || dl.Subject != wire.EventSubject(agent) || dl.StreamSeq == 0 {
			shown := dl
			shown.Payload = fmt.Sprintf("%.100s… (%d bytes)", dl.Payload, len(dl.Payload))
			t.Errorf("dead letter %d: %+v; want reason %s naming %q, batch index %d of %d", n, shown, w.reason, w.errText, w.index, w.count)
		}
		_, batchHeader := dl.Headers[wire.HeaderEvents]
		if w.index > 0 && (batchHeader || len(dl.Headers[bus.HeaderMsgID]) != 1) {
			// A replay must republish the event alone, not as a batch of one line.
			t.Errorf("dead letter %d of a batch's event: original headers %v; want the Nats-Msg-Id and no %s", n, dl.Headers, wire.HeaderEvents)
		}
		if w.index == 0 && w.reason != ReasonTooLarge && !batchHeader {
			t.Errorf("dead letter %d of a whole batch lost its %s header: %v", n, wire.HeaderEvents, dl.Headers)
		}
	}
	if got := metric(t, reg, "godwit_ingest_events_ingested_total"); got != float64(len(want)) {
		t.Errorf("events_ingested_total = %v, want %d (events, not messages)", got, len(want))
	}
	for reason, n := range map[string]float64{ReasonDecode: 1, ReasonInvalid: 3, ReasonTooLarge: 1} {
		if got := metric(t, reg, "godwit_ingest_dead_letters_total", "reason", reason); got != n {
			t.Errorf("dead_letters_total{reason=%q} = %v, want %v", reason, got, n)
		}
	}
}

// An event of a batch that the store refuses holds the whole message back: the message is handed
// back (its other events, stored already, are skipped as duplicates on redelivery) until the
// event reaches the delivery limit and is dead-lettered on its own; only then is the message
// acknowledged. Replaying the dead letter stores the event alone.
func TestRefusedEventOfABatch(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	agent, nc := bd.enroll(t)
	good1, bad, good2 := agentEvent(agent, wire.EventAgentStarted, time.Now(), ""),
		agentEvent(agent, wire.EventExecutionFailed, time.Now(), "m1"), agentEvent(agent, wire.EventAgentStarted, time.Now(), "")
	var fixed atomic.Bool
	picky := &wrapStore{Store: bd.store}
	picky.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		for _, e := range events {
			if e.ID == bad.ID && !fixed.Load() {
				return 0, fmt.Errorf("insert events: %w", errRefused)
			}
		}
		return bd.store.InsertEvents(ctx, events, states)
	}
	const maxDeliver = 3
	ing, reg := bd.ingester(t, "hub", Config{Store: picky, MaxDeliver: maxDeliver, IsTransient: func(error) bool { return false }})
	ctx := testCtx(t)
	evs := []wire.Event{good1, bad, good2}
	var ids []string
	var payloads [][]byte
	for _, ev := range evs {
		ids, payloads = append(ids, ev.ID), append(payloads, marshalEvent(t, ev))
	}
	if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
		t.Fatal(err)
	}

	var dls []wire.DeadLetter
	waitFor(t, 20*time.Second, func() error {
		var err error
		if dls, err = ing.DeadLetters(ctx, 0, 10); err != nil || len(dls) != 1 {
			return fmt.Errorf("%d dead letters (%v), want 1", len(dls), err)
		}
		return nil
	})
	bd.waitDrained(t, 2)
	dl := dls[0]
	if dl.Reason != ReasonMaxDeliveries || dl.Deliveries != maxDeliver || dl.BatchIndex != 2 || dl.BatchCount != 3 ||
		dl.Payload != string(payloads[1]) || !strings.Contains(dl.Error, errRefused.Error()) {
		t.Errorf("dead letter %+v; want the second event of three, after %d deliveries", dl, maxDeliver)
	}
	// Delivered three times; the good events were stored on the first and skipped on the others.
	if got := metric(t, reg, "godwit_ingest_events_duplicate_total"); got != 2*(maxDeliver-1) {
		t.Errorf("events_duplicate_total = %v, want %d", got, 2*(maxDeliver-1))
	}

	fixed.Store(true)
	if err := ing.Replay(ctx, dl.Seq); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	bd.waitDrained(t, 3)
	page, _, err := bd.store.QueryEvents(ctx, store.EventQuery{Types: []string{wire.EventExecutionFailed}, Limit: 10})
	if err != nil || len(page) != 1 || page[0].ID != bad.ID || !bytes.Equal(page[0].Raw, payloads[1]) {
		t.Errorf("stored after replay: %+v, %v", page, err)
	}
	if left, err := ing.DeadLetters(ctx, 0, 10); err != nil || len(left) != 0 {
		t.Errorf("after replay: %d dead letters, %v", len(left), err)
	}
}

// A batch message is acknowledged only once its events are committed: while the transaction
// holding them is open, the message is still pending acknowledgement; a transient failure of
// that transaction hands the whole message back, and it is stored on redelivery.
func TestBatchIsAcknowledgedAfterCommit(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	agent, nc := bd.enroll(t)
	entered := make(chan []string, 4)
	release := make(chan struct{})
	var calls atomic.Int64
	slow := &wrapStore{Store: bd.store}
	slow.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		ids := make([]string, len(events))
		for n, e := range events {
			ids[n] = e.ID
		}
		entered <- ids
		<-release
		if calls.Add(1) == 1 {
			return 0, errBusy
		}
		return bd.store.InsertEvents(ctx, events, states)
	}
	_, reg := bd.ingester(t, "hub", Config{Store: slow, IsTransient: isBusy})
	ctx := testCtx(t)
	var ids []string
	var payloads [][]byte
	for range 4 {
		ev := agentEvent(agent, wire.EventExecutionSucceeded, time.Now(), "m1")
		ids, payloads = append(ids, ev.ID), append(payloads, marshalEvent(t, ev))
	}
	if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
		t.Fatal(err)
	}
	for attempt := range 2 {
		var got []string
		select {
		case got = <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("attempt %d: the store was not called", attempt)
		}
		if strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Fatalf("attempt %d: one transaction holds %v, want the batch's events %v", attempt, got, ids)
		}
		if pending, ackPending := bd.consumerLag(t); pending != 0 || ackPending != 1 {
			t.Fatalf("attempt %d: during the transaction %d pending, %d pending acknowledgement; want the batch unacknowledged", attempt, pending, ackPending)
		}
		release <- struct{}{}
	}
	close(release)
	bd.waitDrained(t, 4)
	if got := metric(t, reg, "godwit_ingest_redeliveries_total"); got != 1 {
		t.Errorf("redeliveries_total = %v, want 1 (the batch, handed back once)", got)
	}
}

// A fetch of Batch messages holds more events than that when they are batches; they are written
// in transactions of at most Batch events, or of WriteBatch when that is less (the hub's bound on
// SQLite, where every other write waits for the transaction in progress).
func TestBatchMessagesAreWrittenInBoundedTransactions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                 string
		batch, writeBatch, n int // n: the most events a transaction may hold
	}{
		{"fetch bound", 4, 0, 4},
		{"write bound", 6, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bd := setup(t)
			agent, nc := bd.enroll(t)
			var mu sync.Mutex
			var sizes []int
			counting := &wrapStore{Store: bd.store}
			counting.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
				mu.Lock()
				sizes = append(sizes, len(events))
				mu.Unlock()
				return bd.store.InsertEvents(ctx, events, states)
			}
			ctx := testCtx(t)
			const messages, each = 6, 5
			for range messages {
				_, ids, payloads := batchOf(t, agent, each)
				if _, _, err := bus.PublishEvents(ctx, nc, agent, ids, payloads); err != nil {
					t.Fatal(err)
				}
			}
			bd.ingester(t, "hub", Config{Store: counting, Batch: tc.batch, WriteBatch: tc.writeBatch})
			bd.waitDrained(t, messages*each)
			mu.Lock()
			defer mu.Unlock()
			total := 0
			for _, n := range sizes {
				total += n
				if n > tc.n {
					t.Errorf("a transaction of %d events, over the bound of %d (all: %v)", n, tc.n, sizes)
				}
			}
			if total != messages*each {
				t.Errorf("%d events written in %v, want %d", total, sizes, messages*each)
			}
		})
	}
}

// A negative WriteBatch is refused, naming it.
func TestNegativeWriteBatchIsRefused(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing := New(Config{JS: bd.js, Store: bd.store, WriteBatch: -1})
	err := ing.Start(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "WriteBatch") {
		t.Fatalf("Start with WriteBatch -1: %v; want an error naming WriteBatch", err)
	}
}

// A hub older than event batches dead-letters a batch whole as not JSON, keeping its headers.
// Replayed once the hub takes batches, it is republished as a batch and its events are stored.
func TestBatchDeadLetteredByAnOlderHubIsReplayed(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing, _ := bd.ingester(t, "hub", Config{})
	ctx := testCtx(t)
	agent := newAgentID(t)
	var ids []string
	var payloads [][]byte
	for range 3 {
		ev := agentEvent(agent, wire.EventExecutionSucceeded, time.Now(), "m1")
		ids, payloads = append(ids, ev.ID), append(payloads, marshalEvent(t, ev))
	}
	body, err := wire.EncodeEventBatch(payloads)
	if err != nil {
		t.Fatal(err)
	}
	// The dead letter as the older hub wrote it (its deadLetter: original headers renamed).
	dl := nats.NewMsg(bus.DeadLetterPrefix + agent)
	dl.Data = body
	dl.Header.Set(HeaderOriginalPrefix+wire.HeaderEvents, "3")
	dl.Header.Set(HeaderOriginalPrefix+bus.HeaderMsgID, wire.EventBatchID(ids))
	dl.Header.Set(HeaderReason, ReasonDecode)
	dl.Header.Set(HeaderError, "not a JSON event: invalid JSON at byte 400: object after the event")
	dl.Header.Set(HeaderSubject, wire.EventSubject(agent))
	dl.Header.Set(HeaderDeliveries, "1")
	dl.Header.Set(HeaderStreamSeq, "1")
	ack, err := bd.js.PublishMsg(ctx, dl)
	if err != nil {
		t.Fatal(err)
	}
	if err := ing.Replay(ctx, ack.Sequence); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	bd.waitDrained(t, 3)
	if left, err := ing.DeadLetters(ctx, 0, 10); err != nil || len(left) != 0 {
		t.Errorf("after replay: %d dead letters, %v", len(left), err)
	}
}
