package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/pgtest"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

// fakeBus is a Bus whose behaviour each test sets.
type fakeBus struct {
	ReadyFunc      func(ctx context.Context) error
	DisconnectFunc func(id string) int
	URLs           []string
}

var _ Bus = (*fakeBus)(nil)

func (f *fakeBus) Ready(ctx context.Context) error {
	if f.ReadyFunc == nil {
		return nil
	}
	return f.ReadyFunc(ctx)
}
func (f *fakeBus) AgentURLs() []string {
	if f.URLs != nil {
		return f.URLs
	}
	return []string{"nats://127.0.0.1:7751"}
}
func (f *fakeBus) DisconnectAgent(_ context.Context, id string) (int, error) {
	if f.DisconnectFunc == nil {
		return 0, nil
	}
	return f.DisconnectFunc(id), nil
}

type bundle struct {
	api   *Server
	srv   *httptest.Server
	store store.Store
	admin string
	bus   *fakeBus
	now   time.Time
}

func setup(t *testing.T, opts ...func(*Config)) *bundle {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return setupOn(t, st, opts...)
}

// setupOn is setup on a store of the test's choosing.
func setupOn(t *testing.T, st store.Store, opts ...func(*Config)) *bundle {
	t.Helper()
	b := &bundle{store: st, admin: credential.New(credential.PrefixAdmin), bus: &fakeBus{}, now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	if _, err := st.InitAdminToken(context.Background(), credential.Hash(b.admin), b.now); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Store: st, Bus: b.bus, Logger: logging.Discard(), Registry: prometheus.NewRegistry(),
		Now: func() time.Time { return b.now }, MaxBodyBytes: 4096, HeartbeatInterval: 5 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	b.api = New(cfg)
	// Every response any test receives is checked against the OpenAPI document.
	b.srv = httptest.NewServer(LoadOpenAPI(t).CheckedHandler(t, b.api, nil))
	t.Cleanup(b.srv.Close)
	return b
}

// onBothEngines runs check on a bundle over SQLite and one over the local PostgreSQL (pgtest),
// as parallel subtests.
func onBothEngines(t *testing.T, check func(*testing.T, *bundle)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		check(t, setup(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		st, err := postgres.Open(context.Background(), pgtest.DSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		check(t, setupOn(t, st))
	})
}

// call sends a request and returns status and decoded body (into out, if not nil).
func (b *bundle) call(t *testing.T, method, path, token, body string, out any) (int, wire.ErrorBody) {
	t.Helper()
	req, _ := http.NewRequest(method, b.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: content type %q, want application/json", method, path, ct)
	}
	var eb wire.ErrorBody
	if resp.StatusCode >= 400 {
		if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
			t.Fatalf("%s %s: error body not {error:{code,message}}: %v", method, path, err)
		}
	} else if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, eb
}

func (b *bundle) token(t *testing.T, uses int, ttl string) string {
	t.Helper()
	var tr wire.CreateTokenResponse
	code, eb := b.call(t, "POST", "/api/v1/tokens", b.admin, `{"uses":`+itoa(uses)+`,"ttl":"`+ttl+`"}`, &tr)
	if code != http.StatusCreated {
		t.Fatalf("create token: %d %v", code, eb)
	}
	return tr.Token
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func (b *bundle) agentCount(t *testing.T) int {
	as, err := b.store.ListAgents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(as)
}

func TestEveryAdminRouteNeedsToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, r := range []struct{ method, path string }{
		{"GET", "/api/v1/agents"}, {"GET", "/api/v1/agents/x"}, {"POST", "/api/v1/agents/x/revoke"},
		{"GET", "/api/v1/tokens"}, {"POST", "/api/v1/tokens"}, {"DELETE", "/api/v1/tokens/x"},
	} {
		for _, tok := range []string{"", "gwa_wrong"} {
			code, eb := b.call(t, r.method, r.path, tok, `{}`, nil)
			if code != http.StatusUnauthorized || eb.Error.Code != "unauthenticated" {
				t.Errorf("%s %s token=%q: %d %q, want 401 unauthenticated", r.method, r.path, tok, code, eb.Error.Code)
			}
		}
	}
	if code, _ := b.call(t, "GET", "/api/v1/agents", b.admin, "", nil); code != http.StatusOK {
		t.Fatalf("with admin token: %d", code)
	}
}

func TestEnrollRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	once := b.token(t, 1, "1h")
	short := b.token(t, 5, "1m")
	enroll := func(tok string) (int, wire.ErrorBody) {
		return b.call(t, "POST", "/api/v1/enroll", "", `{"token":"`+tok+`","name":"n1"}`, nil)
	}
	if code, eb := enroll("gwe_unknown"); code != 401 || eb.Error.Code != "unauthenticated" {
		t.Fatalf("unknown token: %d %v", code, eb)
	}
	if code, _ := enroll(once); code != 201 {
		t.Fatalf("first use: %d", code)
	}
	if code, eb := enroll(once); code != 403 || !strings.Contains(eb.Error.Message, "used") {
		t.Fatalf("reused token: %d %v", code, eb)
	}
	b.now = b.now.Add(2 * time.Minute)
	if code, eb := enroll(short); code != 403 || !strings.Contains(eb.Error.Message, "expired") {
		t.Fatalf("expired token: %d %v", code, eb)
	}
	if n := b.agentCount(t); n != 1 {
		t.Fatalf("%d agents after refusals, want 1", n)
	}
}

func TestBadBodies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, 10, "1h")
	cases := []struct {
		name, path, auth, body string
		code                   int
		mention                string
	}{
		{"not json", "/api/v1/enroll", "", `{"token": `, 400, "not valid JSON"},
		{"empty", "/api/v1/enroll", "", ``, 400, "empty"},
		{"unknown field", "/api/v1/enroll", "", `{"token":"` + tok + `","name":"x","colour":"red"}`, 400, "colour"},
		{"wrong type", "/api/v1/enroll", "", `{"token":"` + tok + `","name":7}`, 400, "name"},
		{"trailing", "/api/v1/enroll", "", `{"token":"` + tok + `","name":"x"} {}`, 400, "after the JSON"},
		{"oversized", "/api/v1/enroll", "", `{"token":"` + tok + `","name":"` + strings.Repeat("x", 5000) + `"}`, 413, "larger than"},
		{"bad label", "/api/v1/enroll", "", `{"token":"` + tok + `","name":"x","labels":{"bad key":"v"}}`, 400, "labels"},
		{"no name", "/api/v1/enroll", "", `{"token":"` + tok + `"}`, 400, "name"},
		{"uses zero", "/api/v1/tokens", "admin", `{"uses":0,"ttl":"1h"}`, 400, "uses"},
		{"bad ttl", "/api/v1/tokens", "admin", `{"uses":1,"ttl":"tomorrow"}`, 400, "ttl"},
	}
	for _, tc := range cases {
		auth := ""
		if tc.auth == "admin" {
			auth = b.admin
		}
		code, eb := b.call(t, "POST", tc.path, auth, tc.body, nil)
		if code != tc.code || !strings.Contains(eb.Error.Message, tc.mention) {
			t.Errorf("%s: %d %q, want %d mentioning %q", tc.name, code, eb.Error.Message, tc.code, tc.mention)
		}
	}
	if n := b.agentCount(t); n != 0 {
		t.Fatalf("%d agents created by bad requests", n)
	}
	ts, _ := b.store.ListEnrollTokens(context.Background())
	if len(ts) != 1 || ts[0].Uses != 0 {
		t.Fatalf("tokens after bad requests: %+v", ts)
	}
}

func TestUnknownRoutesAndMethodsAreJSON(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if code, eb := b.call(t, "GET", "/api/v1/nothing", b.admin, "", nil); code != 404 || eb.Error.Code != "not_found" {
		t.Fatalf("unknown route: %d %v", code, eb)
	}
	if code, eb := b.call(t, "PUT", "/api/v1/agents", b.admin, "", nil); code != 405 || eb.Error.Code != "method_not_allowed" {
		t.Fatalf("wrong method: %d %v", code, eb)
	}
}

func TestRevokeDisconnectsAndEnrollReturnsCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var cut []string
	b.bus.DisconnectFunc = func(id string) int { cut = append(cut, id); return 1 }
	var er wire.EnrollResponse
	code, _ := b.call(t, "POST", "/api/v1/enroll", "", `{"token":"`+b.token(t, 1, "1h")+`","name":"edge-1","labels":{"site":"x"}}`, &er)
	if code != 201 || er.AgentID == "" || er.NATSUser != er.AgentID || !strings.HasPrefix(er.NATSPassword, credential.PrefixAgent) || er.HeartbeatInterval != "5s" {
		t.Fatalf("enroll: %d %+v", code, er)
	}
	hash, revoked, err := b.store.AgentCredential(context.Background(), er.AgentID)
	if err != nil || revoked || !credential.Matches(er.NATSPassword, hash) {
		t.Fatalf("stored credential does not match the issued password: %v %v", err, revoked)
	}
	var a wire.Agent
	if code, eb := b.call(t, "POST", "/api/v1/agents/"+er.AgentID+"/revoke", b.admin, "", &a); code != 200 || a.RevokedAt == nil {
		t.Fatalf("revoke: %d %v %+v", code, eb, a)
	}
	if len(cut) != 1 || cut[0] != er.AgentID {
		t.Fatalf("disconnect calls %v", cut)
	}
	if code, _ := b.call(t, "POST", "/api/v1/agents/nope/revoke", b.admin, "", nil); code != 404 {
		t.Fatalf("revoke unknown: %d", code)
	}
}

// An agent never gets the hub's own NATS credentials, whatever the URLs it is handed hold; a
// hub with a CA hands out tokens that pin it, and takes them back in either form.
func TestEnrollHandsOutNoHubCredentialsAndPinsTheCA(t *testing.T) {
	t.Parallel()
	fp := strings.Repeat("ab", 32)
	b := setup(t, func(c *Config) { c.CAFingerprint = fp; c.NATSCA = []byte("-----BEGIN CERTIFICATE-----") })
	b.bus.URLs = []string{"nats://godwit-hub:hub-secret@n1.example:4222", "tls://n2.example:4222"}
	tok := b.token(t, 2, "1h")
	secret, pin, err := credential.ParseEnrollToken(tok)
	if err != nil || pin != fp || secret+credential.PinSeparator+fp != tok {
		t.Fatalf("token %q: secret %q pin %q err %v; want the CA fingerprint %s", tok, secret, pin, err, fp)
	}
	for i, sent := range []string{tok, secret} {
		var er wire.EnrollResponse
		body := `{"token":"` + sent + `","name":"edge-` + itoa(i) + `"}`
		if code, eb := b.call(t, "POST", "/api/v1/enroll", "", body, &er); code != 201 {
			t.Fatalf("enroll with %q: %d %v", sent, code, eb)
		}
		if strings.Join(er.NATSURLs, " ") != "nats://n1.example:4222 tls://n2.example:4222" || er.NATSCA == "" {
			t.Fatalf("enrollment response URLs %v, CA %q", er.NATSURLs, er.NATSCA)
		}
		raw, _ := json.Marshal(er)
		if strings.Contains(string(raw), "hub-secret") || strings.Contains(string(raw), "godwit-hub") {
			t.Fatalf("enrollment response carries the hub's credentials: %s", raw)
		}
	}
	// A hub without a CA of its own hands out the bare secret.
	plain := setup(t)
	if tok := plain.token(t, 1, "1h"); strings.Contains(tok, credential.PinSeparator) {
		t.Fatalf("token of a hub without a CA: %q", tok)
	}
}

func TestReadyzReflectsStoreAndBus(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if code, _ := b.call(t, "GET", "/readyz", "", "", nil); code != 200 {
		t.Fatalf("ready: %d", code)
	}
	b.bus.ReadyFunc = func(context.Context) error { return context.DeadlineExceeded }
	resp, err := http.Get(b.srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("bus down: readyz %d, want 503", resp.StatusCode)
	}
}

// A hub replica that waits for its NATS peers serves without the parts that need JetStream:
// their routes answer 503 saying why (Pending), the status shows the wait, reads of the store
// answer. Without Pending, the 503 says only what does not run.
func TestPendingPartsAnswer503SayingWhy(t *testing.T) {
	t.Parallel()
	const why = "waiting for the other hub replicas' NATS servers (0 connected; not answering: nats://b:7752)"
	b := setup(t, func(c *Config) {
		c.Pending = func() string { return why }
		c.Leadership = func() *wire.HubLeadership {
			return &wire.HubLeadership{Replica: "a", State: wire.LeadershipWaiting, Waiting: why, WaitingFor: []string{"nats://b:7752"}}
		}
	})
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/api/v1/migrations", "kind: Migration\n"}, {"GET", "/api/v1/migrations/m", ""}, {"POST", "/api/v1/check", ""},
		{"GET", "/api/v1/dlq", ""}, {"POST", "/api/v1/agents/x/rehydrate", ""},
		{"GET", "/api/v1/sweeps", ""}, {"GET", "/api/v1/failovergroups", ""},
	} {
		code, eb := b.call(t, r.method, r.path, b.admin, r.body, nil)
		if code != http.StatusServiceUnavailable || eb.Error.Code != "unavailable" || !strings.Contains(eb.Error.Message, why) {
			t.Errorf("%s %s = %d %+v; want 503 unavailable saying %q", r.method, r.path, code, eb, why)
		}
	}
	var st wire.HubStatus
	if code, eb := b.call(t, "GET", "/api/v1/status", b.admin, "", &st); code != http.StatusOK {
		t.Fatalf("status = %d %+v", code, eb)
	}
	if st.Leadership == nil || st.Leadership.State != wire.LeadershipWaiting || st.IngestError != "event ingest not running yet: "+why {
		t.Errorf("status = %+v (leadership %+v); want the wait shown", st, st.Leadership)
	}
	for _, path := range []string{"/api/v1/agents", "/api/v1/migrations", "/api/v1/events"} {
		if code, eb := b.call(t, "GET", path, b.admin, "", nil); code != http.StatusOK {
			t.Errorf("GET %s = %d %+v, want 200", path, code, eb)
		}
	}

	plain := setup(t)
	code, eb := plain.call(t, "GET", "/api/v1/sweeps", plain.admin, "", nil)
	if code != http.StatusServiceUnavailable || eb.Error.Message != "sweep service not running" {
		t.Errorf("without Pending: %d %+v; want 503 \"sweep service not running\"", code, eb)
	}
	var pst wire.HubStatus
	if plain.call(t, "GET", "/api/v1/status", plain.admin, "", &pst); pst.IngestError != "" {
		t.Errorf("without Pending: ingest_error %q, want none", pst.IngestError)
	}
}

// GET /api/v1/agents is paged by name then id; following next_cursor lists every agent once,
// and a bad limit, cursor or parameter is refused naming it.
func TestListAgentsPages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, 10, "1h")
	var want []string
	for _, n := range []string{"delta", "alpha", "echo", "charlie", "bravo"} {
		if code, eb := b.call(t, "POST", "/api/v1/enroll", "", `{"token":"`+tok+`","name":"`+n+`"}`, nil); code != 201 {
			t.Fatalf("enroll %s: %d %v", n, code, eb)
		}
		want = append(want, n)
	}
	slices.Sort(want)
	for _, limit := range []int{1, 2, 5, 1000} {
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > len(want) {
				t.Fatalf("limit %d: paging does not end", limit)
			}
			var l wire.List[wire.Agent]
			path := fmt.Sprintf("/api/v1/agents?limit=%d", limit)
			if cursor != "" {
				path += "&cursor=" + url.QueryEscape(cursor)
			}
			if code, eb := b.call(t, "GET", path, b.admin, "", &l); code != 200 || len(l.Items) > limit {
				t.Fatalf("GET %s: %d %v, %d items", path, code, eb, len(l.Items))
			}
			for _, a := range l.Items {
				got = append(got, a.Name)
			}
			if l.NextCursor == "" {
				break
			}
			cursor = l.NextCursor
		}
		if !slices.Equal(got, want) {
			t.Errorf("limit %d: agents %v, want %v", limit, got, want)
		}
	}
	var l wire.List[wire.Agent]
	if code, _ := b.call(t, "GET", "/api/v1/agents", b.admin, "", &l); code != 200 || len(l.Items) != len(want) || l.NextCursor != "" {
		t.Fatalf("GET /api/v1/agents without a limit: %d, %d items, next %q", code, len(l.Items), l.NextCursor)
	}
	for path, field := range map[string]string{
		"/api/v1/agents?limit=0": "limit", "/api/v1/agents?limit=1001": "limit", "/api/v1/agents?limit=x": "limit",
		"/api/v1/agents?cursor=%25%25": "cursor", "/api/v1/agents?status=online": "status",
	} {
		if code, eb := b.call(t, "GET", path, b.admin, "", nil); code != 400 || !strings.Contains(eb.Error.Message, field) {
			t.Errorf("GET %s: %d %+v, want 400 naming %s", path, code, eb, field)
		}
	}
}
