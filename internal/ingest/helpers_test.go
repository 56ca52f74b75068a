package ingest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

// wrapStore is the real store with some methods replaced by the test.
type wrapStore struct {
	store.Store
	InsertEventsFunc     func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error)
	AgentEventStatesFunc func(ctx context.Context, agentIDs []string) ([]store.EventState, error)
}

var _ store.Store = (*wrapStore)(nil)

func (w *wrapStore) InsertEvents(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
	if w.InsertEventsFunc != nil {
		return w.InsertEventsFunc(ctx, events, states)
	}
	return w.Store.InsertEvents(ctx, events, states)
}

func (w *wrapStore) AgentEventStates(ctx context.Context, agentIDs []string) ([]store.EventState, error) {
	if w.AgentEventStatesFunc != nil {
		return w.AgentEventStatesFunc(ctx, agentIDs)
	}
	return w.Store.AgentEventStates(ctx, agentIDs)
}

// agentAuth is the embedded server's Authenticator: a fixed table of agent credentials.
type agentAuth struct {
	mu   sync.Mutex
	hash map[string]string
}

var _ bus.Authenticator = (*agentAuth)(nil)

func (a *agentAuth) AgentCredential(_ context.Context, id string) (string, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h, ok := a.hash[id]
	if !ok {
		return "", false, fmt.Errorf("agent %s: %w", id, fault.ErrNotFound)
	}
	return h, false, nil
}

// bundle is what every test starts from: an embedded NATS server with the streams, a hub
// connection, and a SQLite store, all in temp dirs.
type bundle struct {
	srv   *bus.Server
	auth  *agentAuth
	js    jetstream.JetStream // the test's own hub connection, for publishing and inspecting
	store store.Store
	logs  *logBuffer
}

func setup(t *testing.T) *bundle {
	t.Helper()
	auth := &agentAuth{hash: map[string]string{}}
	logs := &logBuffer{}
	srv, err := bus.StartServer(bus.ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: auth, Logger: logs.logger()})
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	st, err := sqlite.Open(testCtx(t), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	bd := &bundle{srv: srv, auth: auth, store: st, logs: logs}
	bd.js = bd.connect(t, "test")
	if err := bus.EnsureStreams(testCtx(t), bd.js, bus.StreamOptions{}); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	return bd
}

// connect opens a hub connection of its own, closed at the end of the test.
func (bd *bundle) connect(t *testing.T, name string) jetstream.JetStream {
	t.Helper()
	nc, err := bd.srv.ConnectHub(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// fast are settings that keep tests short; tests override what they exercise.
func fast(cfg Config) Config {
	if cfg.Batch == 0 {
		cfg.Batch = 20
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = 100 * time.Millisecond
	}
	if cfg.NakDelay == 0 {
		cfg.NakDelay = 50 * time.Millisecond
	}
	return cfg
}

// ingester starts an ingester on a connection of its own and stops it at the end of the test.
// cfg.Store defaults to the bundle's store.
func (bd *bundle) ingester(t *testing.T, name string, cfg Config) (*Ingester, *prometheus.Registry) {
	t.Helper()
	if cfg.JS == nil {
		cfg.JS = bd.connect(t, name)
	}
	if cfg.Store == nil {
		cfg.Store = bd.store
	}
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	cfg.Logger = bd.logs.logger().With("ingester", name)
	ing := New(fast(cfg))
	if err := ing.Start(testCtx(t)); err != nil {
		t.Fatalf("Start %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ing.Stop(ctx); err != nil {
			t.Errorf("Stop %s: %v", name, err)
		}
	})
	return ing, reg
}

// publish puts an event on subject as received from the agent (or the hub), with its id as
// Nats-Msg-Id, as producers do, and returns its stream sequence.
func (bd *bundle) publish(t *testing.T, subject string, ev wire.Event) uint64 {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return bd.publishRaw(t, subject, b, nats.Header{"Nats-Msg-Id": {ev.ID}})
}

func (bd *bundle) publishRaw(t *testing.T, subject string, data []byte, h nats.Header) uint64 {
	t.Helper()
	m := &nats.Msg{Subject: subject, Data: data, Header: h}
	ack, err := bd.js.PublishMsg(testCtx(t), m)
	if err != nil {
		t.Fatalf("publish on %s: %v", subject, err)
	}
	return ack.Sequence
}

// enroll registers an agent with the server's authenticator and connects as it.
func (bd *bundle) enroll(t *testing.T) (string, *nats.Conn) {
	t.Helper()
	id, pw := newAgentID(t), credential.New(credential.PrefixAgent)
	bd.auth.mu.Lock()
	bd.auth.hash[id] = credential.Hash(pw)
	bd.auth.mu.Unlock()
	nc, err := bus.ConnectAgent([]string{bd.srv.ClientURL()}, id, pw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return id, nc
}

func (bd *bundle) count(t *testing.T) int64 {
	t.Helper()
	n, err := bd.store.CountEvents(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// consumerLag reads the shared consumer's counts directly.
func (bd *bundle) consumerLag(t *testing.T) (pending uint64, ackPending int) {
	t.Helper()
	c, err := bd.js.Consumer(testCtx(t), wire.StreamEvents, DefaultConsumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending, info.NumAckPending
}

// waitDrained waits until the store holds want events and the consumer has nothing pending.
func (bd *bundle) waitDrained(t *testing.T, want int64) {
	t.Helper()
	waitFor(t, 20*time.Second, func() error {
		n := bd.count(t)
		p, ap := bd.consumerLag(t)
		if n != want || p != 0 || ap != 0 {
			return fmt.Errorf("%d events stored (want %d), %d pending, %d ack pending", n, want, p, ap)
		}
		return nil
	})
}

func agentEvent(agent, typ string, at time.Time, migration string) wire.Event {
	ev := wire.NewEvent(wire.AgentSource(agent), typ, wire.SeverityInfo, wire.EventData{Migration: migration})
	ev.Time = at.UTC()
	return ev
}

// waitFor polls fn until it returns nil or the deadline passes (nats-server's checkFor).
func waitFor(t *testing.T, total time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("condition not met within %s: %v", total, err)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newAgentID(t *testing.T) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// metric returns the value of a counter or gauge (the sample count of a histogram) in reg whose
// labels include labels (name, value pairs).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for n := 0; n+1 < len(labels); n += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[n] && lp.GetValue() == labels[n+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// handled is how many deliveries an ingester wrote to the store (new or duplicate).
func handled(t *testing.T, reg *prometheus.Registry) float64 {
	return metric(t, reg, "godwit_ingest_events_ingested_total") + metric(t, reg, "godwit_ingest_events_duplicate_total")
}

// logBuffer collects logs from every goroutine; a failed test prints them. Unlike t.Log it may be
// written to after the test ends.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
