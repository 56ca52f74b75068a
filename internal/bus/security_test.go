package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/wire"
)

// TestAgentCannotActAsAnother is the security boundary of principle 9: agent A's credentials can
// publish events, write a heartbeat and read desired state only as A.
func TestAgentCannotActAsAnother(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	idA, pwA := bd.agents.enroll(t)
	idB, pwB := bd.agents.enroll(t)

	if _, err := bd.b.Desired.Put(ctx, idA, []byte("desired for A")); err != nil {
		t.Fatal(err)
	}
	if _, err := bd.b.Desired.Put(ctx, idB, []byte("secret desired for B")); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var events []*nats.Msg
	evSub, err := bd.hub.Subscribe("godwit.events.>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, m)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = evSub.Unsubscribe() })
	if err := bd.hub.Flush(); err != nil {
		t.Fatal(err)
	}

	a := bd.connectAgent(t, idA, pwA)
	b := bd.connectAgent(t, idB, pwB)

	hbB, err := PutHeartbeat(ctx, b.Conn, idB, wire.Heartbeat{Seq: 1, SentAt: time.Now()})
	if err != nil {
		t.Fatalf("B's own heartbeat: %v", err)
	}

	t.Run("event as B is refused", func(t *testing.T) {
		if err := a.Publish(wire.EventSubject(idB), []byte(`{"forged":true}`)); err != nil {
			t.Fatal(err)
		}
		err := waitPermissionViolation(t, a, wire.EventSubject(idB))
		if last := a.LastError(); last == nil || !errors.Is(last, nats.ErrPermissionViolation) {
			t.Errorf("LastError = %v, want the permissions violation (async handler saw %v)", last, err)
		}
		// A's own event, published after the forged one on the same connection, is the barrier:
		// once the hub has it, the forged one would have arrived first.
		if err := a.Publish(wire.EventSubject(idA), []byte(`{"own":true}`)); err != nil {
			t.Fatal(err)
		}
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range events {
				if m.Subject == wire.EventSubject(idA) {
					return nil
				}
			}
			return errors.New("A's own event not received by the hub")
		})
		mu.Lock()
		defer mu.Unlock()
		for _, m := range events {
			if m.Subject == wire.EventSubject(idB) {
				t.Fatalf("hub received an event as B from A's connection: %q", m.Data)
			}
		}
	})

	t.Run("B's desired state is not readable by A", func(t *testing.T) {
		// A's GetDesired refuses another ID outright; the raw direct get is what an attacker sends.
		resp, err := a.RequestWithContext(shortCtx(t), wire.KVDirectGetSubject(wire.BucketDesired, idB), nil)
		if err == nil {
			t.Fatalf("A read B's key: %q", resp.Data)
		}
		waitPermissionViolation(t, a, wire.KVDirectGetSubject(wire.BucketDesired, idB))
		// Through the package, with A's connection but B's ID.
		v, _, err := GetDesired(shortCtx(t), a.Conn, idB)
		if err == nil || bytes.Contains(v, []byte("secret")) {
			t.Fatalf("GetDesired(B) on A's connection = %q, %v; want an error", v, err)
		}
		// A cannot subscribe to B's key either.
		sub, err := a.SubscribeSync(wire.KVSubject(wire.BucketDesired, idB))
		if err != nil {
			t.Fatal(err)
		}
		waitPermissionViolation(t, a, wire.KVSubject(wire.BucketDesired, idB))
		_ = sub.Unsubscribe()

		v, rev, err := GetDesired(ctx, b.Conn, idB)
		if err != nil || string(v) != "secret desired for B" || rev == 0 {
			t.Fatalf("B's GetDesired = %q, %d, %v", v, rev, err)
		}
		v, rev, err = GetDesired(ctx, a.Conn, idA)
		if err != nil || string(v) != "desired for A" || rev == 0 {
			t.Fatalf("A's GetDesired = %q, %d, %v", v, rev, err)
		}
	})

	t.Run("B's heartbeat is not writable by A", func(t *testing.T) {
		if _, err := PutHeartbeat(shortCtx(t), a.Conn, idB, wire.Heartbeat{Seq: 99}); err == nil {
			t.Fatal("PutHeartbeat as B on A's connection succeeded")
		}
		waitPermissionViolation(t, a, wire.KVSubject(wire.BucketHeartbeats, idB))
		// A's own heartbeat goes through the same stream after the attempt: the barrier.
		rev, err := PutHeartbeat(ctx, a.Conn, idA, wire.Heartbeat{Seq: 1, SentAt: time.Now()})
		if err != nil {
			t.Fatalf("A's own heartbeat: %v", err)
		}
		e, err := bd.b.Heartbeats.Get(ctx, idA)
		if err != nil || e.Revision() != rev {
			t.Fatalf("A's heartbeat entry = %v, %v; want revision %d", e, err, rev)
		}
		assertHeartbeatUnchanged(t, bd, idB, hbB)
	})

	t.Run("B's observed state is not writable by A", func(t *testing.T) {
		if _, err := PutObserved(ctx, b.Conn, idB, []byte(`{"by":"B"}`)); err != nil {
			t.Fatalf("B's own observed state: %v", err)
		}
		if _, err := PutObserved(shortCtx(t), a.Conn, idB, []byte(`{"by":"A"}`)); err == nil {
			t.Fatal("PutObserved as B on A's connection succeeded")
		}
		waitPermissionViolation(t, a, wire.KVSubject(wire.BucketObserved, idB))
		if _, err := PutObserved(ctx, a.Conn, idA, []byte(`{"by":"A"}`)); err != nil {
			t.Fatalf("A's own observed state: %v", err)
		}
		e, err := bd.b.Observed.Get(ctx, idB)
		if err != nil || string(e.Value()) != `{"by":"B"}` {
			t.Fatalf("B's observed entry = %v, %v; want B's own value", e, err)
		}
	})

	// A response goes wherever the requester's reply subject says, unchecked by permissions: in a
	// single account, these would rewrite B's keys and reach the JetStream API.
	t.Run("responses aimed at other subjects land nowhere", func(t *testing.T) {
		targets := []string{
			wire.KVSubject(wire.BucketDesired, idB),
			wire.KVSubject(wire.BucketHeartbeats, idB),
			wire.KVSubject(wire.BucketObserved, idB),
			wire.EventSubject(idB),
			"$JS.API.STREAM.PURGE.KV_" + wire.BucketHeartbeats,
			"$JS.API.STREAM.DELETE.KV_" + wire.BucketDesired,
		}
		for _, reply := range targets {
			if err := a.PublishRequest(wire.KVDirectGetSubject(wire.BucketDesired, idA), reply, nil); err != nil {
				t.Fatal(err)
			}
			if err := a.PublishRequest(wire.KVSubject(wire.BucketHeartbeats, idA), reply, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := PutHeartbeat(ctx, a.Conn, idA, wire.Heartbeat{Seq: 2}); err != nil {
			t.Fatalf("barrier heartbeat: %v", err)
		}
		if _, _, err := GetDesired(ctx, a.Conn, idA); err != nil {
			t.Fatalf("barrier get: %v", err)
		}
		assertHeartbeatUnchanged(t, bd, idB, hbB)
		v, _, err := GetDesired(ctx, b.Conn, idB)
		if err != nil || string(v) != "secret desired for B" {
			t.Fatalf("B's desired state after the attempts = %q, %v", v, err)
		}
		if _, err := bd.js.Stream(ctx, "KV_"+wire.BucketDesired); err != nil {
			t.Fatalf("desired bucket after the attempts: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, m := range events {
			if m.Subject == wire.EventSubject(idB) {
				t.Fatalf("an event as B reached the hub: %q", m.Data)
			}
		}
	})

	t.Run("a rollup header cannot erase other heartbeats", func(t *testing.T) {
		m := nats.NewMsg(wire.KVSubject(wire.BucketHeartbeats, idA))
		m.Header.Set("Nats-Rollup", "all")
		m.Data = []byte(`{}`)
		resp, err := a.RequestMsg(m, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(resp.Data), "rollup") || !strings.Contains(string(resp.Data), `"error"`) {
			t.Fatalf("rollup publish answered %q, want a rollup error", resp.Data)
		}
		assertHeartbeatUnchanged(t, bd, idB, hbB)
	})
}

func assertHeartbeatUnchanged(t *testing.T, bd *bundle, id string, rev uint64) {
	t.Helper()
	e, err := bd.b.Heartbeats.Get(testCtx(t), id)
	if err != nil {
		t.Fatalf("heartbeat of %s: %v", id, err)
	}
	if e.Revision() != rev {
		t.Fatalf("heartbeat of %s at revision %d (%q), want %d", id, e.Revision(), e.Value(), rev)
	}
}

// waitPermissionViolation waits for the asynchronous permissions violation naming subject.
func waitPermissionViolation(t *testing.T, a *agentConn, subject string) error {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-a.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), fmt.Sprintf("%q", subject)) {
				return err
			}
		case <-timeout:
			t.Fatalf("no permissions violation for %s", subject)
			return nil
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	id, password := bd.agents.enroll(t)
	revokedID, revokedPW := bd.agents.enroll(t)
	bd.agents.revoke(revokedID)

	cases := []struct {
		name, user, password string
	}{
		{"wrong password", id, password + "x"},
		{"empty password", id, ""},
		{"unknown agent", newAgentID(t), password},
		{"revoked agent", revokedID, revokedPW},
		{"hub user over the network", HubUser, bd.srv.hubSecret},
		{"wildcard user", ">", password},
		{"upper-case ID", strings.ToUpper(id), password},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(bd.srv.ClientURL(), nats.UserInfo(tc.user, tc.password))
			if err == nil {
				nc.Close()
				t.Fatal("connection accepted")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("err = %v, want an authorization violation", err)
			}
		})
	}

	t.Run("ConnectAgent reports it", func(t *testing.T) {
		_, err := ConnectAgent([]string{bd.srv.ClientURL()}, revokedID, revokedPW)
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("err = %v, want an authorization violation", err)
		}
	})

	t.Run("credential look-up fails or hangs", func(t *testing.T) {
		failing := &fakeAuth{AgentCredentialFunc: func(ctx context.Context, id string) (string, bool, error) {
			if id == revokedID {
				<-ctx.Done() // a store that hangs: the look-up timeout must end it
				return "", false, ctx.Err()
			}
			return "", false, errors.New("store down")
		}}
		srv, err := StartServer(ServerConfig{
			StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: failing, AuthLookupTimeout: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Stop(context.Background()) })
		for _, user := range []string{id, revokedID} {
			_, err = ConnectAgent([]string{srv.ClientURL()}, user, password)
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("%s: err = %v, want an authorization violation", user, err)
			}
		}
	})

	// Sanity: the same credentials do work.
	nc := bd.connectAgent(t, id, password)
	if !nc.IsConnected() {
		t.Fatal("valid agent not connected")
	}
}
