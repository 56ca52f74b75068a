package liveness

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

type bundle struct {
	kv    jetstream.KeyValue
	store store.Store
	agent wire.Agent
}

// setup gives a heartbeat bucket on a real embedded NATS server and a SQLite store with one
// enrolled agent.
func setup(t *testing.T) *bundle {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := bus.StartServer(bus.ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: st, Logger: logging.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	nc, err := srv.ConnectHub("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	bk, err := bus.EnsureBuckets(ctx, js, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := credential.New(credential.PrefixEnroll)
	if err := st.CreateEnrollToken(ctx, wire.EnrollToken{ID: "t", MaxUses: 1, ExpiresAt: now.Add(time.Hour), CreatedAt: now}, credential.Hash(tok)); err != nil {
		t.Fatal(err)
	}
	a := wire.Agent{ID: "0196a000-0000-7000-8000-000000000001", Name: "agent-1", EnrolledAt: now}
	if err := st.Enroll(ctx, credential.Hash(tok), now, a, "x"); err != nil {
		t.Fatal(err)
	}
	return &bundle{kv: bk.Heartbeats, store: st, agent: a}
}

func (b *bundle) beat(t *testing.T) {
	t.Helper()
	hb, _ := json.Marshal(wire.Heartbeat{AgentID: b.agent.ID, Version: "test"})
	if _, err := b.kv.Put(t.Context(), b.agent.ID, hb); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) waitStatus(t *testing.T, what, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		a, err := b.store.GetAgent(t.Context(), b.agent.ID)
		if err != nil {
			t.Fatal(err)
		}
		if a.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: agent %s within 10s, want %s", what, a.Status, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Start, Stop, Start again (package worker): each run judges the agents afresh, and one that
// follows another hub's run writes its own judgement again rather than trusting what it wrote
// before the other hub did.
func TestStartStopStart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := New(Config{KV: b.kv, Store: b.store, Logger: logging.Discard(), Interval: 20 * time.Millisecond, Grace: time.Minute})
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	b.beat(t)
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	b.waitStatus(t, "first run", wire.StatusOnline)
	for range 2 {
		if err := c.Stop(t.Context()); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
	// Meanwhile another hub led and judged otherwise.
	if err := b.store.UpdateLiveness(t.Context(), []store.Liveness{{AgentID: b.agent.ID, Status: wire.StatusOffline}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	b.waitStatus(t, "second run", wire.StatusOnline)
}
