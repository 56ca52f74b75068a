package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

func TestEnsureStreamsIdempotent(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	for range 2 {
		if err := EnsureStreams(ctx, bd.js, StreamOptions{}); err != nil {
			t.Fatalf("EnsureStreams: %v", err)
		}
	}
	ev, err := bd.js.Stream(ctx, wire.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ev.CachedInfo().Config
	if cfg.MaxAge != DefaultEventsMaxAge || cfg.Duplicates != DefaultDuplicateWindow || cfg.MaxMsgSize != DefaultEventsMaxMsgSize ||
		cfg.Storage != jetstream.FileStorage || cfg.AllowRollup || !cfg.DenyPurge || cfg.Retention != jetstream.LimitsPolicy {
		t.Errorf("events stream config = %+v", cfg)
	}
	dlq, err := bd.js.Stream(ctx, wire.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	if c := dlq.CachedInfo().Config; c.MaxAge != DefaultEventsMaxAge || c.DenyDelete || c.DenyPurge || c.Subjects[0] != DeadLetterSubjects {
		t.Errorf("dead-letter stream config = %+v", c)
	}

	// A later call updates the configuration in place, keeping the messages.
	if _, err := bd.js.Publish(ctx, wire.EventSubject(newAgentID(t)), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreams(ctx, bd.js, StreamOptions{MaxAge: 48 * time.Hour, DuplicateWindow: time.Minute}); err != nil {
		t.Fatalf("EnsureStreams (update): %v", err)
	}
	info, err := ev.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 48*time.Hour || info.Config.Duplicates != time.Minute || info.State.Msgs != 1 {
		t.Errorf("after update: max age %s, duplicates %s, %d messages", info.Config.MaxAge, info.Config.Duplicates, info.State.Msgs)
	}
}

func TestEnsureStreamsRejectsBadOptions(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	for name, o := range map[string]StreamOptions{
		"Replicas":        {Replicas: -1},
		"MaxAge":          {MaxAge: -time.Second},
		"DuplicateWindow": {MaxAge: time.Minute, DuplicateWindow: time.Hour},
		"MaxMsgSize":      {MaxMsgSize: -2},
		"MaxBytes":        {MaxMsgsPerAgent: -5},
	} {
		err := EnsureStreams(testCtx(t), bd.js, o)
		var fe *fault.FieldError
		if !errors.As(err, &fe) || fe.Field != name {
			t.Errorf("%s: err = %v, want a field error naming it", name, err)
		}
	}
}

func TestEventStreamDropsDuplicateMsgID(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	if err := EnsureStreams(ctx, bd.js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	subj := wire.EventSubject(newAgentID(t))
	first, err := bd.js.Publish(ctx, subj, []byte(`{"n":1}`), jetstream.WithMsgID("e1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := bd.js.Publish(ctx, subj, []byte(`{"n":2}`), jetstream.WithMsgID("e1"))
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !again.Duplicate || again.Sequence != first.Sequence {
		t.Errorf("first %+v, re-publish %+v: want the re-publish reported as a duplicate of the first", first, again)
	}
	other, err := bd.js.Publish(ctx, subj, []byte(`{"n":3}`), jetstream.WithMsgID("e1:replay:7"))
	if err != nil || other.Duplicate {
		t.Fatalf("different id: %+v, %v", other, err)
	}
	st, _ := bd.js.Stream(ctx, wire.StreamEvents)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("stream holds %d messages, want 2", info.State.Msgs)
	}
}

// Agents publish into the events stream: a rollup header must not erase other agents' events
// and nobody but an operator with the stream's config may purge it.
func TestEventStreamRefusesRollupAndPurge(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	if err := EnsureStreams(ctx, bd.js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	a := newAgentID(t)
	if _, err := bd.js.Publish(ctx, wire.EventSubject(a), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(wire.EventSubject(a))
	m.Header.Set("Nats-Rollup", "all")
	m.Data = []byte(`{}`)
	if _, err := bd.js.PublishMsg(ctx, m); err == nil {
		t.Error("publish with Nats-Rollup succeeded")
	}
	st, _ := bd.js.Stream(ctx, wire.StreamEvents)
	if err := st.Purge(ctx); err == nil {
		t.Error("purge of the events stream succeeded")
	}
	if info, _ := st.Info(ctx); info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

// An agent's publish on its own event subject crosses the service import into the hub's account,
// lands in the events stream, and the acknowledgement comes back to the agent.
func TestAgentEventReachesStream(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	if err := EnsureStreams(ctx, bd.js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	id, pw := bd.agents.enroll(t)
	ac := bd.connectAgent(t, id, pw)
	m := nats.NewMsg(wire.EventSubject(id))
	m.Header.Set("Nats-Msg-Id", "ev-1")
	m.Data = []byte(`{"id":"ev-1"}`)
	for i := range 2 {
		resp, err := ac.RequestMsgWithContext(ctx, m)
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		var ack jsPubAck
		if err := json.Unmarshal(resp.Data, &ack); err != nil || ack.Error != nil || ack.Stream != wire.StreamEvents || ack.Seq != 1 {
			t.Fatalf("publish %d: ack %s (%v)", i, resp.Data, err)
		}
	}
	st, _ := bd.js.Stream(ctx, wire.StreamEvents)
	got, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != wire.EventSubject(id) || string(got.Data) != `{"id":"ev-1"}` {
		t.Errorf("stored %s %s", got.Subject, got.Data)
	}
	if info, _ := st.Info(ctx); info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1 (the re-publish is a duplicate)", info.State.Msgs)
	}
}

// One agent's flood pushes out its own oldest events and nobody else's; the streams never grow
// past their byte bounds.
func TestStreamsBoundWhatOneAgentCanFill(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	o := StreamOptions{MaxMsgsPerAgent: 5, MaxBytes: 8 << 20, DeadLetterMaxBytes: 1 << 20}
	if err := EnsureStreams(ctx, bd.js, o); err != nil {
		t.Fatal(err)
	}
	quiet, loud := newAgentID(t), newAgentID(t)
	for i := range 3 {
		if _, err := bd.js.Publish(ctx, wire.EventSubject(quiet), []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	payload := make([]byte, 32<<10)
	for range 300 { // 9.6 MB: more than the stream's bound
		if _, err := bd.js.Publish(ctx, wire.EventSubject(loud), payload); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := bd.js.Stream(ctx, wire.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ev.Info(ctx, jetstream.WithSubjectFilter(EventSubjects))
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxMsgsPerSubject != 5 || info.Config.MaxBytes != 8<<20 || info.Config.Discard != jetstream.DiscardOld {
		t.Fatalf("events stream config = %+v", info.Config)
	}
	if got := info.State.Subjects[wire.EventSubject(quiet)]; got != 3 {
		t.Errorf("the quiet agent keeps %d events, want its 3", got)
	}
	if got := info.State.Subjects[wire.EventSubject(loud)]; got != 5 {
		t.Errorf("the loud agent keeps %d events, want 5", got)
	}
	// Many agents at once are held by the byte bound (the oldest go first).
	for range 300 { // 9.6 MB
		if _, err := bd.js.Publish(ctx, wire.EventSubject(newAgentID(t)), payload); err != nil {
			t.Fatal(err)
		}
	}
	if info, err = ev.Info(ctx); err != nil || info.State.Bytes > 8<<20 || info.State.Bytes < 7<<20 {
		t.Errorf("events stream holds %d bytes, bound 8 MiB (%v)", info.State.Bytes, err)
	}
	dlq, err := bd.js.Stream(ctx, wire.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	if c := dlq.CachedInfo().Config; c.MaxBytes != 1<<20 {
		t.Errorf("dead-letter stream MaxBytes = %d", c.MaxBytes)
	}
	// Zero means no bound but the server's, as before.
	if err := EnsureStreams(ctx, bd.js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if info, _ := ev.Info(ctx); info.Config.MaxMsgsPerSubject != -1 || info.Config.MaxBytes != -1 {
		t.Errorf("unbounded again: %+v", info.Config)
	}
}
