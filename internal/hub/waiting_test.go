package hub

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/store/pgtest"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/syncbuf"
	"godwit.dev/godwit/internal/wire"
)

// waitingReplica is a hub replica of a three-server embedded NATS cluster whose two peers are
// nowhere (until the test starts them at peers), running as `godwit hub` runs it.
type waitingReplica struct {
	t       *testing.T
	cfg     *config.Hub
	dsn     string
	peers   []string // the peers' route addresses, host:port
	log     *syncbuf.Buffer
	cancel  context.CancelFunc // SIGTERM
	done    chan error         // Run's result
	api     string
	token   string
	started time.Time
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startWaitingReplica(t *testing.T) *waitingReplica {
	t.Helper()
	r := &waitingReplica{t: t, dsn: pgtest.DSN(t), peers: []string{freeAddr(t), freeAddr(t)}, log: &syncbuf.Buffer{}, done: make(chan error, 1)}
	cfg := config.DefaultHub()
	cfg.DataDir, cfg.Database = filepath.Join(t.TempDir(), "hub"), r.dsn
	cfg.Listen, cfg.NATS.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.NATS.Cluster.Listen = freeAddr(t)
	cfg.NATS.Cluster.Routes = []string{"nats://" + r.peers[0], "nats://" + r.peers[1]}
	cfg.NATS.Replicas = 3
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r.cfg = cfg
	h := New(cfg, slog.New(slog.NewTextHandler(r.log, nil)), io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("the hub did not stop")
		}
		if t.Failed() {
			t.Logf("hub log:\n%s", r.log.String())
		}
	})
	// The endpoint file is how local clients find a hub: it is written once the API serves.
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(cfg.DataDir, wire.HubEndpointFile))
		var ep wire.HubEndpoint
		if err == nil && json.Unmarshal(b, &ep) == nil && ep.API != "" {
			r.api = ep.API
			break
		}
		select {
		case err := <-r.done:
			t.Fatalf("the hub ended before it served: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the hub did not serve its API while it waited for its NATS peers")
		}
		time.Sleep(20 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, wire.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	r.token = strings.TrimSpace(string(tok))
	return r
}

// call makes one API call and decodes the answer into out (when not nil).
func (r *waitingReplica) call(method, path, body string, out any) (int, string) {
	r.t.Helper()
	req, err := http.NewRequest(method, r.api+path, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			r.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// A replica whose NATS peers never answer serves while it waits: /healthz, a /readyz and a
// status that name the peers, the reads the database backs; what needs JetStream answers 503
// saying why. A SIGTERM then stops it cleanly.
func TestReplicaServesWhileItWaitsForNATSPeers(t *testing.T) {
	t.Parallel()
	r := startWaitingReplica(t)
	r.checkWaiting()

	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run after SIGTERM while waiting = %v, want nil (exit 0)", err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("the hub did not stop while it waited")
	}
	if _, err := http.Get(r.api + "/healthz"); err == nil {
		t.Error("the stopped hub still serves")
	}
	st, err := postgres.Open(context.Background(), r.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows, err := st.ListReplicas(context.Background())
	if err != nil || len(rows) != 0 {
		t.Errorf("replica rows after a graceful stop = %v, %v; want none", rows, err)
	}
}

func (r *waitingReplica) checkWaiting() {
	t := r.t
	t.Helper()
	if code, body := r.call("GET", "/healthz", "", nil); code != http.StatusOK {
		t.Errorf("/healthz = %d %s, want 200", code, body)
	}
	code, body := r.call("GET", "/readyz", "", nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, r.peers[0]) || !strings.Contains(body, r.peers[1]) {
		t.Errorf("/readyz = %d %s; want 503 naming %v", code, body, r.peers)
	}
	var st wire.HubStatus
	if code, body := r.call("GET", "/api/v1/status", "", &st); code != http.StatusOK {
		t.Fatalf("status = %d %s, want 200", code, body)
	}
	l := st.Leadership
	want := []string{"nats://" + r.peers[0], "nats://" + r.peers[1]}
	if l == nil || l.State != wire.LeadershipWaiting || !slices.Equal(l.WaitingFor, want) || l.Leader != "" ||
		!strings.Contains(l.Waiting, r.peers[0]) {
		t.Errorf("status leadership = %+v; want state %q waiting for %v", l, wire.LeadershipWaiting, want)
	}
	if len(st.Replicas) != 1 || st.Replicas[0].Role != wire.RoleFollower || st.Replicas[0].Address != r.api {
		t.Errorf("status replicas = %+v; want this replica, a follower at %s", st.Replicas, r.api)
	}
	if !strings.Contains(st.IngestError, "NATS") {
		t.Errorf("status ingest_error = %q; want why the ingest does not run", st.IngestError)
	}
	// Reads the database backs.
	for _, path := range []string{"/api/v1/agents", "/api/v1/migrations", "/api/v1/events", "/api/v1/tokens"} {
		if code, body := r.call("GET", path, "", nil); code != http.StatusOK {
			t.Errorf("GET %s = %d %s, want 200", path, code, body)
		}
	}
	if code, body := r.call("GET", "/ui/", "", nil); code == http.StatusNotFound || code >= 500 {
		t.Errorf("GET /ui/ = %d %s; want the web UI", code, body)
	}
	// What needs JetStream: 503, saying why, at once.
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/v1/migrations", "apiVersion: godwit.dev/v1\nkind: Migration\n"},
		{"GET", "/api/v1/dlq", ""},
		{"GET", "/api/v1/sweeps", ""},
		{"GET", "/api/v1/failovergroups", ""},
	} {
		var e wire.ErrorBody
		code, body := r.call(c.method, c.path, c.body, nil)
		_ = json.Unmarshal([]byte(body), &e)
		if code != http.StatusServiceUnavailable || e.Error.Code != "unavailable" || !strings.Contains(e.Error.Message, r.peers[0]) {
			t.Errorf("%s %s = %d %s; want 503 unavailable naming the peers", c.method, c.path, code, body)
		}
	}
}

// When the peers come up, the waiting replica joins: ready, the whole API, and it leads (it is
// the only hub of its database).
func TestWaitingReplicaJoinsWhenItsPeersAnswer(t *testing.T) {
	t.Parallel()
	r := startWaitingReplica(t)
	r.checkWaiting()

	// The peers: embedded servers as the other replicas would run them, with the routes'
	// password the replica stored in the database.
	ctx := context.Background()
	st, err := postgres.Open(ctx, r.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	pw, err := st.EnsureSetting(ctx, "nats_route_password", "unused", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hubRoute := "nats://" + r.cfg.NATS.Cluster.Listen
	for i, addr := range r.peers {
		srv, err := bus.StartServer(bus.ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: agentAuth{st},
			Logger:  slog.New(slog.DiscardHandler),
			Cluster: &bus.Routes{Name: r.cfg.NATS.Cluster.Name, Listen: addr, Peers: []string{hubRoute, "nats://" + r.peers[1-i]}, User: "godwit-route", Password: pw}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Stop(ctx)
		})
	}

	deadline := time.Now().Add(90 * time.Second)
	for {
		var s wire.HubStatus
		code, _ := r.call("GET", "/readyz", "", nil)
		r.call("GET", "/api/v1/status", "", &s)
		if code == http.StatusOK && s.Leadership != nil && s.Leadership.State == "" && s.Leadership.Leader == s.Leadership.Replica {
			if len(s.Replicas) != 1 || s.Replicas[0].NATS == "" || s.Ingest == nil {
				t.Errorf("status once joined: replicas %+v, ingest %+v; want its row with its NATS identity, and the ingest", s.Replicas, s.Ingest)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not become ready and lead after its peers came up: readyz %d, leadership %+v", code, s.Leadership)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, body := r.call("GET", "/api/v1/sweeps", "", nil); code != http.StatusOK {
		t.Errorf("GET /api/v1/sweeps once joined = %d %s, want 200", code, body)
	}
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Run after SIGTERM = %v, want nil", err)
		}
		r.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("the hub did not stop")
	}
}
