package bus

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
)

// fakeAuth is an Authenticator whose behaviour each test chooses.
type fakeAuth struct {
	AgentCredentialFunc func(ctx context.Context, agentID string) (string, bool, error)
}

var _ Authenticator = (*fakeAuth)(nil)

func (f *fakeAuth) AgentCredential(ctx context.Context, agentID string) (string, bool, error) {
	return f.AgentCredentialFunc(ctx, agentID)
}

// agentTable is the credential store behind a fakeAuth.
type agentTable struct {
	mu      sync.Mutex
	hash    map[string]string
	revoked map[string]bool
}

func (a *agentTable) enroll(t testing.TB) (id, password string) {
	t.Helper()
	id, password = newAgentID(t), credential.New(credential.PrefixAgent)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hash[id] = credential.Hash(password)
	return id, password
}

func (a *agentTable) revoke(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.revoked[id] = true
}

func (a *agentTable) lookup(_ context.Context, id string) (string, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h, ok := a.hash[id]
	if !ok {
		return "", false, fmt.Errorf("agent %s: %w", id, fault.ErrNotFound)
	}
	return h, a.revoked[id], nil
}

// bundle is what most tests start from: a running server, a hub connection and the buckets.
type bundle struct {
	srv    *Server
	agents *agentTable
	auth   *fakeAuth
	hub    *nats.Conn
	js     jetstream.JetStream
	b      Buckets
}

func setup(t *testing.T, adjust ...func(*ServerConfig)) *bundle {
	t.Helper()
	agents := &agentTable{hash: map[string]string{}, revoked: map[string]bool{}}
	auth := &fakeAuth{AgentCredentialFunc: agents.lookup}
	cfg := ServerConfig{
		StoreDir: t.TempDir(),
		Listen:   "127.0.0.1:0",
		Auth:     auth,
		Logger:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, a := range adjust {
		a(&cfg)
	}
	srv, err := StartServer(cfg)
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	hub, err := srv.ConnectHub("test-hub")
	if err != nil {
		t.Fatalf("ConnectHub: %v", err)
	}
	t.Cleanup(hub.Close)
	js, err := jetstream.New(hub)
	if err != nil {
		t.Fatalf("jetstream.New: %v", err)
	}
	b, err := EnsureBuckets(testCtx(t), js, BucketOptions{HeartbeatMaxAge: time.Hour})
	if err != nil {
		t.Fatalf("EnsureBuckets: %v", err)
	}
	return &bundle{srv: srv, agents: agents, auth: auth, hub: hub, js: js, b: b}
}

// agentConn is an agent connection whose asynchronous errors the test can inspect.
type agentConn struct {
	*nats.Conn
	errs chan error
}

func (bd *bundle) connectAgent(t *testing.T, id, password string, opts ...nats.Option) *agentConn {
	t.Helper()
	ac := &agentConn{errs: make(chan error, 64)}
	opts = append([]nats.Option{
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case ac.errs <- err:
			default:
			}
		}),
	}, opts...)
	nc, err := ConnectAgent([]string{bd.srv.ClientURL()}, id, password, opts...)
	if err != nil {
		t.Fatalf("ConnectAgent %s: %v", id, err)
	}
	t.Cleanup(nc.Close)
	ac.Conn = nc
	return ac
}

// checkFor polls fn until it returns nil or the deadline passes (after nats-server's helper).
func checkFor(t *testing.T, total, interval time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(interval)
	}
	t.Fatalf("condition not met within %s: %v", total, err)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// shortCtx bounds a request that is expected to go unanswered (a denied publish is dropped).
func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

func newAgentID(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func mustSeeds(t testing.TB) (issuer, xkey string) {
	t.Helper()
	ikp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	xkp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	is, _ := ikp.Seed()
	xs, _ := xkp.Seed()
	return string(is), string(xs)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
