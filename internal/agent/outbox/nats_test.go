package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// oneAgent is a bus.Authenticator that knows a single agent.
type oneAgent struct{ id, hash string }

var _ bus.Authenticator = oneAgent{}

func (a oneAgent) AgentCredential(_ context.Context, id string) (string, bool, error) {
	if id != a.id {
		return "", false, fmt.Errorf("agent %s: %w", id, fault.ErrNotFound)
	}
	return a.hash, false, nil
}

// hubNATS is the hub side of the test: the embedded server and the events stream.
type hubNATS struct {
	t        *testing.T
	storeDir string
	listen   string
	auth     bus.Authenticator
	srv      *bus.Server
	stream   jetstream.Stream
}

func (h *hubNATS) start() {
	h.t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{
		StoreDir: h.storeDir,
		Listen:   h.listen,
		Auth:     h.auth,
		Logger:   slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		h.t.Fatalf("StartServer: %v", err)
	}
	h.srv = srv
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		h.t.Fatal(err)
	}
	h.listen = u.Host // a restart listens where the agent reconnects
	hub, err := srv.ConnectHub("test-hub")
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(hub.Close)
	js, err := jetstream.New(hub)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Declared as the hub declares it (kept across restarts by the store directory).
	h.stream, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       wire.StreamEvents,
		Subjects:   []string{"godwit.events.>"},
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		h.t.Fatalf("create events stream: %v", err)
	}
}

func (h *hubNATS) stop() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Stop(ctx); err != nil {
		h.t.Errorf("Stop: %v", err)
	}
}

// ids returns the Nats-Msg-Id of every message in the stream, in stream order.
func (h *hubNATS) ids() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := h.stream.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := h.stream.GetMsg(ctx, seq)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", seq, err)
		}
		out = append(out, m.Header.Get(bus.HeaderMsgID))
	}
	return out, nil
}

// agentOnHub starts a hub's NATS server that knows one agent and connects as that agent with its
// own credentials; both are closed when the test ends.
func agentOnHub(t *testing.T, agentID string) (*hubNATS, *nats.Conn) {
	t.Helper()
	password := credential.New(credential.PrefixAgent)
	h := &hubNATS{t: t, storeDir: t.TempDir(), listen: "127.0.0.1:0",
		auth: oneAgent{id: agentID, hash: credential.Hash(password)}}
	h.start()
	t.Cleanup(func() { h.stop() })
	nc, err := bus.ConnectAgent([]string{h.srv.ClientURL()}, agentID, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return h, nc
}

// TestThroughNATS runs the outbox against the real embedded NATS server with the agent's own
// credentials: events queued while the hub's NATS is down arrive once it is back, and a replay of
// the whole backlog with the same ids leaves the stream holding each event exactly once. The
// events go one a message here, so that the stream's order is the events' order; batches are
// TestBatchReformedThroughNATS's.
func TestThroughNATS(t *testing.T) {
	t.Parallel()
	agentID := testAgent
	h, nc := agentOnHub(t, agentID)

	var mu sync.Mutex
	sent := map[string][]byte{} // what was acknowledged, for the replay
	failures := 0
	pub := func(ctx context.Context, entries []Entry) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		for _, e := range entries {
			_, _, err := bus.PublishEvent(ctx, nc, agentID, e.ID, e.Payload)
			mu.Lock()
			if err != nil {
				failures++
				mu.Unlock()
				return err
			}
			sent[e.ID] = e.Payload
			mu.Unlock()
		}
		return nil
	}

	o := open(t, journalPath(t), Limits{}, nil)
	run(t, o, pub)
	want := appendN(t, o, wire.SeverityError, 0, 50)
	waitLen(t, o, 0, 30*time.Second)

	// The hub's NATS goes away; the agent keeps producing events.
	h.stop()
	want = append(want, appendN(t, o, wire.SeverityError, 50, 50)...)
	waitFor(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if failures == 0 {
			return errors.New("no failed send yet")
		}
		return nil
	})
	if n, err := o.Len(); err != nil || n == 0 {
		t.Fatalf("Len = %d, %v during the outage; want the backlog", n, err)
	}

	// Back, on the same store directory and address: the agent reconnects, the backlog drains.
	h.start()
	waitLen(t, o, 0, 60*time.Second)
	waitFor(t, 10*time.Second, func() error {
		got, err := h.ids()
		if err != nil {
			return err
		}
		if len(got) != len(want) {
			return fmt.Errorf("stream holds %d events, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				return fmt.Errorf("stream message %d is %s, want %s", i+1, got[i], want[i])
			}
		}
		return nil
	})

	// Every event sent again with its id (the journal of an agent that crashed after every
	// acknowledgement): JetStream answers duplicate and stores nothing.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, id := range want {
		mu.Lock()
		payload := sent[id]
		mu.Unlock()
		_, dup, err := bus.PublishEvent(ctx, nc, agentID, id, payload)
		if err != nil || !dup {
			t.Fatalf("replay of %s: duplicate = %v, err = %v; want a duplicate", id, dup, err)
		}
	}
	info, err := h.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(want)) {
		t.Errorf("after the replay the stream holds %d events, want %d", info.State.Msgs, len(want))
	}
	t.Logf("%d events, %d failed sends during the outage, stream holds %d", len(want), failures, info.State.Msgs)
}

// TestBatchReformedThroughNATS: the outbox sends what is queued as one batch message; when the
// acknowledgement of a batch is lost (or the agent dies before the delete), the next attempt
// holds more events, and the events stream must store it, not drop it as a duplicate of the
// first: the event queued meanwhile would be deleted from the journal without ever reaching the
// hub.
func TestBatchReformedThroughNATS(t *testing.T) {
	t.Parallel()
	agentID := testAgent
	h, nc := agentOnHub(t, agentID)

	var mu sync.Mutex
	var calls [][]string // ids of each call
	pub := func(ctx context.Context, entries []Entry) error {
		ids := make([]string, len(entries))
		payloads := make([][]byte, len(entries))
		for n, e := range entries {
			ids[n], payloads[n] = e.ID, e.Payload
		}
		_, err := bus.SendEvents(ctx, nc, agentID, ids, payloads)
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, ids)
		if err == nil && len(calls) == 1 {
			return errors.New("acknowledgement lost") // stored, but the outbox does not know
		}
		return err
	}

	clock := newFakeClock()
	o := open(t, journalPath(t), Limits{}, clock)
	want := appendN(t, o, wire.SeverityInfo, 0, 5)
	run(t, o, pub)
	waitBackoff(t, clock) // the first batch went out; its acknowledgement was "lost"
	want = append(want, appendN(t, o, wire.SeverityInfo, 5, 2)...)
	clock.Advance(backoffMax)
	waitLen(t, o, 0, 30*time.Second)

	mu.Lock()
	if len(calls) != 2 || len(calls[0]) != 5 || len(calls[1]) != 7 {
		t.Fatalf("publisher calls %v, want the 5 queued events in one, then all 7", calls)
	}
	mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	info, err := h.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("the stream holds %d messages, want 2 (the batch of 5 and the re-formed batch of 7)", info.State.Msgs)
	}
	stored := map[string]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := h.stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		parts, err := wire.SplitEventBatch(m.Header.Get(wire.HeaderEvents), m.Data)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		for _, p := range parts {
			ev, err := wire.DecodeEvent(p)
			if err != nil {
				t.Fatalf("message %d: %v", seq, err)
			}
			stored[ev.ID] = true
		}
	}
	for n, id := range want {
		if !stored[id] {
			t.Errorf("event %d (%s) is not in the stream", n, id)
		}
	}
}
