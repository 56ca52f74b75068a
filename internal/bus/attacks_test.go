package bus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/bus/bustest"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// credentials is an in-memory bus.Authenticator.
type credentials struct {
	mu      sync.Mutex
	hash    map[string]string
	revoked map[string]bool
}

func newCredentials() *credentials {
	return &credentials{hash: map[string]string{}, revoked: map[string]bool{}}
}

func (c *credentials) AgentCredential(_ context.Context, id string) (string, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.hash[id]
	if !ok {
		return "", false, fmt.Errorf("agent %s: %w", id, fault.ErrNotFound)
	}
	return h, c.revoked[id], nil
}

func (c *credentials) enroll() bustest.Agent {
	a := bustest.Agent{ID: uuid.NewString(), Password: credential.New(credential.PrefixAgent)}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hash[a.ID] = credential.Hash(a.Password)
	return a
}

func (c *credentials) revoke(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.revoked[id] = true
}

// topology is a running bus with its hub connection and the call that cuts an agent's connections.
type topology struct {
	keys       *bus.CalloutKeys // callout only
	urls       []string
	hub        *nats.Conn
	js         jetstream.JetStream
	disconnect func(ctx context.Context, id string) (int, error)
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// embedded is the default topology: the hub's embedded server with its authenticator.
func embedded(t *testing.T, creds *credentials) topology {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: creds, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	hub, err := srv.ConnectHub("test-hub")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	return topology{urls: []string{srv.ClientURL()}, hub: hub, disconnect: func(_ context.Context, id string) (int, error) {
		return srv.DisconnectAgent(id), nil
	}}
}

// callout is the external topology on an in-process nats-server configured as docs/security.md
// says, with the hub's auth callout (internal/hub runs the same table against a separate process
// with the real hub and agents).
func callout(t *testing.T, creds *credentials) topology {
	t.Helper()
	keys := newKeys(t)
	conf := fmt.Sprintf("listen: 127.0.0.1:-1\njetstream {store_dir: %q}\n", t.TempDir()) +
		bustest.DocsClusterConfig(t, bus.ClusterParams{Issuer: keys.Issuer(), XKey: keys.XKey(), HubPassword: "hub-pw", SystemPassword: "sys-pw"})
	url := startConfigured(t, conf)
	hub, err := nats.Connect(url, nats.UserInfo(bus.ClusterHubUser, "hub-pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	co, err := bus.StartCallout(bus.CalloutConfig{Conn: hub, Keys: keys, Auth: creds, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = co.Stop(context.Background()) })
	sys, err := nats.Connect(url, nats.UserInfo(bus.ClusterSystemUser, "sys-pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Close)
	sc := bus.NewSystemClient(sys)
	return topology{keys: keys, urls: []string{url}, hub: hub, disconnect: sc.DisconnectAgent}
}

func newKeys(t *testing.T) *bus.CalloutKeys {
	t.Helper()
	store := map[string]string{}
	keys, err := bus.LoadCalloutKeys(t.Context(), func(_ context.Context, k, v string) (string, error) {
		if old, ok := store[k]; ok {
			return old, nil
		}
		store[k] = v
		return v, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// startConfigured runs an in-process nats-server from a configuration text.
func startConfigured(t *testing.T, conf string) string {
	t.Helper()
	opts := &server.Options{}
	if err := opts.ProcessConfigString(conf); err != nil {
		t.Fatalf("configuration: %v\n%s", err, conf)
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns.ClientURL()
}

func (tp *topology) prepare(t *testing.T) {
	t.Helper()
	js, err := jetstream.New(tp.hub)
	if err != nil {
		t.Fatal(err)
	}
	tp.js = js
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := bus.EnsureBuckets(ctx, js, bus.BucketOptions{HeartbeatMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (tp *topology) target(t *testing.T, creds *credentials) bustest.Target {
	t.Helper()
	tg := bustest.Target{Hub: tp.hub, JS: tp.js, A: creds.enroll(), B: creds.enroll(),
		Connect: func(_ *testing.T, id, pw string, opts ...nats.Option) (*nats.Conn, error) {
			return bus.ConnectAgent(tp.urls, id, pw, opts...)
		}}
	b, err := bus.ConnectAgent(tp.urls, tg.B.ID, tg.B.Password)
	if err != nil {
		t.Fatalf("connect as B: %v", err)
	}
	defer b.Close()
	if _, err := bus.PutHeartbeat(t.Context(), b, tg.B.ID, wire.Heartbeat{Seq: 1, SentAt: time.Now()}); err != nil {
		t.Fatalf("B's own heartbeat: %v", err)
	}
	return tg
}

var topologies = []struct {
	name  string
	start func(*testing.T, *credentials) topology
}{{"embedded", embedded}, {"callout", callout}}

// TestAttacks is the security boundary of principle 9, on both topologies: agent A's credentials
// can act only as A.
func TestAttacks(t *testing.T) {
	t.Parallel()
	for _, top := range topologies {
		t.Run(top.name, func(t *testing.T) {
			t.Parallel()
			creds := newCredentials()
			tp := top.start(t, creds)
			tp.prepare(t)
			bustest.RunAttacks(t, tp.target(t, creds))
		})
	}
}

// One agent connection is bounded by the server, on both topologies.
func TestAgentConnectionLimits(t *testing.T) {
	t.Parallel()
	for _, top := range topologies {
		t.Run(top.name, func(t *testing.T) {
			t.Parallel()
			creds := newCredentials()
			tp := top.start(t, creds)
			tp.prepare(t)
			bustest.Limits(t, tp.target(t, creds))
		})
	}
}

func TestRevocation(t *testing.T) {
	t.Parallel()
	for _, top := range topologies {
		t.Run(top.name, func(t *testing.T) {
			t.Parallel()
			creds := newCredentials()
			tp := top.start(t, creds)
			tp.prepare(t)
			tg := tp.target(t, creds)
			bustest.Revocation(t, tg, func(t *testing.T) {
				creds.revoke(tg.A.ID)
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				if n, err := tp.disconnect(ctx, tg.A.ID); err != nil || n != 1 {
					t.Fatalf("disconnect A = %d, %v; want 1 connection closed", n, err)
				}
			})
		})
	}
}

// The block of docs/security.md is what bus.ClusterConfig makes: the docs cannot drift from the
// subjects the code uses.
func TestDocsClusterConfig(t *testing.T) {
	t.Parallel()
	if got, want := bustest.DocsClusterConfigRaw(t), bus.ClusterConfig(bus.ClusterPlaceholders); got != want {
		t.Fatalf("docs/security.md's cluster configuration differs from bus.ClusterConfig:\n--- docs\n%s\n--- code\n%s", got, want)
	}
}

// The probe refuses clusters that do not isolate agents, and says which check failed.
func TestProbeRefuses(t *testing.T) {
	t.Parallel()
	creds := newCredentials()
	keys := newKeys(t)
	full := bus.ClusterConfig(bus.ClusterParams{Issuer: keys.Issuer(), XKey: keys.XKey(), HubPassword: "hub-pw", SystemPassword: "sys-pw"})
	noCallout := full[:strings.Index(full, "authorization {")]
	cases := []struct {
		name, conf, want string
	}{
		// No authentication: everyone, the probe included, lands in one account with every right.
		{"no authentication", "", "was allowed to"},
		{"accounts without the callout", noCallout, "could not connect"},
		{"callout with another issuer", strings.Replace(full, keys.Issuer(), newKeys(t).Issuer(), 1), "could not connect"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := startConfigured(t, fmt.Sprintf("listen: 127.0.0.1:-1\njetstream {store_dir: %q}\n", t.TempDir())+tc.conf)
			hub, err := nats.Connect(url, nats.UserInfo(bus.ClusterHubUser, "hub-pw"))
			if err != nil {
				t.Fatal(err)
			}
			defer hub.Close()
			co, err := bus.StartCallout(bus.CalloutConfig{Conn: hub, Keys: keys, Auth: creds, Logger: discard()})
			if err != nil {
				t.Fatal(err)
			}
			defer co.Stop(context.Background())
			sys, err := nats.Connect(url, nats.UserInfo(bus.ClusterSystemUser, "sys-pw"))
			if err != nil {
				t.Fatal(err)
			}
			defer sys.Close()
			tp := topology{hub: hub}
			tp.prepare(t)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			err = bus.Probe(ctx, bus.ProbeConfig{URLs: []string{url}, Keys: keys, System: bus.NewSystemClient(sys)})
			if !errors.Is(err, bus.ErrNotEnforced) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Probe = %v, want ErrNotEnforced saying %q", err, tc.want)
			}
		})
	}
	t.Run("as documented", func(t *testing.T) {
		t.Parallel()
		tp := callout(t, creds)
		tp.prepare(t)
		sys, err := nats.Connect(tp.urls[0], nats.UserInfo(bus.ClusterSystemUser, "sys-pw"))
		if err != nil {
			t.Fatal(err)
		}
		defer sys.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		if err := bus.Probe(ctx, bus.ProbeConfig{URLs: tp.urls, Keys: tp.keys, System: bus.NewSystemClient(sys)}); err != nil {
			t.Fatalf("Probe of the documented configuration: %v", err)
		}
	})
}

// Hub replicas on one database load the same keys, and any of them answers the callout: with one
// replica gone the others still let agents in; with none, nobody gets in.
func TestCalloutAnyReplica(t *testing.T) {
	t.Parallel()
	creds := newCredentials()
	var mu sync.Mutex
	settings := map[string]string{}
	ensure := func(_ context.Context, k, v string) (string, error) { // store.EnsureSetting's contract
		mu.Lock()
		defer mu.Unlock()
		if old, ok := settings[k]; ok {
			return old, nil
		}
		settings[k] = v
		return v, nil
	}
	var keys [2]*bus.CalloutKeys
	for i := range keys {
		k, err := bus.LoadCalloutKeys(t.Context(), ensure)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	if keys[0].Issuer() != keys[1].Issuer() || keys[0].XKey() != keys[1].XKey() {
		t.Fatal("two replicas on one store have different callout keys")
	}
	url := startConfigured(t, fmt.Sprintf("listen: 127.0.0.1:-1\njetstream {store_dir: %q}\n", t.TempDir())+
		bustest.DocsClusterConfig(t, bus.ClusterParams{Issuer: keys[0].Issuer(), XKey: keys[0].XKey(), HubPassword: "hub-pw", SystemPassword: "sys-pw"}))
	var callouts [2]*bus.Callout
	for i := range callouts {
		hub, err := nats.Connect(url, nats.UserInfo(bus.ClusterHubUser, "hub-pw"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(hub.Close)
		if callouts[i], err = bus.StartCallout(bus.CalloutConfig{Conn: hub, Keys: keys[i], Auth: creds, Logger: discard()}); err != nil {
			t.Fatal(err)
		}
	}
	a := creds.enroll()
	connect := func() error {
		nc, err := bus.ConnectAgent([]string{url}, a.ID, a.Password, nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
		}
		return err
	}
	for i := range 10 {
		if err := connect(); err != nil {
			t.Fatalf("connection %d with two replicas: %v", i, err)
		}
	}
	if err := callouts[0].Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := connect(); err != nil {
			t.Fatalf("connection %d with one replica left: %v", i, err)
		}
	}
	if err := callouts[1].Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The server waits for an answer that never comes; the client gives up first.
	if err := connect(); err == nil {
		t.Fatal("an agent got in with no replica answering the callout")
	}
}
