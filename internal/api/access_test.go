package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/ratelimit"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// apiToken makes an API token with the admin token and returns its secret and record.
func (b *bundle) apiToken(t *testing.T, role wire.Role, ttl string) (string, wire.APIToken) {
	t.Helper()
	var tr wire.CreateAPITokenResponse
	body := fmt.Sprintf(`{"role":%q,"ttl":%q,"description":"%s token"}`, role, ttl, role)
	if code, eb := b.call(t, "POST", "/api/v1/api-tokens", b.admin, body, &tr); code != http.StatusCreated {
		t.Fatalf("create %s token: %d %v", role, code, eb)
	}
	return tr.Token, tr.APIToken
}

// operation is one operation of the OpenAPI document as a request the tests can send.
type operation struct {
	method, path string // path with its parameters filled in
	route        string // "METHOD /api/v1/…" as registered
	role         string // x-godwit-role; empty for public operations
	public       bool
}

// operations walks every operation of openapi.yaml.
func operations(t *testing.T) []operation {
	t.Helper()
	doc := LoadOpenAPI(t).Doc
	fill := strings.NewReplacer("{seq}", "7", "{id}", "x", "{name}", "x", "{action}", "pause")
	var out []operation
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			o := operation{method: method, path: "/api/v1" + fill.Replace(path), route: method + " /api/v1" + path}
			if raw, ok := op.Extensions["x-godwit-role"]; ok {
				switch v := raw.(type) {
				case string:
					o.role = v
				case json.RawMessage:
					_ = json.Unmarshal(v, &o.role)
				default:
					o.role = fmt.Sprint(v)
				}
			}
			o.public = op.Security != nil && (len(*op.Security) == 0 || (*op.Security)[0]["agent"] != nil)
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].route < out[j].route })
	if len(out) < 30 {
		t.Fatalf("only %d operations in openapi.yaml", len(out))
	}
	return out
}

// Every registered route has a role in the one table, or is public; a route added without one
// fails here (it would need the admin role meanwhile).
func TestEveryRouteHasARole(t *testing.T) {
	t.Parallel()
	h := setup(t).api
	for _, p := range h.patterns {
		_, inTable := routeRoles[p]
		if inTable == publicRoutes[p] {
			t.Errorf("route %s: in routeRoles %v, public %v; want exactly one (add it to routeRoles in roles.go)", p, inTable, publicRoutes[p])
		}
	}
	pattern := regexp.MustCompile(`^(GET|POST|DELETE|PUT|PATCH) /api/v1(/[a-z-]+|/\{[a-z]+\})+$`)
	for route, role := range routeRoles {
		if !pattern.MatchString(route) || !role.Valid() {
			t.Errorf("routeRoles[%q] = %q: not a route pattern with a role", route, role)
		}
	}
	if need, public := RoleFor("POST /api/v1/something-new"); need != wire.RoleAdmin || public {
		t.Errorf("a route missing from the table needs %q (public %v), want admin", need, public)
	}
}

// The document names each operation's role as the table does, so generated clients and readers
// see the same rule the hub applies.
func TestOpenAPIRolesMatchTheTable(t *testing.T) {
	t.Parallel()
	for _, o := range operations(t) {
		if o.route == "GET /api/v1/openapi.yaml" {
			continue
		}
		need, public := RoleFor(o.route)
		if public != o.public || (!public && string(need) != o.role) {
			t.Errorf("%s: openapi says role %q public %v; the table says %q public %v", o.route, o.role, o.public, need, public)
		}
	}
}

// Walking every operation of the document: each role gets 403 exactly where it does not reach
// the operation's role (a viewer on every mutating route, an operator on every admin route),
// and an expired or revoked token gets 401 everywhere.
func TestRolesOnEveryOperation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tokens := map[string]wire.Role{b.admin: wire.RoleAdmin}
	for _, role := range wire.Roles {
		tok, _ := b.apiToken(t, role, "1h")
		tokens[tok] = role
	}
	expired, _ := b.apiToken(t, wire.RoleAdmin, "1m")
	revoked, rec := b.apiToken(t, wire.RoleAdmin, "1h")
	if code, eb := b.call(t, "POST", "/api/v1/api-tokens/"+rec.ID+"/revoke", b.admin, "", nil); code != 200 {
		t.Fatalf("revoke: %d %v", code, eb)
	}
	b.now = b.now.Add(2 * time.Minute) // the 1m token expires; the 1h ones do not
	mutating := 0
	for _, o := range operations(t) {
		if o.public || o.route == "GET /api/v1/openapi.yaml" {
			continue
		}
		need := wire.Role(o.role)
		if o.method != http.MethodGet {
			mutating++
			if need == wire.RoleViewer {
				t.Errorf("%s changes something but needs only viewer", o.route)
			}
		}
		for tok, role := range tokens {
			code, eb := b.call(t, o.method, o.path, tok, `{}`, nil)
			switch {
			case !role.Allows(need) && (code != http.StatusForbidden || eb.Error.Code != "forbidden" || !strings.Contains(eb.Error.Message, string(need))):
				t.Errorf("%s as %s: %d %v, want 403 naming %s", o.route, role, code, eb, need)
			case role.Allows(need) && (code == http.StatusForbidden || code == http.StatusUnauthorized):
				t.Errorf("%s as %s: %d %v, want it let through", o.route, role, code, eb)
			}
		}
		for name, tok := range map[string]string{"expired": expired, "revoked": revoked} {
			code, eb := b.call(t, o.method, o.path, tok, `{}`, nil)
			if code != http.StatusUnauthorized || !strings.Contains(eb.Error.Message, name) {
				t.Errorf("%s with an %s token: %d %v, want 401 saying %s", o.route, name, code, eb, name)
			}
		}
	}
	if mutating < 15 {
		t.Fatalf("only %d mutating operations walked", mutating)
	}
}

// One audit row per call of a method other than GET — successful, refused by role, refused for
// its token or its input — and none for reads, each with who, what, the outcome and from where.
func TestAuditOneRowPerMutatingCall(t *testing.T) {
	t.Parallel()
	b := setup(t)
	viewer, vrec := b.apiToken(t, wire.RoleViewer, "1h")
	operator, orec := b.apiToken(t, wire.RoleOperator, "1h")
	before := b.audit(t, store.AuditQuery{})
	type step struct {
		method, path, token, body string
		code                      int
		who                       string // token id expected in the row
		role                      wire.Role
	}
	script := []step{
		{"GET", "/api/v1/agents", viewer, "", 200, "", ""},
		{"POST", "/api/v1/tokens", b.admin, `{"uses":1,"ttl":"1h","description":"rack 4"}`, 201, wire.AdminTokenID, wire.RoleAdmin},
		{"POST", "/api/v1/tokens", viewer, `{"uses":1,"ttl":"1h"}`, 403, vrec.ID, wire.RoleViewer},
		{"GET", "/api/v1/tokens", operator, "", 403, "", ""},
		{"POST", "/api/v1/check", operator, "", 503, orec.ID, wire.RoleOperator}, // no controller in this bundle
		{"DELETE", "/api/v1/dlq/3", operator, "", 403, orec.ID, wire.RoleOperator},
		{"POST", "/api/v1/agents/nope/revoke", b.admin, "", 404, wire.AdminTokenID, wire.RoleAdmin},
		{"POST", "/api/v1/tokens", "", `{"uses":1,"ttl":"1h"}`, 401, "", ""},
		{"POST", "/api/v1/api-tokens", b.admin, `{"role":"root","ttl":"1h"}`, 400, wire.AdminTokenID, wire.RoleAdmin},
		{"GET", "/api/v1/status", viewer, "", 200, "", ""},
		{"POST", "/api/v1/enroll", "", `{"token":"gwe_nope","name":"x"}`, 401, "", ""},
		{"GET", "/api/v1/audit", operator, "", 403, "", ""},
	}
	var want []step
	for _, s := range script {
		code, eb := b.call(t, s.method, s.path, s.token, s.body, nil)
		if code != s.code {
			t.Fatalf("%s %s: %d %v, want %d", s.method, s.path, code, eb, s.code)
		}
		if s.method != "GET" {
			want = append(want, s)
		}
	}
	rows := b.audit(t, store.AuditQuery{})
	rows = rows[:len(rows)-len(before)]
	if len(rows) != len(want) {
		t.Fatalf("%d audit rows for %d mutating calls:\n%+v", len(rows), len(want), rows)
	}
	for i, s := range want {
		r := rows[len(rows)-1-i] // newest first
		if r.Method != s.method || r.Path != s.path || r.Status != s.code || r.TokenID != s.who || r.Role != s.role ||
			r.Remote != "127.0.0.1" || r.Via != wire.ViaAPI || r.Time.IsZero() || !strings.HasPrefix(r.Route, s.method+" /api/v1/") {
			t.Errorf("row %d = %+v; want %s %s → %d by %q (%s) from 127.0.0.1", i, r, s.method, s.path, s.code, s.who, s.role)
		}
	}
	// What the path does not say is in the target; the token's description is its actor.
	if r := rows[len(rows)-1]; !strings.HasPrefix(r.Target, "enrollment token ") || r.Actor != wire.AdminTokenID {
		t.Errorf("token creation row: target %q actor %q", r.Target, r.Actor)
	}
	if r := rows[len(rows)-2]; r.Actor != "viewer token" {
		t.Errorf("viewer's row: actor %q, want the token's description", r.Actor)
	}
	// Filters: the operator's calls, and calls on a path.
	if got := b.audit(t, store.AuditQuery{Actor: orec.ID}); len(got) != 2 {
		t.Errorf("audit by the operator: %d rows, want 2", len(got))
	}
	var page wire.List[wire.AuditEntry]
	if code, eb := b.call(t, "GET", "/api/v1/audit?action="+strings.ReplaceAll("POST /api/v1/tokens", " ", "%20")+"&limit=1", b.admin, "", &page); code != 200 ||
		len(page.Items) != 1 || page.NextCursor == "" || page.Items[0].Status != 401 {
		t.Fatalf("GET /audit?action=…&limit=1: %d %v %+v", code, eb, page)
	}
	if code, eb := b.call(t, "GET", "/api/v1/audit?since=soon", b.admin, "", nil); code != 400 || !strings.HasPrefix(eb.Error.Message, "since") {
		t.Fatalf("bad since: %d %v", code, eb)
	}
}

func (b *bundle) audit(t *testing.T, q store.AuditQuery) []wire.AuditEntry {
	t.Helper()
	q.Limit = 1000
	rows, _, err := b.store.QueryAudit(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// limitedBundle is a bundle whose API sits behind a trusted proxy (so tests choose the client
// address with X-Forwarded-For) and limits failures to burst per address.
func limitedBundle(t *testing.T, burst int) (*bundle, *clockBox, *prometheus.Registry) {
	t.Helper()
	clock := &clockBox{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	lim, err := ratelimit.New(ratelimit.Config{Burst: burst, Interval: 10 * time.Second, Now: clock.get})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	b := setup(t, func(c *Config) {
		c.Registry = reg
		c.Access = NewAccess(AccessConfig{Store: c.Store, Limiter: lim, Registry: reg, Logger: logging.Discard(),
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Now: clock.get})
	})
	return b, clock, reg
}

type clockBox struct{ now time.Time }

func (c *clockBox) get() time.Time { return c.now }

func from(addr string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("X-Forwarded-For", addr) }
}

// After burst failed attempts from one address, that address gets 429 with Retry-After — for a
// good token too, and for enrollment — while another address does not; once the wait is over it
// may try again. 429s are counted, not audited.
func TestRateLimitPerAddress(t *testing.T) {
	t.Parallel()
	const burst = 4
	b, clock, reg := limitedBundle(t, burst)
	bad := "gwt_" + strings.Repeat("a", 52)
	for i := range burst {
		if code, _ := b.callWith(t, "GET", "/api/v1/agents", bad, "", from("192.0.2.1")); code != 401 {
			t.Fatalf("failure %d: %d, want 401", i+1, code)
		}
	}
	auditBefore := len(b.audit(t, store.AuditQuery{}))
	for _, c := range []struct{ method, path, token, body string }{
		{"GET", "/api/v1/agents", bad, ""},
		{"GET", "/api/v1/agents", b.admin, ""},
		{"POST", "/api/v1/check", b.admin, ""},
		{"POST", "/api/v1/enroll", "", `{"token":"gwe_x","name":"n"}`},
	} {
		resp := b.raw(t, c.method, c.path, c.token, c.body, from("192.0.2.1"))
		if resp.code != 429 || resp.header.Get("Retry-After") != "10" || resp.eb.Error.Code != "rate_limited" {
			t.Fatalf("%s %s from the failing address: %d Retry-After %q %v; want 429, 10", c.method, c.path, resp.code, resp.header.Get("Retry-After"), resp.eb)
		}
	}
	if n := len(b.audit(t, store.AuditQuery{})); n != auditBefore {
		t.Fatalf("%d audit rows written by refused calls", n-auditBefore)
	}
	// Another address, and the same one on IPv6 elsewhere, are not limited.
	if code, _ := b.callWith(t, "GET", "/api/v1/agents", bad, "", from("192.0.2.2")); code != 401 {
		t.Fatalf("another address: %d, want 401", code)
	}
	if code, _ := b.callWith(t, "GET", "/api/v1/agents", b.admin, "", from("2001:db8::1")); code != 200 {
		t.Fatalf("an IPv6 address: %d, want 200", code)
	}
	clock.now = clock.now.Add(4 * time.Second)
	if resp := b.raw(t, "GET", "/api/v1/agents", b.admin, "", from("192.0.2.1")); resp.code != 429 || resp.header.Get("Retry-After") != "6" {
		t.Fatalf("4s later: %d, Retry-After %q; want 429, 6", resp.code, resp.header.Get("Retry-After"))
	}
	clock.now = clock.now.Add(6 * time.Second)
	if code, _ := b.callWith(t, "GET", "/api/v1/agents", b.admin, "", from("192.0.2.1")); code != 200 {
		t.Fatalf("after the wait: %d, want 200", code)
	}
	for _, m := range []struct {
		name, via string
		want      float64
	}{
		{"godwit_auth_rate_limited_total", "api", 4},
		{"godwit_auth_rate_limited_total", "enroll", 1},
		{"godwit_auth_failures_total", "api", burst + 1},
		{"godwit_auth_limiter_addresses", "", 2},
	} {
		if got := gathered(t, reg, m.name, m.via); got != m.want {
			t.Errorf("%s{via=%q} = %v, want %v", m.name, m.via, got, m.want)
		}
	}
}

// X-Forwarded-For is believed only from a trusted proxy, and only the entries trusted proxies
// appended: a client cannot choose its own address.
func TestClientAddress(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:f::/48")}
	a := NewAccess(AccessConfig{TrustedProxies: trusted})
	none := NewAccess(AccessConfig{})
	cases := []struct {
		remote string
		xff    []string
		want   string
		access *Access
	}{
		{"192.0.2.9:5000", nil, "192.0.2.9", a},
		{"192.0.2.9:5000", []string{"198.51.100.1"}, "192.0.2.9", a}, // not from a proxy: ignored
		{"10.1.1.1:5000", []string{"198.51.100.1"}, "198.51.100.1", a},
		{"10.1.1.1:5000", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1", a},       // the client's own claim is left of what the proxy appended
		{"10.1.1.1:5000", []string{"198.51.100.1, 10.2.2.2"}, "198.51.100.1", a},      // two proxies
		{"10.1.1.1:5000", []string{"198.51.100.1", "10.2.2.2"}, "198.51.100.1", a},    // in two headers
		{"10.1.1.1:5000", []string{"garbage, 10.2.2.2"}, "10.2.2.2", a},               // stops at what no proxy wrote
		{"10.1.1.1:5000", nil, "10.1.1.1", a},                                         // a proxy with no header
		{"[2001:db8:f::1]:443", []string{"2001:db8:1::7"}, "2001:db8:1::7", a},        // IPv6 proxy
		{"[::ffff:10.1.1.1]:443", []string{"::ffff:198.51.100.1"}, "198.51.100.1", a}, // mapped addresses
		{"10.1.1.1:5000", []string{"198.51.100.1"}, "10.1.1.1", none},                 // no trusted proxies: never
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := c.access.Client(r).String(); got != c.want {
			t.Errorf("Client(%s, %q) = %s, want %s", c.remote, c.xff, got, c.want)
		}
	}
}

// API tokens: made only with a known role and an expiry, shown once, listed without secrets,
// revoked for good; a token's description is checked like all free text.
func TestAPITokens(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for body, field := range map[string]string{
		`{"role":"superuser","ttl":"1h"}`:                       "role",
		`{"role":"viewer"}`:                                     "ttl",
		`{"role":"viewer","ttl":"9000h"}`:                       "ttl",
		`{"role":"viewer","ttl":"30s"}`:                         "ttl",
		`{"role":"viewer","ttl":"1h","description":"a\u202eb"}`: "description",
		`{"role":"viewer","ttl":"1h","uses":3}`:                 "uses",
	} {
		if code, eb := b.call(t, "POST", "/api/v1/api-tokens", b.admin, body, nil); code != 400 || !strings.HasPrefix(eb.Error.Message, field) {
			t.Errorf("create %s: %d %v, want 400 on %s", body, code, eb, field)
		}
	}
	tok, rec := b.apiToken(t, wire.RoleOperator, "720h")
	if !strings.HasPrefix(tok, "gwt_") || rec.Role != wire.RoleOperator || rec.CreatedBy != wire.AdminTokenID ||
		!rec.ExpiresAt.Equal(b.now.Add(720*time.Hour)) {
		t.Fatalf("created token %q %+v", tok, rec)
	}
	// An admin API token may make tokens too; its id is recorded as their maker.
	admin2, arec := b.apiToken(t, wire.RoleAdmin, "1h")
	var made wire.CreateAPITokenResponse
	if code, _ := b.call(t, "POST", "/api/v1/api-tokens", admin2, `{"role":"viewer","ttl":"1h"}`, &made); code != 201 || made.CreatedBy != arec.ID {
		t.Fatalf("token made by an admin API token: %d %+v", code, made)
	}
	var list wire.List[wire.APIToken]
	if code, _ := b.call(t, "GET", "/api/v1/api-tokens", b.admin, "", &list); code != 200 || len(list.Items) != 3 {
		t.Fatalf("list: %d %+v", code, list)
	}
	raw, _ := json.Marshal(list)
	if strings.Contains(string(raw), tok[4:]) {
		t.Fatal("the list holds a secret")
	}
	if code, _ := b.call(t, "POST", "/api/v1/migrations/x/pause", tok, "", nil); code == 401 || code == 403 {
		t.Fatalf("operator token before revocation: %d", code)
	}
	var revoked wire.APIToken
	if code, _ := b.call(t, "POST", "/api/v1/api-tokens/"+rec.ID+"/revoke", b.admin, "", &revoked); code != 200 || revoked.RevokedAt == nil {
		t.Fatalf("revoke: %d %+v", code, revoked)
	}
	if code, eb := b.call(t, "POST", "/api/v1/migrations/x/pause", tok, "", nil); code != 401 || !strings.Contains(eb.Error.Message, "revoked") {
		t.Fatalf("revoked token: %d %v", code, eb)
	}
	if code, _ := b.call(t, "POST", "/api/v1/api-tokens/nope/revoke", b.admin, "", nil); code != 404 {
		t.Fatalf("revoke unknown: %d", code)
	}
	// Malformed headers are 401s that never echo the header.
	for _, h := range []string{"Basic " + tok, "Bearer " + tok + "x", "Bearer gwe_" + strings.Repeat("a", 52), "bearer", tok} {
		resp := b.raw(t, "GET", "/api/v1/agents", "", "", func(r *http.Request) { r.Header.Set("Authorization", h) })
		if resp.code != 401 || strings.Contains(resp.eb.Error.Message, tok[4:]) {
			t.Errorf("Authorization %.20q…: %d %v", h, resp.code, resp.eb)
		}
	}
}

// Enrollment refuses a name an unrevoked agent holds, in any case, and consumes nothing.
func TestEnrollRefusesADuplicateName(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, 5, "1h")
	enroll := func(name string) (int, wire.ErrorBody) {
		return b.call(t, "POST", "/api/v1/enroll", "", `{"token":"`+tok+`","name":"`+name+`"}`, nil)
	}
	if code, eb := enroll("db-1"); code != 201 {
		t.Fatalf("first: %d %v", code, eb)
	}
	if code, eb := enroll("DB-1"); code != 409 || !strings.Contains(eb.Error.Message, `"DB-1" is already enrolled`) {
		t.Fatalf("duplicate: %d %v", code, eb)
	}
	for name, says := range map[string]string{"db/1": "'/'", "db..1": `".."`, `db\u202e1`: "U+202E", `db\u00071`: "U+0007"} {
		if code, eb := enroll(name); code != 400 || !strings.HasPrefix(eb.Error.Message, "name") || !strings.Contains(eb.Error.Message, says) {
			t.Errorf("name %q: %d %v, want 400 saying %s", name, code, eb, says)
		}
	}
	ts, _ := b.store.ListEnrollTokens(context.Background())
	if len(ts) != 1 || ts[0].Uses != 1 || b.agentCount(t) != 1 {
		t.Fatalf("after refusals: tokens %+v, %d agents", ts, b.agentCount(t))
	}
}

// The enrollment body is bounded as a whole, below the hub's general body limit.
func TestEnrollBodyCap(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxBodyBytes = 1 << 20 })
	tok := b.token(t, 5, "1h")
	labels := map[string]string{}
	for i := range 300 {
		labels[fmt.Sprintf("k%03d", i)] = strings.Repeat("v", 60)
	}
	lb, _ := json.Marshal(labels)
	body := `{"token":"` + tok + `","name":"n","labels":` + string(lb) + `}`
	if len(body) <= wire.MaxEnrollBodyBytes {
		t.Fatalf("body of %d bytes is not over the cap", len(body))
	}
	if code, eb := b.call(t, "POST", "/api/v1/enroll", "", body, nil); code != 413 || !strings.Contains(eb.Error.Message, strconv.Itoa(wire.MaxEnrollBodyBytes)) {
		t.Fatalf("oversized enrollment: %d %v", code, eb)
	}
}

type rawResponse struct {
	code   int
	header http.Header
	eb     wire.ErrorBody
}

func (b *bundle) raw(t *testing.T, method, path, token, body string, opts ...func(*http.Request)) rawResponse {
	t.Helper()
	req, _ := http.NewRequest(method, b.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb wire.ErrorBody
	if resp.StatusCode >= 400 {
		_ = json.NewDecoder(resp.Body).Decode(&eb)
	}
	return rawResponse{code: resp.StatusCode, header: resp.Header, eb: eb}
}

func (b *bundle) callWith(t *testing.T, method, path, token, body string, opts ...func(*http.Request)) (int, wire.ErrorBody) {
	t.Helper()
	r := b.raw(t, method, path, token, body, opts...)
	return r.code, r.eb
}

// The route table in docs/security.md is the table the hub applies.
func TestSecurityDocListsTheRouteTable(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(GET|POST|DELETE) (/api/v1/[^`]*)` \\| (viewer|operator|admin|none) \\|")
	got := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		got[m[1]+" "+m[2]] = m[3]
	}
	want := map[string]string{}
	for r, role := range routeRoles {
		want[r] = string(role)
	}
	for r := range publicRoutes {
		want[r] = "none"
	}
	for r, role := range want {
		if got[r] != role {
			t.Errorf("docs/security.md: %s is %q, the hub says %q", r, got[r], role)
		}
	}
	for r := range got {
		if _, ok := want[r]; !ok {
			t.Errorf("docs/security.md lists %s, which the table does not", r)
		}
	}
}

// gathered is the value of the series of name whose via label is via (any series when via is
// empty) in reg, or -1 when there is none.
func gathered(t *testing.T, reg *prometheus.Registry, name, via string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := via == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "via" && l.GetValue() == via {
					ok = true
				}
			}
			if !ok {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}
