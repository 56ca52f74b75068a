package bus

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Three embedded servers routed to each other form one JetStream cluster: an R3 bucket is
// placed on all three, and a write through one server is read through another.
func TestRoutesFormOneJetStreamCluster(t *testing.T) {
	t.Parallel()
	agents := &agentTable{hash: map[string]string{}, revoked: map[string]bool{}}
	auth := &fakeAuth{AgentCredentialFunc: agents.lookup}
	routes := []string{freePort(t), freePort(t), freePort(t)}
	srvs := make([]*Server, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		var peers []string
		for j, r := range routes {
			if j != i {
				peers = append(peers, "nats://"+r)
			}
		}
		wg.Go(func() {
			srvs[i], errs[i] = StartServer(ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: auth,
				Logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
				Cluster: &Routes{Listen: routes[i], Peers: peers, User: "route", Password: "secret"}})
		})
	}
	wg.Wait()
	for i, s := range srvs {
		if errs[i] != nil {
			t.Fatalf("server %d: %v", i, errs[i])
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = s.Stop(ctx)
		})
	}
	kvs := make([]jetstream.KeyValue, 3)
	deadline := time.Now().Add(60 * time.Second)
	for i, s := range srvs {
		nc, err := s.ConnectHub(fmt.Sprintf("hub-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			kvs[i], err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "r3", Replicas: 3, Storage: jetstream.FileStorage})
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("R3 bucket through server %d: %v", i, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	nc, _ := srvs[1].ConnectHub("x")
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := EnsureBuckets(ctx, js, BucketOptions{Replicas: 3, HeartbeatMaxAge: time.Hour}); err != nil {
		t.Fatalf("EnsureBuckets R3: %v", err)
	}
	if _, err := kvs[0].Create(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	e, err := kvs[2].Get(t.Context(), "k")
	if err != nil || string(e.Value()) != "v" {
		t.Fatalf("read through another server = %v, %v", e, err)
	}
	n, missing := srvs[1].PeerStatus()
	if n != 2 || len(missing) != 0 {
		t.Fatalf("PeerStatus = %d, %v; want both peers connected", n, missing)
	}

	// The stream's raft leadership moves to whichever server asks for it, and a second ask
	// where it already is changes nothing.
	ctx, cancel = context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for _, i := range []int{2, 0, 1} {
		c, err := srvs[i].ConnectHub(fmt.Sprintf("mover-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		cjs, _ := jetstream.New(c)
		name := c.ConnectedServerName()
		var leader string
		for {
			// A request that lands while the leadership moves may go unanswered: the loop
			// asks again.
			ictx, icancel := context.WithTimeout(ctx, 2*time.Second)
			_, _ = MoveStreamLeader(ictx, cjs, c, "KV_r3", name)
			st, err := cjs.Stream(ictx, "KV_r3")
			var info *jetstream.StreamInfo
			if err == nil {
				info, err = st.Info(ictx)
			}
			icancel()
			if err == nil {
				if leader = info.Cluster.Leader; leader == name {
					break
				}
			}
			select {
			case <-ctx.Done():
				t.Fatalf("the stream is led by %q, want %s", leader, name)
			case <-time.After(200 * time.Millisecond):
			}
		}
		if leader, err := MoveStreamLeader(ctx, cjs, c, "KV_r3", name); leader != name || err != nil {
			t.Fatalf("asking again where it already leads = %q, %v; want %s", leader, err, name)
		}
		c.Close()
	}
}

// A server whose peers never answer names them: the hub logs and shows whom it waits for.
func TestPeerStatusNamesPeersThatDoNotAnswer(t *testing.T) {
	t.Parallel()
	agents := &agentTable{hash: map[string]string{}, revoked: map[string]bool{}}
	silent := []string{"nats://" + freePort(t), "nats://" + freePort(t)}
	srv, err := StartServer(ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: &fakeAuth{AgentCredentialFunc: agents.lookup},
		Logger:  slog.New(slog.DiscardHandler),
		Cluster: &Routes{Listen: freePort(t), Peers: silent, User: "route", Password: "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
	})
	n, missing := srv.PeerStatus()
	if n != 0 || len(missing) != 2 || missing[0] != silent[0] || missing[1] != silent[1] {
		t.Fatalf("PeerStatus = %d, %v; want none connected and both %v missing", n, missing, silent)
	}
}

// The hub replicas' embedded servers form one cluster, and an agent may be connected to any of
// them: revocation, asked of one replica, closes the agent's connections on every server.
func TestDisconnectAgentReachesEveryRoutedServer(t *testing.T) {
	t.Parallel()
	agents := &agentTable{hash: map[string]string{}, revoked: map[string]bool{}}
	auth := &fakeAuth{AgentCredentialFunc: agents.lookup}
	routes := []string{freePort(t), freePort(t)}
	srvs := make([]*Server, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range srvs {
		wg.Go(func() {
			srvs[i], errs[i] = StartServer(ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: auth,
				Logger:  slog.New(slog.DiscardHandler),
				Cluster: &Routes{Listen: routes[i], Peers: []string{"nats://" + routes[1-i]}, User: "route", Password: "secret"}})
		})
	}
	wg.Wait()
	for i, s := range srvs {
		if errs[i] != nil {
			t.Fatalf("server %d: %v", i, errs[i])
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = s.Stop(ctx)
		})
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if n, _ := srvs[0].PeerStatus(); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the servers did not route to each other")
		}
		time.Sleep(50 * time.Millisecond)
	}
	id, pw := agents.enroll(t)
	closed := make(chan struct{})
	nc, err := ConnectAgent([]string{srvs[1].ClientURL()}, id, pw, nats.NoReconnect(),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	agents.revoke(id)
	if n := srvs[0].DisconnectAgent(id); n != 1 {
		t.Errorf("DisconnectAgent through the other server closed %d connections, want 1", n)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked agent's connection to the other server is still open")
	}
}
