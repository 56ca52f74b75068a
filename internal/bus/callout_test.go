package bus

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// calloutFixture is a Callout on a credential table, and a fake NATS server that signs requests.
type calloutFixture struct {
	c       *Callout
	agents  *agentTable
	keys    *CalloutKeys
	server  nkeys.KeyPair // the server's identity key
	serverX nkeys.KeyPair // the server's curve key
	now     time.Time
}

func newCalloutFixture(t testing.TB) *calloutFixture {
	t.Helper()
	is, xs := mustSeeds(t)
	keys, err := ParseCalloutKeys(is, xs)
	if err != nil {
		t.Fatal(err)
	}
	skp, _ := nkeys.CreateServer()
	sx, _ := nkeys.CreateCurveKeys()
	f := &calloutFixture{agents: &agentTable{hash: map[string]string{}, revoked: map[string]bool{}}, keys: keys,
		server: skp, serverX: sx, now: time.Now()}
	f.c = newCallout(CalloutConfig{Keys: keys, Auth: &fakeAuth{AgentCredentialFunc: f.agents.lookup},
		LookupTimeout: time.Second, Logger: discardLogger(), Now: func() time.Time { return f.now }})
	return f
}

// request builds what a server sends for a client connecting with user and password: the signed
// claim, sealed to the hub's xkey when sealed is true (then the header names the server's xkey).
func (f *calloutFixture) request(t testing.TB, user, password string, sealed bool, mod func(*jwt.AuthorizationRequestClaims)) (hdr string, data []byte, userNkey string) {
	t.Helper()
	spub, _ := f.server.PublicKey()
	sxpub, _ := f.serverX.PublicKey()
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	rc := jwt.NewAuthorizationRequestClaims(spub)
	rc.Audience = "nats-authorization-request"
	rc.UserNkey = upub
	rc.Server = jwt.ServerID{Name: "n1", ID: spub}
	if sealed {
		rc.Server.XKey = sxpub
	}
	rc.ConnectOptions = jwt.ConnectOptions{Username: user, Password: password, Protocol: 1}
	rc.Expires = time.Now().Add(5 * time.Second).Unix()
	if mod != nil {
		mod(rc)
	}
	tok, err := rc.Encode(f.server)
	if err != nil {
		t.Fatal(err)
	}
	if !sealed {
		return "", []byte(tok), upub
	}
	data, err = f.serverX.Seal([]byte(tok), f.keys.XKey())
	if err != nil {
		t.Fatal(err)
	}
	return sxpub, data, upub
}

// open decodes a response as the server would: opened when sealed, then the signed claim.
func (f *calloutFixture) open(t testing.TB, hdr string, resp []byte) *jwt.AuthorizationResponseClaims {
	t.Helper()
	if hdr != "" {
		opened, err := f.serverX.Open(resp, f.keys.XKey())
		if err != nil {
			t.Fatalf("open sealed response: %v", err)
		}
		resp = opened
	}
	rc, err := jwt.DecodeAuthorizationResponseClaims(string(resp))
	if err != nil {
		t.Fatalf("decode response: %v", err)
	}
	if rc.Issuer != f.keys.Issuer() {
		t.Fatalf("response signed by %s, want the issuer %s", rc.Issuer, f.keys.Issuer())
	}
	return rc
}

func TestCalloutAnswer(t *testing.T) {
	t.Parallel()
	f := newCalloutFixture(t)
	id, pw := f.agents.enroll(t)
	revoked, rpw := f.agents.enroll(t)
	f.agents.revoke(revoked)
	probeID := randomAgentID()
	spub, _ := f.server.PublicKey()

	for _, sealed := range []bool{false, true} {
		name := "plain"
		if sealed {
			name = "sealed"
		}
		t.Run(name, func(t *testing.T) {
			hdr, data, upub := f.request(t, id, pw, sealed, nil)
			resp, err := f.c.answer(t.Context(), hdr, data)
			if err != nil {
				t.Fatal(err)
			}
			rc := f.open(t, hdr, resp)
			if rc.Error != "" || rc.Subject != upub || rc.Audience != spub {
				t.Fatalf("response error %q subject %s audience %s; want a user for %s, to %s", rc.Error, rc.Subject, rc.Audience, upub, spub)
			}
			uc, err := jwt.DecodeUserClaims(rc.Jwt)
			if err != nil {
				t.Fatal(err)
			}
			want := AgentPermissions(id)
			if uc.Subject != upub || uc.Issuer != f.keys.Issuer() || uc.Audience != AccountAgents || uc.Name != id ||
				!slices.Equal(uc.Pub.Allow, want.Publish.Allow) || !slices.Equal(uc.Sub.Allow, want.Subscribe.Allow) ||
				len(uc.Pub.Deny)+len(uc.Sub.Deny) != 0 || !slices.Equal(uc.AllowedConnectionTypes, jwt.StringList{jwt.ConnectionTypeStandard}) ||
				uc.Limits.Subs != AgentMaxSubscriptions || uc.Limits.Payload != AgentMaxPayload {
				t.Fatalf("user claims %+v", uc)
			}
		})
	}

	refusals := []struct{ name, user, password, reason string }{
		{"wrong password", id, pw + "x", "wrong password"},
		{"empty password", id, "", "not an agent"},
		{"unknown agent", randomAgentID(), pw, "unknown agent"},
		{"revoked agent", revoked, rpw, "revoked"},
		{"not an agent ID", "godwit-hub", pw, "not an agent"},
		{"wildcard user", ">", pw, "not an agent"},
		{"probe password of another identity", id, f.keys.probe.mint(probeID, f.now), "does not verify"},
		{"forged probe password", probeID, probePrefix + "9999999999_00", "does not verify"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			hdr, data, _ := f.request(t, tc.user, tc.password, true, nil)
			resp, err := f.c.answer(t.Context(), hdr, data)
			if err != nil {
				t.Fatal(err)
			}
			rc := f.open(t, hdr, resp)
			if rc.Jwt != "" || !strings.Contains(rc.Error, tc.reason) || strings.Contains(rc.Error, tc.password+"x") {
				t.Fatalf("response jwt %q error %q; want a refusal naming %q", rc.Jwt, rc.Error, tc.reason)
			}
		})
	}

	t.Run("probe identity", func(t *testing.T) {
		hdr, data, _ := f.request(t, probeID, f.keys.probe.mint(probeID, f.now), false, nil)
		resp, err := f.c.answer(t.Context(), hdr, data)
		if err != nil {
			t.Fatal(err)
		}
		if rc := f.open(t, hdr, resp); rc.Jwt == "" {
			t.Fatalf("probe identity refused: %s", rc.Error)
		}
		// Expired: minted three minutes before now.
		hdr, data, _ = f.request(t, probeID, f.keys.probe.mint(probeID, f.now.Add(-3*time.Minute)), false, nil)
		resp, err = f.c.answer(t.Context(), hdr, data)
		if err != nil {
			t.Fatal(err)
		}
		if rc := f.open(t, hdr, resp); rc.Jwt != "" || !strings.Contains(rc.Error, "expired") {
			t.Fatalf("expired probe identity: jwt %q error %q", rc.Jwt, rc.Error)
		}
	})

	// Requests that cannot be answered at all: the server then times out and refuses.
	other, _ := nkeys.CreateServer()
	otherPub, _ := other.PublicKey()
	otherX, _ := nkeys.CreateCurveKeys()
	otherXPub, _ := otherX.PublicKey()
	dropped := []struct {
		name string
		make func() (string, []byte)
	}{
		{"not a JWT", func() (string, []byte) { return "", []byte("hello") }},
		{"sealed but no header", func() (string, []byte) { _, d, _ := f.request(t, id, pw, true, nil); return "", d }},
		{"sealed by another key than the header names", func() (string, []byte) {
			_, d, _ := f.request(t, id, pw, true, nil)
			return otherXPub, d
		}},
		{"header that is not a curve key", func() (string, []byte) { return otherPub, []byte("x") }},
		{"signed by another server than it names", func() (string, []byte) {
			h, d, _ := f.request(t, id, pw, false, func(rc *jwt.AuthorizationRequestClaims) { rc.Server.ID = otherPub })
			return h, d
		}},
		{"expired", func() (string, []byte) {
			h, d, _ := f.request(t, id, pw, false, func(rc *jwt.AuthorizationRequestClaims) { rc.Expires = time.Now().Add(-time.Minute).Unix() })
			return h, d
		}},
		{"no user nkey", func() (string, []byte) {
			h, d, _ := f.request(t, id, pw, false, func(rc *jwt.AuthorizationRequestClaims) { rc.UserNkey = "" })
			return h, d
		}},
	}
	for _, tc := range dropped {
		t.Run(tc.name, func(t *testing.T) {
			hdr, data := tc.make()
			if resp, err := f.c.answer(t.Context(), hdr, data); err == nil {
				t.Fatalf("answered %q", resp)
			}
		})
	}
}

// FuzzCalloutAnswer feeds the callout arbitrary requests. It must never panic, and must authorize
// nothing but the unaltered requests of an enrolled agent with its password.
func FuzzCalloutAnswer(f *testing.F) {
	fx := newCalloutFixture(f)
	id, pw := fx.agents.enroll(f)
	valid := map[string]bool{}
	for _, sealed := range []bool{false, true} {
		hdr, data, _ := fx.request(f, id, pw, sealed, func(rc *jwt.AuthorizationRequestClaims) { rc.Expires = 0 })
		valid[hdr+"\x00"+string(data)] = true
		f.Add(hdr, data)
		hdr, data, _ = fx.request(f, id, pw+"x", sealed, func(rc *jwt.AuthorizationRequestClaims) { rc.Expires = 0 })
		f.Add(hdr, data)
	}
	f.Add("", []byte("eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.AAAA"))
	f.Fuzz(func(t *testing.T, hdr string, data []byte) {
		resp, err := fx.c.answer(context.Background(), hdr, data)
		if err != nil {
			return
		}
		if hdr != "" && !nkeys.IsValidPublicCurveKey(hdr) {
			t.Fatalf("answered a request whose header %q is not a curve key", hdr)
		}
		raw := resp
		if hdr != "" {
			// Only the fixture's server key can open what is sealed to it; other headers were
			// checked to be curve keys the response is sealed to.
			opened, err := fx.keys.xkey.Open(resp, hdr)
			if err != nil {
				t.Fatalf("response not sealed to %s: %v", hdr, err)
			}
			raw = opened
		}
		rc, err := jwt.DecodeAuthorizationResponseClaims(string(raw))
		if err != nil {
			t.Fatalf("answer does not decode: %v", err)
		}
		if rc.Issuer != fx.keys.Issuer() {
			t.Fatalf("answer signed by %s", rc.Issuer)
		}
		if rc.Jwt != "" && !valid[hdr+"\x00"+string(data)] {
			t.Fatalf("authorized an altered request (header %q, %d bytes)", hdr, len(data))
		}
	})
}

// FuzzProbePassword: a password from a connecting client verifies as a probe password only if it
// is exactly one the key minted for that identity, within its lifetime.
func FuzzProbePassword(f *testing.F) {
	is, _ := mustSeeds(f)
	k := newProbeKey(is)
	now := time.Unix(1_800_000_000, 0)
	id := "0190f6a8-0000-4000-8000-000000000001"
	minted := k.mint(id, now)
	f.Add(id, minted)
	f.Add(id, probePrefix+"1800000120_"+strings.Repeat("0", 64))
	f.Add(id, probePrefix+"-1_x")
	f.Fuzz(func(t *testing.T, agentID, password string) {
		if k.verify(agentID, password, now) == nil && (agentID != id || password != minted) {
			t.Fatalf("verified %q for %q", password, agentID)
		}
	})
}
