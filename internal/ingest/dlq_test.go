package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Poison messages go to the dead letters with their reason, the events around them are stored,
// and the pipeline keeps flowing.
func TestPoisonMessagesAreDeadLettered(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing, reg := bd.ingester(t, "hub", Config{})
	ctx := testCtx(t)

	agent, agentConn := bd.enroll(t)
	other := newAgentID(t)
	subj := wire.EventSubject(agent)
	good := func() wire.Event { return agentEvent(agent, wire.EventDetectionSucceeded, time.Now(), "m1") }
	marshal := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	noID := good()
	noID.ID = ""
	unknownType := good()
	unknownType.Type = "migration.detection.exploded"
	forged := agentEvent(other, wire.EventExecutionSucceeded, time.Now(), "m1") // claims to be another agent
	oversized := good()
	oversized.Data.OutputTail = strings.Repeat("x", wire.MaxEventBytes)

	type poison struct {
		name, reason, errText string
		data                  []byte
		fromAgent             bool // published by the agent itself, through its own account
	}
	poisons := []poison{
		{name: "not JSON", reason: ReasonDecode, errText: "not a JSON event", data: []byte("PUT /etc/passwd")},
		{name: "no id", reason: ReasonInvalid, errText: "has no id", data: marshal(noID)},
		{name: "unknown type", reason: ReasonInvalid, errText: "unknown type", data: marshal(unknownType)},
		{name: "forged source", reason: ReasonInvalid, errText: "forged source", data: marshal(forged), fromAgent: true},
		{name: "oversized", reason: ReasonTooLarge, errText: "the limit is", data: marshal(oversized)},
	}
	goods := []wire.Event{good()}
	bd.publish(t, subj, goods[0])
	for n, p := range poisons {
		h := nats.Header{"Trace-Id": {fmt.Sprint("trace-", n)}, "Nats-Msg-Id": {fmt.Sprint("poison-", n)}}
		if p.fromAgent {
			m := &nats.Msg{Subject: subj, Data: p.data, Header: h}
			if _, err := agentConn.RequestMsgWithContext(ctx, m); err != nil {
				t.Fatalf("agent publish: %v", err)
			}
		} else {
			bd.publishRaw(t, subj, p.data, h)
		}
		g := good()
		goods = append(goods, g)
		bd.publish(t, subj, g)
	}

	bd.waitDrained(t, int64(len(goods)))
	var dls []wire.DeadLetter
	waitFor(t, 10*time.Second, func() error {
		var err error
		dls, err = ing.DeadLetters(ctx, 0, 100)
		if err != nil || len(dls) != len(poisons) {
			return fmt.Errorf("%d dead letters (%v), want %d", len(dls), err, len(poisons))
		}
		return nil
	})
	for n, p := range poisons {
		dl := dls[n]
		if dl.Reason != p.reason || !strings.Contains(dl.Error, p.errText) {
			t.Errorf("%s: reason %q, error %q; want %q containing %q", p.name, dl.Reason, dl.Error, p.reason, p.errText)
		}
		if dl.Payload != string(p.data) || dl.Subject != subj || dl.Deliveries != 1 || dl.StreamSeq == 0 ||
			dl.Time.IsZero() || dl.OriginalTime.IsZero() {
			t.Errorf("%s: dead letter %+v", p.name, dl)
		}
		if got := dl.Headers["Trace-Id"]; len(got) != 1 || got[0] != fmt.Sprint("trace-", n) {
			t.Errorf("%s: original headers %v", p.name, dl.Headers)
		}
		if got := dl.Headers["Nats-Msg-Id"]; len(got) != 1 || got[0] != fmt.Sprint("poison-", n) {
			t.Errorf("%s: original Nats-Msg-Id not kept: %v", p.name, dl.Headers)
		}
	}
	for reason, want := range map[string]float64{ReasonDecode: 1, ReasonInvalid: 3, ReasonTooLarge: 1, ReasonMaxDeliveries: 0} {
		if got := metric(t, reg, "godwit_ingest_dead_letters_total", "reason", reason); got != want {
			t.Errorf("dead_letters_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	for _, g := range goods {
		page, _, err := bd.store.QueryEvents(ctx, store.EventQuery{AgentID: agent, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range page {
			found = found || e.ID == g.ID
		}
		if !found {
			t.Errorf("good event %s not stored", g.ID)
		}
	}

	// One by sequence; paging.
	one, err := ing.DeadLetter(ctx, dls[3].Seq)
	if err != nil || one.Reason != ReasonInvalid || one.Payload != string(poisons[3].data) {
		t.Errorf("DeadLetter(%d) = %+v, %v", dls[3].Seq, one, err)
	}
	if _, err := ing.DeadLetter(ctx, 9999); !errors.Is(err, fault.ErrNotFound) {
		t.Errorf("DeadLetter(absent) = %v, want ErrNotFound", err)
	}
	page, err := ing.DeadLetters(ctx, dls[1].Seq, 2)
	if err != nil || len(page) != 2 || page[0].Seq != dls[2].Seq || page[1].Seq != dls[3].Seq {
		t.Errorf("DeadLetters(after %d, 2) = %+v, %v", dls[1].Seq, page, err)
	}

	// Replaying one that is still invalid only dead-letters it again, under a new sequence.
	if err := ing.Replay(ctx, dls[3].Seq); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if _, err := ing.DeadLetter(ctx, dls[3].Seq); !errors.Is(err, fault.ErrNotFound) {
		t.Errorf("replayed dead letter still present: %v", err)
	}
	waitFor(t, 10*time.Second, func() error {
		again, err := ing.DeadLetters(ctx, dls[len(dls)-1].Seq, 10)
		if err != nil || len(again) != 1 {
			return fmt.Errorf("%d new dead letters (%v)", len(again), err)
		}
		if !strings.Contains(again[0].Error, "forged source") || again[0].Payload != string(poisons[3].data) ||
			again[0].Headers[HeaderReplayOf] == nil {
			return fmt.Errorf("re-dead-lettered as %+v", again[0])
		}
		return nil
	})
	if err := ing.Replay(ctx, dls[3].Seq); !errors.Is(err, fault.ErrNotFound) {
		t.Errorf("Replay of a removed dead letter = %v, want ErrNotFound", err)
	}
	if n := bd.count(t); n != int64(len(goods)) {
		t.Errorf("%d events stored, want %d", n, len(goods))
	}

	// Purge one, then all.
	if n, err := ing.Purge(ctx, dls[0].Seq); err != nil || n != 1 {
		t.Errorf("Purge(%d) = %d, %v", dls[0].Seq, n, err)
	}
	if _, err := ing.Purge(ctx, dls[0].Seq); !errors.Is(err, fault.ErrNotFound) {
		t.Errorf("Purge(absent) = %v, want ErrNotFound", err)
	}
	if n, err := ing.Purge(ctx, 0); err != nil || n != len(poisons)-1 {
		t.Errorf("Purge(all) = %d, %v; want %d", n, err, len(poisons)-1)
	}
	if left, err := ing.DeadLetters(ctx, 0, 10); err != nil || len(left) != 0 {
		t.Errorf("after purge: %d dead letters, %v", len(left), err)
	}
	if n, err := ing.Purge(ctx, 0); err != nil || n != 0 {
		t.Errorf("Purge(all) of nothing = %d, %v", n, err)
	}
}

var errBusy = errors.New("database is busy")

// A transient store error hands the batch back; it is stored once the store recovers, and
// nothing is dead-lettered however many times it was redelivered.
func TestTransientStoreErrorIsRetried(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	var failures atomic.Int64
	failures.Store(4)
	flaky := &wrapStore{Store: bd.store}
	flaky.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		if failures.Add(-1) >= 0 {
			return 0, fmt.Errorf("insert events: %w", errBusy)
		}
		return bd.store.InsertEvents(ctx, events, states)
	}
	_, reg := bd.ingester(t, "hub", Config{Store: flaky, MaxDeliver: 2,
		IsTransient: func(err error) bool { return errors.Is(err, errBusy) }})
	a := newAgentID(t)
	for k := range 5 {
		bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, time.Now().Add(time.Duration(k)), ""))
	}
	bd.waitDrained(t, 5)
	if got := metric(t, reg, "godwit_ingest_redeliveries_total"); got < 4 {
		t.Errorf("redeliveries_total = %v, want at least 4", got)
	}
	if got := metric(t, reg, "godwit_ingest_dead_letters_total", "reason", ReasonMaxDeliveries); got != 0 {
		t.Errorf("%v dead letters for a transient error", got)
	}
}

var errRefused = errors.New("value out of range")

// An event the store refuses for good is retried up to MaxDeliver and then dead-lettered; the
// events batched with it are stored meanwhile. Once the cause is fixed, replaying its dead letters
// stores it exactly once, even though it was dead-lettered twice.
func TestRefusedEventIsDeadLetteredAndReplayed(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	a := newAgentID(t)
	bad := agentEvent(a, wire.EventExecutionFailed, time.Now(), "m1")
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
	ing, reg := bd.ingester(t, "hub", Config{Store: picky, MaxDeliver: maxDeliver, Batch: 10,
		IsTransient: func(error) bool { return false }})

	ctx := testCtx(t)
	good1 := agentEvent(a, wire.EventAgentStarted, time.Now(), "")
	good2 := agentEvent(a, wire.EventAgentStarted, time.Now(), "")
	b, _ := json.Marshal(bad)
	bd.publish(t, wire.EventSubject(a), good1)
	bd.publishRaw(t, wire.EventSubject(a), b, nats.Header{"Nats-Msg-Id": {bad.ID}})
	bd.publish(t, wire.EventSubject(a), good2)
	// The same event once more, as an outbox would resend it after the duplicate window.
	bd.publishRaw(t, wire.EventSubject(a), b, nats.Header{"Nats-Msg-Id": {bad.ID + ":resend"}})

	var dls []wire.DeadLetter
	waitFor(t, 20*time.Second, func() error {
		var err error
		if dls, err = ing.DeadLetters(ctx, 0, 10); err != nil || len(dls) != 2 {
			return fmt.Errorf("%d dead letters (%v), want 2", len(dls), err)
		}
		return nil
	})
	bd.waitDrained(t, 2)
	for _, dl := range dls {
		if dl.Reason != ReasonMaxDeliveries || dl.Deliveries != maxDeliver || !strings.Contains(dl.Error, errRefused.Error()) {
			t.Errorf("dead letter %+v", dl)
		}
	}
	if got := metric(t, reg, "godwit_ingest_dead_letters_total", "reason", ReasonMaxDeliveries); got != 2 {
		t.Errorf("dead_letters_total{reason=max_deliveries} = %v, want 2", got)
	}

	fixed.Store(true)
	for _, dl := range dls {
		if err := ing.Replay(ctx, dl.Seq); err != nil {
			t.Fatalf("Replay(%d): %v", dl.Seq, err)
		}
	}
	bd.waitDrained(t, 3)
	waitFor(t, 10*time.Second, func() error {
		if got := metric(t, reg, "godwit_ingest_events_duplicate_total"); got != 1 {
			return fmt.Errorf("%v duplicates, want the second replay (1)", got)
		}
		return nil
	})
	if left, err := ing.DeadLetters(ctx, 0, 10); err != nil || len(left) != 0 {
		t.Errorf("after replay: %d dead letters, %v", len(left), err)
	}
	page, _, err := bd.store.QueryEvents(ctx, store.EventQuery{Types: []string{wire.EventExecutionFailed}, Limit: 10})
	if err != nil || len(page) != 1 || page[0].ID != bad.ID || !bytes.Equal(page[0].Raw, b) {
		t.Errorf("stored after replay: %+v, %v", page, err)
	}
}
