package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/bus"
	gwcred "godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// oneAgentAuth is a bus.Authenticator that knows a single agent.
type oneAgentAuth struct{ id, hash string }

func (a oneAgentAuth) AgentCredential(_ context.Context, id string) (string, bool, error) {
	if id != a.id {
		return "", false, fmt.Errorf("agent %s: %w", id, fault.ErrNotFound)
	}
	return a.hash, false, nil
}

// The simulated agent sends what has queued in one publish, as the outbox does, and counts
// events and publishes apart.
func TestSimAgentSendsQueuedEventsAsOneBatch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, pw := uuid.Must(uuid.NewV7()).String(), gwcred.New(gwcred.PrefixAgent)
	srv, err := bus.StartServer(bus.ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0",
		Auth: oneAgentAuth{id: id, hash: gwcred.Hash(pw)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	hub, err := srv.ConnectHub("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	js, err := jetstream.New(hub)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	nc, err := bus.ConnectAgent([]string{srv.ClientURL()}, id, pw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	var stats fleetStats
	a := newSimAgent(id, nc, time.Second, &stats)
	a.evRun = true // the sender is busy with an earlier publish while these queue up
	for n := range 5 {
		a.event(ctx, wire.EventAgentStarted, wire.EventData{Message: fmt.Sprint("event ", n)})
	}
	a.sender(ctx)
	if e, p := stats.events.Load(), stats.eventPublishes.Load(); e != 5 || p != 1 {
		t.Fatalf("%d events in %d publishes, want 5 in 1", e, p)
	}
	st, err := js.Stream(ctx, wire.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := wire.SplitEventBatch(m.Header.Get(wire.HeaderEvents), m.Data)
	if err != nil || len(parts) != 5 {
		t.Fatalf("stored message: %d events, %v; want a batch of 5", len(parts), err)
	}
	for n, p := range parts {
		ev, err := wire.DecodeEvent(p)
		if err != nil || ev.Validate(id) != nil || ev.Data.Message != fmt.Sprint("event ", n) {
			t.Errorf("event %d of the batch: %+v, %v", n, ev, err)
		}
	}
}
