package bus

import (
	"errors"
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
