package ui_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/ratelimit"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/ui"
	"godwit.dev/godwit/internal/wire"
)

// apiToken stores an API token with a role and returns its secret.
func (r *rig) apiToken(id string, role wire.Role, ttl time.Duration) string {
	r.t.Helper()
	secret := credential.New(credential.PrefixAPI)
	t := wire.APIToken{ID: id, Role: role, Description: string(role) + " on call", CreatedAt: r.now, ExpiresAt: time.Now().Add(ttl)}
	if err := r.store.CreateAPIToken(context.Background(), t, credential.Hash(secret)); err != nil {
		r.t.Fatal(err)
	}
	return secret
}

func (r *rig) auditRows() []wire.AuditEntry {
	r.t.Helper()
	rows, _, err := r.store.QueryAudit(context.Background(), store.AuditQuery{Limit: 1000})
	if err != nil {
		r.t.Fatal(err)
	}
	return rows
}

// A viewer's session shows no action, posts none (403, audited), and cannot open the audit page;
// an operator acts but may not purge; an admin sees the audit log. Every post is one audit row.
func TestRolesInTheUI(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	viewer := r.client()
	vcsrf := r.loginWith(viewer, r.apiToken("tok-viewer", wire.RoleViewer, time.Hour))
	_, page := r.get(viewer, "/ui/migrations/web-tls")
	if strings.Contains(page, `action="/ui/migrations/web-tls/pause"`) || !strings.Contains(page, "may watch this migration, not act on it") {
		t.Fatal("a viewer is offered migration actions")
	}
	if !strings.Contains(page, `id="session-role">viewer<`) || strings.Contains(page, `href="/ui/audit"`) {
		t.Fatal("the header does not say viewer, or offers the audit log")
	}
	_, page = r.get(viewer, "/ui/dead-letters/3")
	if strings.Contains(page, `id="replay"`) || strings.Contains(page, `id="purge"`) {
		t.Fatal("a viewer is offered replay or purge")
	}
	_, page = r.get(viewer, "/ui/dead-letters")
	if strings.Contains(page, `id="purge-all"`) {
		t.Fatal("a viewer is offered purge all")
	}
	_, page = r.get(viewer, "/ui/sweeps/none")
	if strings.Contains(page, `id="run-now"`) {
		t.Fatal("a viewer is offered run now")
	}
	before := len(r.auditRows())
	for _, path := range []string{"/ui/migrations/web-tls/pause", "/ui/dead-letters/3/replay", "/ui/dead-letters/3/purge", "/ui/dead-letters/purge", "/ui/sweeps/any/run"} {
		res, body := r.post(viewer, path, url.Values{"csrf": {vcsrf}, "confirm": {"yes"}}, nil)
		if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "Role viewer may not") {
			t.Fatalf("viewer posts %s: %s", path, res.Status)
		}
	}
	if res, _ := r.get(viewer, "/ui/audit"); res.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer opens the audit page: %s", res.Status)
	}
	if len(r.mig.taken()) != 0 || len(r.dlq.items) != 1 {
		t.Fatalf("a viewer's posts changed something: actions %v, dead letters %d", r.mig.taken(), len(r.dlq.items))
	}
	rows := r.auditRows()
	if len(rows)-before != 5 {
		t.Fatalf("%d audit rows for 5 refused posts", len(rows)-before)
	}
	for _, row := range rows[:5] {
		if row.Status != 403 || row.TokenID != "tok-viewer" || row.Role != wire.RoleViewer || row.Via != wire.ViaUI ||
			!strings.HasPrefix(row.Actor, "viewer on call (ui:") || row.Remote != "127.0.0.1" {
			t.Fatalf("audit row of a refused post: %+v", row)
		}
	}

	operator := r.client()
	ocsrf := r.loginWith(operator, r.apiToken("tok-operator", wire.RoleOperator, time.Hour))
	_, page = r.get(operator, "/ui/dead-letters/3")
	if !strings.Contains(page, `id="replay"`) || strings.Contains(page, `id="purge"`) {
		t.Fatal("an operator is not offered replay, or is offered purge")
	}
	if res, _ := r.post(operator, "/ui/migrations/web-tls/pause", url.Values{"csrf": {ocsrf}, "confirm": {"yes"}}, nil); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("operator pauses: %s", res.Status)
	}
	if res, _ := r.post(operator, "/ui/dead-letters/3/purge", url.Values{"csrf": {ocsrf}, "confirm": {"yes"}}, nil); res.StatusCode != http.StatusForbidden {
		t.Fatalf("operator purges: %s", res.Status)
	}
	if got := r.mig.taken(); len(got) != 1 || !strings.HasPrefix(got[0], "pause web-tls by ui:") {
		t.Fatalf("actions taken: %v", got)
	}
	rows = r.auditRows()
	if rows[1].Path != "/ui/migrations/web-tls/pause" || rows[1].Status != 303 || rows[1].TokenID != "tok-operator" ||
		rows[0].Path != "/ui/dead-letters/3/purge" || rows[0].Status != 403 {
		t.Fatalf("latest audit rows: %+v", rows[:2])
	}

	admin := r.client()
	r.login(admin)
	res, page := r.get(admin, "/ui/audit?actor=tok-operator")
	if res.StatusCode != http.StatusOK || !strings.Contains(page, "/ui/migrations/web-tls/pause") || strings.Contains(page, "/ui/sweeps/any/run") {
		t.Fatalf("admin's audit page filtered by the operator: %s", res.Status)
	}
	if _, page := r.get(admin, "/ui/"); !strings.Contains(page, `href="/ui/audit"`) {
		t.Fatal("an admin is not offered the audit log")
	}
	if _, page := r.get(admin, "/ui/audit?since=soon"); !strings.Contains(page, "since") {
		t.Fatal("a bad filter is not shown")
	}
}

// Revoking the token ends its sessions; an expired token cannot log in; a session never
// outlives its token.
func TestSessionsFollowTheirToken(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	r.loginWith(c, r.apiToken("tok-op", wire.RoleOperator, time.Hour))
	if res, _ := r.get(c, "/ui/agents"); res.StatusCode != http.StatusOK {
		t.Fatalf("logged in: %s", res.Status)
	}
	var expires int64
	if err := r.store.DB().QueryRow(`SELECT expires_at FROM ui_sessions WHERE token_id = 'tok-op'`).Scan(&expires); err != nil {
		t.Fatal(err)
	}
	if got := time.UnixMicro(expires); got.After(time.Now().Add(time.Hour)) {
		t.Fatalf("the session expires at %v, after its token", got)
	}
	if _, err := r.store.RevokeAPIToken(context.Background(), "tok-op", time.Now()); err != nil {
		t.Fatal(err)
	}
	if res, _ := r.get(c, "/ui/agents"); res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/ui/login") {
		t.Fatalf("after revocation: %s to %q, want the login page", res.Status, res.Header.Get("Location"))
	}
	expired := r.apiToken("tok-old", wire.RoleAdmin, -time.Minute)
	other := r.client()
	_, body := r.get(other, "/ui/login")
	res, body := r.post(other, "/ui/login", url.Values{"csrf": {csrfOf(t, body)}, "token": {expired}}, nil)
	if res.StatusCode != http.StatusUnauthorized || hasCookie(res, "godwit_session") || !strings.Contains(body, "expired") {
		t.Fatalf("login with an expired token: %s", res.Status)
	}
}

// Failed logins from one address are limited (429 with Retry-After, not audited), another
// address is not.
func TestLoginRateLimit(t *testing.T) {
	t.Parallel()
	now := time.Now()
	lim, err := ratelimit.New(ratelimit.Config{Burst: 3, Interval: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, func(c *ui.Config) {
		c.Access = api.NewAccess(api.AccessConfig{Store: c.Store, Limiter: lim,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	})
	c := r.client()
	_, body := r.get(c, "/ui/login")
	csrf := csrfOf(t, body)
	try := func(token, addr string) *http.Response {
		res, _ := r.post(c, "/ui/login", url.Values{"csrf": {csrf}, "token": {token}}, http.Header{"X-Forwarded-For": {addr}})
		return res
	}
	wrong := "gwa_" + strings.Repeat("b", 52)
	for i := range 3 {
		if res := try(wrong, "203.0.113.5"); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %s", i+1, res.Status)
		}
	}
	before := len(r.auditRows())
	if res := try(adminToken, "203.0.113.5"); res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") != "60" ||
		hasCookie(res, "godwit_session") {
		t.Fatalf("login from the failing address: %s, Retry-After %q", res.Status, res.Header.Get("Retry-After"))
	}
	if len(r.auditRows()) != before {
		t.Fatal("a rate-limited login was audited")
	}
	if res := try(adminToken, "203.0.113.6"); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("login from another address: %s", res.Status)
	}
	rows := r.auditRows()
	if rows[0].Path != "/ui/login" || rows[0].Status != 303 || rows[0].TokenID != wire.AdminTokenID || rows[0].Remote != "203.0.113.6" ||
		rows[1].Status != 401 || rows[1].TokenID != "" || rows[1].Remote != "203.0.113.5" {
		t.Fatalf("login audit rows: %+v", rows[:2])
	}
}

// An event the ingest clamped shows the agent's own time beside the listed one.
func TestClampedEventShowsTheAgentsTime(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	r.login(c)
	id := r.agent["web-1"]
	ev := wire.NewEvent(wire.AgentSource(id), wire.EventExecutionFailed, wire.SeverityError, wire.EventData{AgentID: id, Message: "from the future"})
	agentTime := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	ev.Time = agentTime
	raw, _ := json.Marshal(ev)
	ev.Time = r.now // the receipt time the ingest stores it at
	if _, err := r.store.InsertEvents(context.Background(), []store.StoredEvent{{Event: ev, Raw: raw, ReceivedAt: r.now}}, nil); err != nil {
		t.Fatal(err)
	}
	_, page := r.get(c, "/ui/agents/"+id)
	if !strings.Contains(page, "agent clock ahead: 2031-05-06 07:08:09Z") {
		t.Fatal("the clamped event does not show the agent's time")
	}
}
