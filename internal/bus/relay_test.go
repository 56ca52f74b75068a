package bus

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/wire"
)

func withRelays(c *ServerConfig) { c.Relays = true }

// connectRelay opens a relay connection whose asynchronous errors the test can inspect.
func (bd *bundle) connectRelay(t *testing.T, creds []RelayCredential) (*agentConn, error) {
	t.Helper()
	ac := &agentConn{errs: make(chan error, 64)}
	nc, err := ConnectRelay([]string{bd.srv.ClientURL()}, creds, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case ac.errs <- err:
		default:
		}
	}))
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	ac.Conn = nc
	return ac, nil
}

func TestRelayRefusedUnlessEnabled(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	id, password := bd.agents.enroll(t)
	if _, err := bd.connectRelay(t, []RelayCredential{{id, password}}); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("err = %v, want an authorization violation: relays are off by default", err)
	}
}

func TestRelayChecksEveryCredential(t *testing.T) {
	t.Parallel()
	bd := setup(t, withRelays)
	a, aPW := bd.agents.enroll(t)
	b, bPW := bd.agents.enroll(t)
	revoked, revokedPW := bd.agents.enroll(t)
	bd.agents.revoke(revoked)

	cases := []struct {
		name     string
		user     string
		password string
	}{
		{"one wrong password", RelayUser, a + ":" + aPW + "," + b + ":" + bPW + "x"},
		{"one revoked agent", RelayUser, a + ":" + aPW + "," + revoked + ":" + revokedPW},
		{"one unknown agent", RelayUser, a + ":" + aPW + "," + newAgentID(t) + ":" + bPW},
		{"an agent twice", RelayUser, a + ":" + aPW + "," + a + ":" + aPW},
		{"no password", RelayUser, a},
		{"empty", RelayUser, ""},
		{"too many agents", RelayUser, strings.Repeat(a+":"+aPW+",", MaxRelayAgents) + b + ":" + bPW},
		{"relay credentials under an agent's name", a, a + ":" + aPW},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { assertRefused(t, bd.srv.ClientURL(), tc.user, tc.password) })
	}
	if _, err := bd.connectRelay(t, []RelayCredential{{a, aPW}, {b, bPW}}); err != nil {
		t.Fatalf("valid relay refused: %v", err)
	}
}

// TestRelayOnlyItsAgentsSubjects: a relay carrying A and B acts as each of them, on their own
// keys and subjects, and is refused, like an agent, everything of agent C it does not carry.
func TestRelayOnlyItsAgentsSubjects(t *testing.T) {
	t.Parallel()
	bd := setup(t, withRelays)
	a, aPW := bd.agents.enroll(t)
	b, bPW := bd.agents.enroll(t)
	c, cPW := bd.agents.enroll(t)
	relay, err := bd.connectRelay(t, []RelayCredential{{a, aPW}, {b, bPW}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if err := EnsureStreams(ctx, bd.js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{a, b} {
		if _, err := PutHeartbeat(ctx, relay.Conn, id, wire.Heartbeat{Seq: 1}); err != nil {
			t.Fatalf("heartbeat of carried agent %s: %v", id, err)
		}
		if _, err := bd.b.Heartbeats.Get(ctx, id); err != nil {
			t.Fatalf("the hub does not see %s's heartbeat: %v", id, err)
		}
		if _, err := bd.b.Desired.Put(ctx, id, []byte("for "+id)); err != nil {
			t.Fatal(err)
		}
		got, _, err := GetDesired(ctx, relay.Conn, id)
		if err != nil || string(got) != "for "+id {
			t.Fatalf("desired state of carried agent %s = %q, %v", id, got, err)
		}
		if _, _, err := PublishEvent(ctx, relay.Conn, id, newAgentID(t), []byte(`{}`)); err != nil {
			t.Fatalf("event of carried agent %s: %v", id, err)
		}
	}

	// Everything of C is denied, as it would be to A's or B's own connection.
	if _, err := bd.b.Desired.Put(ctx, c, []byte("for C")); err != nil {
		t.Fatal(err)
	}
	if _, err := PutHeartbeat(shortCtx(t), relay.Conn, c, wire.Heartbeat{Seq: 1}); err == nil {
		t.Fatal("heartbeat for an agent the relay does not carry was accepted")
	}
	waitPermissionViolation(t, relay, wire.KVSubject(wire.BucketHeartbeats, c))
	if _, err := bd.b.Heartbeats.Get(ctx, c); err == nil {
		t.Fatal("a heartbeat of C was stored")
	}
	if _, _, err := GetDesired(shortCtx(t), relay.Conn, c); err == nil {
		t.Fatal("the relay read C's desired state")
	}
	waitPermissionViolation(t, relay, wire.KVDirectGetSubject(wire.BucketDesired, c))
	if _, err := PutObserved(shortCtx(t), relay.Conn, c, []byte(`{}`)); err == nil {
		t.Fatal("observed state for C was accepted")
	}
	waitPermissionViolation(t, relay, wire.KVSubject(wire.BucketObserved, c))
	if _, _, err := PublishEvent(shortCtx(t), relay.Conn, c, newAgentID(t), []byte(`{}`)); err == nil {
		t.Fatal("an event of C was accepted")
	}
	waitPermissionViolation(t, relay, wire.EventSubject(c))
	if _, err := WatchDesired(relay.Conn, c, func([]byte, uint64) {}); err == nil {
		_ = relay.Flush()
	}
	waitPermissionViolation(t, relay, wire.KVSubject(wire.BucketDesired, c))

	// C's own connection still works: the relay took nothing of it.
	cc := bd.connectAgent(t, c, cPW)
	if _, err := PutHeartbeat(ctx, cc.Conn, c, wire.Heartbeat{Seq: 1}); err != nil {
		t.Fatalf("C's own heartbeat: %v", err)
	}
}

func TestRelayPassword(t *testing.T) {
	t.Parallel()
	id := newAgentID(t)
	for _, tc := range []struct {
		name  string
		creds []RelayCredential
	}{
		{"none", nil},
		{"not an agent ID", []RelayCredential{{"x", "pw"}}},
		{"empty password", []RelayCredential{{id, ""}}},
		{"separator in the password", []RelayCredential{{id, "a,b"}}},
		{"too many", make([]RelayCredential, MaxRelayAgents+1)},
	} {
		if _, err := RelayPassword(tc.creds); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	// Two distinct agents: the second id must differ from the first (a fixed last digit would
	// collide with the 1 in 16 ids that already end in it).
	other := newAgentID(t)
	for other == id {
		other = newAgentID(t)
	}
	got, err := RelayPassword([]RelayCredential{{id, "gwn_a"}, {other, "gwn_b"}})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := parseRelayPassword(got)
	if err != nil || len(creds) != 2 || creds[0] != (RelayCredential{id, "gwn_a"}) {
		t.Fatalf("round trip = %+v, %v", creds, err)
	}
}
