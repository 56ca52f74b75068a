package bus

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

func fastReconnect(int) time.Duration { return 20 * time.Millisecond }

func TestDisconnectAgent(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	id, password := bd.agents.enroll(t)
	otherID, otherPW := bd.agents.enroll(t)

	disconnected := make(chan struct{}, 8)
	reconnected := make(chan struct{}, 8)
	a := bd.connectAgent(t, id, password,
		nats.CustomReconnectDelay(fastReconnect),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { disconnected <- struct{}{} }),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }),
	)
	a2 := bd.connectAgent(t, id, password)
	other := bd.connectAgent(t, otherID, otherPW)

	if n := bd.srv.DisconnectAgent(id); n != 2 {
		t.Fatalf("DisconnectAgent closed %d connections, want 2", n)
	}
	waitSignal(t, disconnected, "disconnect")
	// Not revoked: the agent comes back by itself.
	waitSignal(t, reconnected, "reconnect")
	if !other.IsConnected() {
		t.Fatal("another agent's connection was closed")
	}
	a2.Close()

	bd.agents.revoke(id)
	if n := bd.srv.DisconnectAgent(id); n != 1 {
		t.Fatalf("DisconnectAgent after revocation closed %d connections, want 1", n)
	}
	waitSignal(t, disconnected, "disconnect")
	// Revoked: every reconnect attempt is refused, and the client keeps trying.
	deadline := time.After(5 * time.Second)
	refusals := 0
	for refusals < 2 {
		select {
		case err := <-a.errs:
			if errors.Is(err, nats.ErrAuthorization) {
				refusals++
			}
		case <-reconnected:
			t.Fatal("a revoked agent reconnected")
		case <-deadline:
			t.Fatalf("saw %d refused reconnects, want 2", refusals)
		}
	}
	if a.IsConnected() || a.IsClosed() {
		t.Fatalf("revoked agent status %v, want reconnecting", a.Status())
	}
	if n := bd.srv.DisconnectAgent(id); n != 0 {
		t.Fatalf("DisconnectAgent of a revoked, disconnected agent closed %d", n)
	}
	if n := bd.srv.DisconnectAgent(HubUser); n != 0 {
		t.Fatalf("DisconnectAgent(%q) closed %d connections", HubUser, n)
	}
	if !bd.hub.IsConnected() || !other.IsConnected() {
		t.Fatal("hub or other agent lost its connection")
	}
}

func waitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s within 5s", what)
	}
}

func TestHubHasFullJetStream(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)

	if _, err := bd.js.AccountInfo(ctx); err != nil {
		t.Fatalf("AccountInfo: %v", err)
	}
	s, err := bd.js.CreateStream(ctx, jetstream.StreamConfig{Name: "SCRATCH", Subjects: []string{"scratch.>"}})
	if err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	ack, err := bd.js.Publish(ctx, "scratch.one", []byte("x"))
	if err != nil || ack.Sequence != 1 {
		t.Fatalf("Publish = %v, %v", ack, err)
	}
	if _, err := s.GetMsg(ctx, 1); err != nil {
		t.Fatalf("GetMsg: %v", err)
	}
	if err := bd.js.DeleteStream(ctx, "SCRATCH"); err != nil {
		t.Fatalf("DeleteStream: %v", err)
	}
	// The hub clock key lives beside the heartbeats.
	if _, err := bd.b.Heartbeats.Put(ctx, wire.HubClockKey, []byte("tick")); err != nil {
		t.Fatalf("put %s: %v", wire.HubClockKey, err)
	}
}

func TestEnsureBuckets(t *testing.T) {
	t.Parallel()
	bd := setup(t) // has run EnsureBuckets once
	ctx := testCtx(t)
	if _, err := bd.b.Desired.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}

	opts := BucketOptions{HeartbeatMaxAge: 30 * time.Second, HeartbeatMaxValueSize: 1024}
	for i := range 2 {
		b, err := EnsureBuckets(ctx, bd.js, opts)
		if err != nil {
			t.Fatalf("EnsureBuckets #%d: %v", i+2, err)
		}
		if e, err := b.Desired.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
			t.Fatalf("value lost across EnsureBuckets: %v, %v", e, err)
		}
	}

	hb := streamConfig(t, bd, "KV_"+wire.BucketHeartbeats)
	ds := streamConfig(t, bd, "KV_"+wire.BucketDesired)
	for _, c := range []jetstream.StreamConfig{hb, ds} {
		if c.MaxMsgsPerSubject != 1 || c.Storage != jetstream.FileStorage || !c.AllowDirect || c.Replicas != 1 {
			t.Errorf("%s: history %d, storage %v, direct %v, replicas %d", c.Name, c.MaxMsgsPerSubject, c.Storage, c.AllowDirect, c.Replicas)
		}
	}
	if hb.MaxAge != 30*time.Second || hb.MaxMsgSize != 1024 || hb.AllowRollup {
		t.Errorf("heartbeats: max age %s, max value %d, rollup %v", hb.MaxAge, hb.MaxMsgSize, hb.AllowRollup)
	}
	if ds.MaxAge != 0 {
		t.Errorf("desired: max age %s, want none", ds.MaxAge)
	}
	st, err := bd.b.Heartbeats.Status(ctx)
	if err != nil || st.History() != 1 || st.TTL() != 30*time.Second {
		t.Errorf("heartbeat KV status = %+v, %v", st, err)
	}

	if _, err := EnsureBuckets(ctx, bd.js, BucketOptions{Replicas: -1}); !errors.Is(err, fault.ErrInvalid) {
		t.Errorf("negative replicas: err = %v, want ErrInvalid", err)
	}
}

func streamConfig(t *testing.T, bd *bundle, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := bd.js.Stream(testCtx(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "nested", "js") // created by StartServer
	agents := &agentTable{hash: map[string]string{}, revoked: map[string]bool{}}
	srv, err := StartServer(ServerConfig{StoreDir: dir, Listen: "127.0.0.1:0", Auth: &fakeAuth{AgentCredentialFunc: agents.lookup}})
	if err != nil {
		t.Fatal(err)
	}
	if !srv.Ready() {
		t.Fatal("not Ready after StartServer")
	}
	if u := srv.ClientURL(); !strings.HasPrefix(u, "nats://127.0.0.1:") || strings.HasSuffix(u, ":0") {
		t.Fatalf("ClientURL = %q", u)
	}
	ctx := testCtx(t)
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if srv.Ready() {
		t.Fatal("Ready after Stop")
	}

	// Streams survive a restart on the same directory.
	srv, err = StartServer(ServerConfig{StoreDir: dir, Listen: "127.0.0.1:0", Auth: &fakeAuth{AgentCredentialFunc: agents.lookup}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	hub, err := srv.ConnectHub("hub")
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	js, _ := jetstream.New(hub)
	b, err := EnsureBuckets(ctx, js, BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Desired.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	_ = srv.Stop(ctx)
	srv, err = StartServer(ServerConfig{StoreDir: dir, Listen: "127.0.0.1:0", Auth: &fakeAuth{AgentCredentialFunc: agents.lookup}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	hub2, err := srv.ConnectHub("hub")
	if err != nil {
		t.Fatal(err)
	}
	defer hub2.Close()
	js2, _ := jetstream.New(hub2)
	kv, err := js2.KeyValue(ctx, wire.BucketDesired)
	if err != nil {
		t.Fatalf("bucket after restart: %v", err)
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
		t.Fatalf("value after restart: %v, %v", e, err)
	}
}

func TestStartServerValidates(t *testing.T) {
	t.Parallel()
	auth := &fakeAuth{}
	cases := []struct {
		name  string
		cfg   ServerConfig
		field string
	}{
		{"no auth", ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"}, "Auth"},
		{"no store", ServerConfig{Listen: "127.0.0.1:0", Auth: auth}, "StoreDir"},
		{"no port", ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1", Auth: auth}, "Listen"},
		{"bad port", ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:x", Auth: auth}, "Listen"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := StartServer(tc.cfg)
			var fe *fault.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a field error on %s", err, tc.field)
			}
		})
	}
}

func TestStartServerPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = StartServer(ServerConfig{StoreDir: t.TempDir(), Listen: ln.Addr().String(), Auth: &fakeAuth{}})
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("err = %v, want a listen error", err)
	}
}

func TestAgentPermissions(t *testing.T) {
	t.Parallel()
	id := "0b9c6a52-4f0e-4d5c-9a57-3f1d2e8b7c61"
	p := AgentPermissions(id)
	wantPub := []string{
		"godwit.events." + id,
		"$KV.godwit-heartbeats." + id,
		"$KV.godwit-observed." + id,
		"$JS.API.DIRECT.GET.KV_godwit-desired.$KV.godwit-desired." + id,
		"$KV.godwit-sweep-results." + id,
		"$JS.API.DIRECT.GET.KV_godwit-sweep.$KV.godwit-sweep." + id,
		"$JS.API.DIRECT.GET.KV_godwit-failover.$KV.godwit-failover." + id,
	}
	wantSub := []string{"_GODWIT_INBOX." + id + ".>", "$KV.godwit-desired." + id, "$KV.godwit-sweep." + id, "$KV.godwit-failover." + id}
	if !slices.Equal(p.Publish.Allow, wantPub) || len(p.Publish.Deny) != 0 {
		t.Errorf("publish = %+v, want allow %v", p.Publish, wantPub)
	}
	if !slices.Equal(p.Subscribe.Allow, wantSub) || len(p.Subscribe.Deny) != 0 {
		t.Errorf("subscribe = %+v, want allow %v", p.Subscribe, wantSub)
	}
	if p.Response != nil {
		t.Errorf("response permissions = %+v, want none", p.Response)
	}

	for _, bad := range []string{"", ">", "*", "hub", "a.b", strings.ToUpper(id), id + "0", "0b9c6a52_4f0e-4d5c-9a57-3f1d2e8b7c61"} {
		if ValidAgentID(bad) {
			t.Errorf("ValidAgentID(%q) = true", bad)
		}
		p := AgentPermissions(bad)
		if len(p.Publish.Allow) != 0 || !slices.Equal(p.Publish.Deny, []string{">"}) || !slices.Equal(p.Subscribe.Deny, []string{">"}) {
			t.Errorf("AgentPermissions(%q) = %+v %+v, want deny all", bad, p.Publish, p.Subscribe)
		}
	}
}
