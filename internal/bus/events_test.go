package bus

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// createTestEventsStream declares the events stream the way the hub will (subjects of every
// agent's events, a two-minute de-duplication window), until the hub's own helper exists.
func createTestEventsStream(t *testing.T, js jetstream.JetStream, mod func(*jetstream.StreamConfig)) jetstream.Stream {
	t.Helper()
	cfg := jetstream.StreamConfig{
		Name:       wire.StreamEvents,
		Subjects:   []string{"godwit.events.>"},
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	}
	if mod != nil {
		mod(&cfg)
	}
	st, err := js.CreateOrUpdateStream(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("create events stream: %v", err)
	}
	return st
}

func TestPublishEvent(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	idA, pwA := bd.agents.enroll(t)
	idB, _ := bd.agents.enroll(t)
	a := bd.connectAgent(t, idA, pwA)

	ev1, ev2 := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()

	// No stream yet (the hub has not declared it): nobody answers, which is retryable.
	if _, _, err := PublishEvent(ctx, a.Conn, idA, ev1, []byte(`{"n":0}`)); !errors.Is(err, fault.ErrUnavailable) {
		t.Fatalf("publish without a stream: err = %v, want ErrUnavailable", err)
	}

	st := createTestEventsStream(t, bd.js, nil)
	seq, dup, err := PublishEvent(ctx, a.Conn, idA, ev1, []byte(`{"n":1}`))
	if err != nil || dup || seq != 1 {
		t.Fatalf("first publish = %d, %v, %v; want seq 1, not a duplicate", seq, dup, err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != wire.EventSubject(idA) || string(m.Data) != `{"n":1}` || m.Header.Get(HeaderMsgID) != ev1 {
		t.Errorf("stored %s %q with id %q; want %s %q with id %s",
			m.Subject, m.Data, m.Header.Get(HeaderMsgID), wire.EventSubject(idA), `{"n":1}`, ev1)
	}

	// The same id again (a resend after a lost acknowledgement or an agent crash): acknowledged as
	// a duplicate with the original sequence, and not stored twice.
	seq, dup, err = PublishEvent(ctx, a.Conn, idA, ev1, []byte(`{"n":1}`))
	if err != nil || !dup || seq != 1 {
		t.Fatalf("resend = %d, %v, %v; want seq 1, duplicate", seq, dup, err)
	}
	seq, dup, err = PublishEvent(ctx, a.Conn, idA, ev2, []byte(`{"n":2}`))
	if err != nil || dup || seq != 2 {
		t.Fatalf("second event = %d, %v, %v; want seq 2, not a duplicate", seq, dup, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("stream holds %d messages, want 2", info.State.Msgs)
	}

	// A's credentials cannot publish as B: the publish is dropped, so the request goes unanswered.
	if _, _, err := PublishEvent(shortCtx(t), a.Conn, idB, uuid.NewString(), []byte(`{}`)); err == nil {
		t.Error("A published an event as B")
	}
	if _, _, err := PublishEvent(ctx, a.Conn, idA, ev2, make([]byte, wire.MaxEventBytes+1)); !errors.Is(err, fault.ErrTooLarge) {
		t.Errorf("oversized event: err = %v, want ErrTooLarge", err)
	}
	if _, _, err := PublishEvent(ctx, a.Conn, idA, "", []byte(`{}`)); !errors.Is(err, fault.ErrInvalid) {
		t.Errorf("event without an id: err = %v, want ErrInvalid", err)
	}

	// A refusal by the stream comes back as an error acknowledgement.
	createTestEventsStream(t, bd.js, func(c *jetstream.StreamConfig) {
		c.MaxMsgs = 2
		c.Discard = jetstream.DiscardNew
	})
	_, _, err = PublishEvent(ctx, a.Conn, idA, uuid.Must(uuid.NewV7()).String(), []byte(`{"n":3}`))
	if err == nil || !strings.Contains(err.Error(), "jetstream:") {
		t.Errorf("publish to a full stream: err = %v, want a JetStream error", err)
	}
}

// A batch is stored as one message with its count and an id naming its events; the same batch
// again is a duplicate, but a batch re-formed differently (after a crash or a failed send, with
// more events queued) is stored, whatever events it shares with the first.
func TestPublishEvents(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	idA, pwA := bd.agents.enroll(t)
	a := bd.connectAgent(t, idA, pwA)
	st := createTestEventsStream(t, bd.js, nil)

	var ids []string
	var payloads [][]byte
	for n := range 3 {
		ids = append(ids, uuid.Must(uuid.NewV7()).String())
		payloads = append(payloads, []byte(fmt.Sprintf(`{"n":%d}`, n)))
	}
	seq, dup, err := PublishEvents(ctx, a.Conn, idA, ids[:2], payloads[:2])
	if err != nil || dup || seq != 1 {
		t.Fatalf("first batch = %d, %v, %v; want seq 1, not a duplicate", seq, dup, err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != wire.EventSubject(idA) || string(m.Data) != "{\"n\":0}\n{\"n\":1}" ||
		m.Header.Get(wire.HeaderEvents) != "2" || m.Header.Get(HeaderMsgID) != wire.EventBatchID(ids[:2]) {
		t.Errorf("stored %s %q with headers %v", m.Subject, m.Data, m.Header)
	}
	// The same batch again: a duplicate of message 1.
	if seq, dup, err = PublishEvents(ctx, a.Conn, idA, ids[:2], payloads[:2]); err != nil || !dup || seq != 1 {
		t.Fatalf("resent batch = %d, %v, %v; want seq 1, duplicate", seq, dup, err)
	}
	// Re-formed with the event queued since: a new message, not a duplicate of the smaller one.
	if seq, dup, err = PublishEvents(ctx, a.Conn, idA, ids, payloads); err != nil || dup || seq != 2 {
		t.Fatalf("re-formed batch = %d, %v, %v; want seq 2, not a duplicate", seq, dup, err)
	}
	// Its first event alone, as a single-event message: not a duplicate of either batch.
	if seq, dup, err = PublishEvent(ctx, a.Conn, idA, ids[0], payloads[0]); err != nil || dup || seq != 3 {
		t.Fatalf("single event after the batches = %d, %v, %v; want seq 3", seq, dup, err)
	}

	big := []byte(strings.Repeat("x", wire.MaxEventBytes))
	for _, tc := range []struct {
		name     string
		ids      []string
		payloads [][]byte
		want     error
	}{
		{"empty", nil, nil, fault.ErrInvalid},
		{"ids and events differ", ids[:1], payloads[:2], fault.ErrInvalid},
		{"no id", []string{ids[0], ""}, payloads[:2], fault.ErrInvalid},
		{"newline", ids[:1], [][]byte{[]byte("{\n}")}, fault.ErrInvalid},
		{"event too large", ids[:1], [][]byte{append(big, 'x')}, fault.ErrTooLarge},
		{"batch too large", ids, [][]byte{big, big, big}, fault.ErrTooLarge},
		{"too many", make([]string, wire.MaxBatchEvents+1), make([][]byte, wire.MaxBatchEvents+1), fault.ErrInvalid},
	} {
		if tc.name == "too many" {
			for n := range tc.ids {
				tc.ids[n], tc.payloads[n] = uuid.NewString(), []byte("{}")
			}
		}
		if _, _, err := PublishEvents(ctx, a.Conn, idA, tc.ids, tc.payloads); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 3 {
		t.Fatalf("stream holds %v messages (%v), want 3", info, err)
	}
}
