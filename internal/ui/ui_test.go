package ui_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/controller"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/store/sqlstore"
	"godwit.dev/godwit/internal/sweep"
	"godwit.dev/godwit/internal/ui"
	"godwit.dev/godwit/internal/wire"
)

const adminToken = "gwa_testadmintokentestadmintokentestadmintokentestadmint"

// recordingMigrations is the real controller (on the store only; never started) with a record
// of the actions taken through it.
type recordingMigrations struct {
	*controller.Controller
	mu   sync.Mutex
	acts []string // "action by actor"
}

func (r *recordingMigrations) Act(ctx context.Context, name string, act wire.MigrationAction, actor string) (wire.Migration, error) {
	m, err := r.Controller.Act(ctx, name, act, actor)
	if err == nil {
		r.mu.Lock()
		r.acts = append(r.acts, fmt.Sprintf("%s %s by %s", act, name, actor))
		r.mu.Unlock()
	}
	return m, err
}

func (r *recordingMigrations) taken() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.acts...)
}

var _ api.Migrations = (*recordingMigrations)(nil)

// fakePipeline is the event pipeline as a struct of function fields.
type fakePipeline struct {
	status      func(ctx context.Context) (wire.IngestStatus, error)
	deadLetters func(ctx context.Context, after uint64, limit int) ([]wire.DeadLetter, error)
	deadLetter  func(ctx context.Context, seq uint64) (wire.DeadLetter, error)
	replay      func(ctx context.Context, seq uint64) error
	purge       func(ctx context.Context, seq uint64) (int, error)
}

var _ api.Pipeline = (*fakePipeline)(nil)

func (f *fakePipeline) Status(ctx context.Context) (wire.IngestStatus, error) { return f.status(ctx) }
func (f *fakePipeline) DeadLetters(ctx context.Context, after uint64, limit int) ([]wire.DeadLetter, error) {
	return f.deadLetters(ctx, after, limit)
}
func (f *fakePipeline) DeadLetter(ctx context.Context, seq uint64) (wire.DeadLetter, error) {
	return f.deadLetter(ctx, seq)
}
func (f *fakePipeline) Replay(ctx context.Context, seq uint64) error { return f.replay(ctx, seq) }
func (f *fakePipeline) Purge(ctx context.Context, seq uint64) (int, error) {
	return f.purge(ctx, seq)
}
func (f *fakePipeline) Rehydrate(string) {}

// deadLetterQueue is an in-memory dead-letter stream behind fakePipeline.
type deadLetterQueue struct {
	mu       sync.Mutex
	items    []wire.DeadLetter
	replayed []uint64
}

func (q *deadLetterQueue) pipeline() *fakePipeline {
	return &fakePipeline{
		status: func(context.Context) (wire.IngestStatus, error) {
			q.mu.Lock()
			defer q.mu.Unlock()
			return wire.IngestStatus{Consumer: "test", Pending: 7, DeadLetters: uint64(len(q.items))}, nil
		},
		deadLetters: func(_ context.Context, after uint64, limit int) ([]wire.DeadLetter, error) {
			q.mu.Lock()
			defer q.mu.Unlock()
			var out []wire.DeadLetter
			for _, d := range q.items {
				if d.Seq > after && len(out) < limit {
					out = append(out, d)
				}
			}
			return out, nil
		},
		deadLetter: func(_ context.Context, seq uint64) (wire.DeadLetter, error) {
			q.mu.Lock()
			defer q.mu.Unlock()
			for _, d := range q.items {
				if d.Seq == seq {
					return d, nil
				}
			}
			return wire.DeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, fault.ErrNotFound)
		},
		replay: func(_ context.Context, seq uint64) error {
			q.mu.Lock()
			defer q.mu.Unlock()
			for i, d := range q.items {
				if d.Seq == seq {
					q.items = append(q.items[:i], q.items[i+1:]...)
					q.replayed = append(q.replayed, seq)
					return nil
				}
			}
			return fmt.Errorf("dead letter %d: %w", seq, fault.ErrNotFound)
		},
		purge: func(_ context.Context, seq uint64) (int, error) {
			q.mu.Lock()
			defer q.mu.Unlock()
			if seq == 0 {
				n := len(q.items)
				q.items = nil
				return n, nil
			}
			for i, d := range q.items {
				if d.Seq == seq {
					q.items = append(q.items[:i], q.items[i+1:]...)
					return 1, nil
				}
			}
			return 0, fmt.Errorf("dead letter %d: %w", seq, fault.ErrNotFound)
		},
	}
}

// rig is a UI handler on a real SQLite store, the real controller and a fake pipeline.
type rig struct {
	t     *testing.T
	store *sqlstore.Store
	mig   *recordingMigrations
	sweep *sweep.Service // the real sweep service on the store (API side only; never started)
	dlq   *deadLetterQueue
	ui    *ui.Server
	srv   *httptest.Server
	now   time.Time
	agent map[string]string // name → id
}

const testSpec = `apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: web-tls
spec:
  selector:
    matchLabels: {role: web}
  toVersion: "1.3"
  steps:
    - name: install
      run: 'true'
  rollout:
    canary: 1
    batchSize: 1
    approval: manual
`

func newRig(t *testing.T, opts ...func(*ui.Config)) *rig {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ctx := t.Context()
	now := time.Now().UTC()
	if _, err := st.InitAdminToken(ctx, credential.Hash(adminToken), now); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, store: st, now: now, dlq: &deadLetterQueue{}, agent: map[string]string{}}
	if err := st.CreateEnrollToken(ctx, wire.EnrollToken{ID: "tok", MaxUses: 100, ExpiresAt: now.Add(time.Hour), CreatedAt: now}, "enroll"); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"web-1", "web-2", `<script>alert("agent")</script>`} {
		id := fmt.Sprintf("00000000-0000-7000-8000-%012d", i+1)
		labels := map[string]string{"role": "web", "note": `"quoted" & <b>bold</b>`}
		if err := st.Enroll(ctx, "enroll", now, wire.Agent{ID: id, Name: name, Labels: labels, EnrolledAt: now}, "cred"); err != nil {
			t.Fatal(err)
		}
		r.agent[name] = id
	}
	exit := 28
	evil := wire.NewEvent(wire.AgentSource(r.agent["web-2"]), wire.EventExecutionFailed, wire.SeverityError, wire.EventData{
		AgentID: r.agent["web-2"], Migration: "web-tls", Step: "install", Message: "failed <i>here</i>",
		Error: `write config: no space left on device <img src=x onerror=alert(1)>`, ExitCode: &exit, OutputTail: "</pre><script>alert(2)</script>"})
	info := wire.NewEvent(wire.AgentSource(r.agent["web-2"]), wire.EventAgentStarted, wire.SeverityInfo, wire.EventData{AgentID: r.agent["web-2"], Message: "started"})
	if _, err := st.InsertEvents(ctx, []store.StoredEvent{{Event: evil, ReceivedAt: now}, {Event: info, ReceivedAt: now}}, nil); err != nil {
		t.Fatal(err)
	}
	r.mig = &recordingMigrations{Controller: controller.New(controller.Config{Store: st, HubID: "test"})}
	if _, err := r.mig.Apply(ctx, []byte(testSpec), false); err != nil {
		t.Fatal(err)
	}
	m, _ := st.GetMigration(ctx, "web-tls")
	m.State, m.CurrentBatch = "running", 0
	if err := st.SaveMigration(ctx, store.Fence{}, m, nil); err != nil {
		t.Fatal(err)
	}
	r.dlq.items = []wire.DeadLetter{{Seq: 3, Subject: "godwit.events.x", Reason: "decode", Error: "invalid character '<'",
		Payload: `<script>alert("dlq")</script>`, Time: now, OriginalTime: now, Headers: map[string][]string{"Nats-Msg-Id": {"abc"}}}}
	r.sweep = sweep.New(sweep.Config{Store: st, HubID: "test"})
	cfg := ui.Config{Store: st, Migrations: r.mig, Pipeline: r.dlq.pipeline(), Sweeps: r.sweep, LiveInterval: 20 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	r.ui = ui.New(cfg)
	r.srv = httptest.NewServer(r.ui)
	t.Cleanup(func() {
		r.ui.Close()
		r.srv.Close()
	})
	return r
}

// browserless is an HTTP client with a cookie jar that does not follow redirects.
func (r *rig) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

func (r *rig) get(c *http.Client, path string) (*http.Response, string) {
	r.t.Helper()
	res, err := c.Get(r.srv.URL + path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func (r *rig) post(c *http.Client, path string, form url.Values, header http.Header) (*http.Response, string) {
	r.t.Helper()
	req, _ := http.NewRequest("POST", r.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := c.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf field in:\n%s", body)
	}
	return m[1]
}

// login logs c in with the admin token and returns the session's CSRF token.
func (r *rig) login(c *http.Client) string {
	r.t.Helper()
	return r.loginWith(c, adminToken)
}

// loginWith logs c in with a token and returns the session's CSRF token.
func (r *rig) loginWith(c *http.Client, token string) string {
	r.t.Helper()
	_, body := r.get(c, "/ui/login")
	res, _ := r.post(c, "/ui/login", url.Values{"csrf": {csrfOf(r.t, body)}, "token": {token}, "next": {"/ui/agents"}}, nil)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/agents" {
		r.t.Fatalf("login: %s to %q", res.Status, res.Header.Get("Location"))
	}
	_, body = r.get(c, "/ui/")
	return csrfOf(r.t, body)
}

func TestLogin(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	res, body := r.get(c, "/ui/login")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("login page: %s", res.Status)
	}
	token := csrfOf(t, body)

	// Without the login form's cookie (a forged form on another site), the token is not checked.
	other := r.client()
	if res, _ := r.post(other, "/ui/login", url.Values{"csrf": {token}, "token": {adminToken}}, nil); res.StatusCode != http.StatusForbidden || hasCookie(res, "godwit_session") {
		t.Fatalf("login without the form cookie: %s, session cookie %v", res.Status, hasCookie(res, "godwit_session"))
	}
	if res, body := r.post(c, "/ui/login", url.Values{"csrf": {token}, "token": {"gwa_wrong"}}, nil); res.StatusCode != http.StatusUnauthorized ||
		hasCookie(res, "godwit_session") || !strings.Contains(body, "not a valid token") {
		t.Fatalf("wrong token: %s, session cookie %v", res.Status, hasCookie(res, "godwit_session"))
	}
	// A cross-site post is refused even with everything else right.
	if res, _ := r.post(c, "/ui/login", url.Values{"csrf": {token}, "token": {adminToken}}, http.Header{"Origin": {"http://evil.example"}}); res.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin login: %s", res.Status)
	}
	// next never leads off the UI.
	res, _ = r.post(c, "/ui/login", url.Values{"csrf": {token}, "token": {adminToken}, "next": {"//evil.example/ui/"}}, nil)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/" {
		t.Fatalf("login with an off-site next: %s to %q", res.Status, res.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, ck := range res.Cookies() {
		if ck.Name == "godwit_session" {
			session = ck
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Path != "/ui/" || session.MaxAge <= 0 {
		t.Fatalf("session cookie = %+v; want HttpOnly, SameSite=Lax, Path=/ui/, with a lifetime", session)
	}
	// Only the hash of the session id is stored.
	var stored int
	if err := r.store.DB().QueryRow(`SELECT COUNT(*) FROM ui_sessions WHERE id_hash = $1`, credential.Hash(session.Value)).Scan(&stored); err != nil || stored != 1 {
		t.Fatalf("sessions stored under the id's hash: %d, %v", stored, err)
	}
	if err := r.store.DB().QueryRow(`SELECT COUNT(*) FROM ui_sessions WHERE id_hash = $1 OR csrf = $1`, session.Value).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("the raw session id is stored: %d, %v", stored, err)
	}
	if res, _ := r.get(c, "/ui/agents"); res.StatusCode != http.StatusOK {
		t.Fatalf("agents page after login: %s", res.Status)
	}
}

func hasCookie(res *http.Response, name string) bool {
	for _, c := range res.Cookies() {
		if c.Name == name && c.Value != "" {
			return true
		}
	}
	return false
}

func TestNothingWithoutLogin(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	for _, path := range []string{"/ui/", "/ui/agents", "/ui/agents/" + r.agent["web-1"], "/ui/events", "/ui/migrations",
		"/ui/migrations/web-tls", "/ui/dead-letters", "/ui/dead-letters/3", "/ui/no-such-page"} {
		res, body := r.get(c, path)
		if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/ui/login?next=") {
			t.Errorf("GET %s: %s to %q, want 303 to the login page", path, res.Status, res.Header.Get("Location"))
		}
		if strings.Contains(body, "<table") || strings.Contains(body, "no space left") || strings.Contains(body, "role=web") {
			t.Errorf("GET %s without a session shows data: %s", path, body)
		}
	}
	if res, _ := r.get(c, "/ui/live?topic=dashboard"); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("live stream: %s, want 401", res.Status)
	}
	for _, path := range []string{"/ui/migrations/web-tls/pause", "/ui/dead-letters/3/replay", "/ui/dead-letters/purge", "/ui/logout"} {
		if res, _ := r.post(c, path, url.Values{"confirm": {"yes"}}, nil); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s: %s, want 401", path, res.Status)
		}
	}
	// A cookie that is not a session, and a session that expired, are no login either.
	u, _ := url.Parse(r.srv.URL + "/ui/")
	c.Jar.SetCookies(u, []*http.Cookie{{Name: "godwit_session", Value: "made-up", Path: "/ui/"}})
	if res, _ := r.get(c, "/ui/agents"); res.StatusCode != http.StatusSeeOther {
		t.Errorf("made-up session: %s", res.Status)
	}
	if err := r.store.CreateSession(t.Context(), store.Session{IDHash: credential.Hash("old"), CSRF: "x",
		CreatedAt: r.now.Add(-13 * time.Hour), ExpiresAt: r.now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	c.Jar.SetCookies(u, []*http.Cookie{{Name: "godwit_session", Value: "old", Path: "/ui/"}})
	if res, _ := r.get(c, "/ui/agents"); res.StatusCode != http.StatusSeeOther {
		t.Errorf("expired session: %s", res.Status)
	}
	if len(r.mig.taken()) != 0 || len(r.dlq.replayed) != 0 {
		t.Fatalf("actions were taken without a login: %v %v", r.mig.taken(), r.dlq.replayed)
	}
}

func TestActionsNeedCSRFAndConfirmation(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	csrf := r.login(c)
	refused := []struct {
		name   string
		form   url.Values
		header http.Header
	}{
		{"no token", url.Values{"confirm": {"yes"}}, nil},
		{"wrong token", url.Values{"csrf": {"wrong"}, "confirm": {"yes"}}, nil},
		{"another site", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, http.Header{"Origin": {"http://evil.example"}}},
		{"cross-site fetch", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, http.Header{"Sec-Fetch-Site": {"cross-site"}}},
	}
	for _, tc := range refused {
		res, _ := r.post(c, "/ui/migrations/web-tls/pause", tc.form, tc.header)
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %s, want 403", tc.name, res.Status)
		}
	}
	if got := r.mig.taken(); len(got) != 0 {
		t.Fatalf("refused posts took actions: %v", got)
	}
	// Without confirm=yes the answer is a confirmation page, and nothing happens yet.
	res, body := r.post(c, "/ui/migrations/web-tls/pause", url.Values{"csrf": {csrf}}, nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "Pause migration web-tls?") || !strings.Contains(body, `name="confirm" value="yes"`) {
		t.Fatalf("unconfirmed pause: %s\n%s", res.Status, body)
	}
	if got := r.mig.taken(); len(got) != 0 {
		t.Fatalf("an unconfirmed action was taken: %v", got)
	}
	res, _ = r.post(c, "/ui/migrations/web-tls/pause", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/migrations/web-tls?done=pause" {
		t.Fatalf("confirmed pause: %s to %q", res.Status, res.Header.Get("Location"))
	}
	got := r.mig.taken()
	if len(got) != 1 || !regexp.MustCompile(`^pause web-tls by ui:[0-9a-f]{8}$`).MatchString(got[0]) {
		t.Fatalf("actions = %v, want one pause by ui:<session>", got)
	}
	if m, _ := r.store.GetMigration(t.Context(), "web-tls"); m.State != "paused" {
		t.Fatalf("web-tls is %s after pause", m.State)
	}
	// The controller refuses what the state does not allow; the page says why, with 409.
	res, body = r.post(c, "/ui/migrations/web-tls/pause", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	if res.StatusCode != http.StatusConflict || !strings.Contains(body, "already paused") || !strings.Contains(body, `id="migration-state"`) {
		t.Fatalf("pausing twice: %s\n%s", res.Status, body)
	}
	res, _ = r.post(c, "/ui/migrations/web-tls/explode", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown action: %s", res.Status)
	}
	// The migration page offers what applies now: a paused manual-approval migration can be
	// resumed or have its next batch approved, not paused again.
	_, body = r.get(c, "/ui/migrations/web-tls")
	for _, want := range []string{`id="action-resume"`, `id="action-approve"`, `id="action-abort"`, `data-confirm="Resume migration web-tls?"`} {
		if !strings.Contains(body, want) {
			t.Errorf("migration page lacks %s", want)
		}
	}
	if strings.Contains(body, `id="action-pause"`) {
		t.Error("a paused migration offers pause")
	}

	// Logout needs the token too, and ends the session in the store.
	if res, _ := r.post(c, "/ui/logout", url.Values{}, nil); res.StatusCode != http.StatusForbidden {
		t.Fatalf("logout without token: %s", res.Status)
	}
	if res, _ := r.post(c, "/ui/logout", url.Values{"csrf": {csrf}}, nil); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %s", res.Status)
	}
	if res, _ := r.get(c, "/ui/agents"); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("agents page after logout: %s", res.Status)
	}
}

func TestSessionsLiveInTheStore(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	r.login(c)
	// Another replica (or this hub after a restart) on the same store knows the session.
	other := ui.New(ui.Config{Store: r.store, Migrations: r.mig})
	defer other.Close()
	srv := httptest.NewServer(other)
	defer srv.Close()
	u, _ := url.Parse(r.srv.URL + "/ui/")
	u2, _ := url.Parse(srv.URL + "/ui/")
	c.Jar.SetCookies(u2, c.Jar.Cookies(u))
	res, err := c.Get(srv.URL + "/ui/migrations/web-tls")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("the session on another server: %s", res.Status)
	}
}

func TestOutputIsEscaped(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	r.login(c)
	pages := []string{"/ui/", "/ui/agents", "/ui/agents/" + r.agent["web-2"], "/ui/agents/" + r.agent[`<script>alert("agent")</script>`],
		"/ui/events", "/ui/events?severity=error", "/ui/migrations/web-tls", "/ui/dead-letters", "/ui/dead-letters/3",
		"/ui/agents?q=%3Cscript%3E", "/ui/events?type=%3Cscript%3E"}
	for _, p := range pages {
		res, body := r.get(c, p)
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", p, res.Status)
			continue
		}
		for _, bad := range []string{"<script>alert", "<img src=x", "<b>bold</b>", "<i>here</i>", "</pre><script>"} {
			if strings.Contains(body, bad) {
				t.Errorf("GET %s: unescaped %q in the page", p, bad)
			}
		}
		if res.Header.Get("Content-Security-Policy") == "" || res.Header.Get("X-Frame-Options") != "DENY" ||
			res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: security headers missing: %v", p, res.Header)
		}
	}
	_, body := r.get(c, "/ui/agents/"+r.agent["web-2"])
	if !strings.Contains(body, "no space left on device &lt;img src=x onerror=alert(1)&gt;") {
		t.Error("the agent page does not show the error text (escaped)")
	}
}

func TestAgentPagesFilter(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	r.login(c)
	cases := []struct {
		path        string
		want, avoid []string
		code        int
	}{
		{"/ui/agents?q=web-2", []string{">web-2<"}, []string{">web-1<"}, 200},
		{"/ui/agents?label=role%3Dweb&status=unknown", []string{">web-1<", ">web-2<"}, nil, 200},
		{"/ui/agents?label=role%3Ddb", []string{"No agent matches."}, []string{">web-1<"}, 200},
		{"/ui/agents?label=nonsense", []string{"Label: &#34;nonsense&#34; is not key=value"}, nil, 200},
		{"/ui/agents?status=lost", []string{"Status: &#34;lost&#34; is not online"}, nil, 200},
		{"/ui/agents/" + r.agent["web-2"] + "?severity=error", []string{`data-severity="error"`}, []string{`data-severity="info"`}, 200},
		{"/ui/agents/" + r.agent["web-2"] + "?severity=info", []string{`data-severity="info"`}, []string{`data-severity="error"`}, 200},
		{"/ui/agents/" + r.agent["web-2"] + "?type=migration.execution.*", []string{"migration.execution.failed</code>"}, []string{"agent.started</code>"}, 200},
		{"/ui/agents/" + r.agent["web-2"] + "?migration=other", []string{"No events."}, nil, 200},
		{"/ui/agents/" + r.agent["web-2"] + "?since=2h", []string{`data-severity="error"`}, nil, 200},
		{"/ui/agents/" + r.agent["web-2"] + "?until=2001-01-01T00:00", []string{"No events."}, nil, 200},
		{"/ui/agents/" + r.agent["web-2"] + "?since=yesterday", []string{"Since: &#34;yesterday&#34; is neither"}, nil, 200},
		{"/ui/agents/no-such-agent", []string{"Agent &#34;no-such-agent&#34;: not found"}, nil, 404},
		{"/ui/migrations/no-such", nil, nil, 404},
		{"/ui/migrations?state=running", []string{">web-tls<"}, nil, 200},
		{"/ui/migrations?state=failed", []string{"No migration is failed."}, nil, 200},
	}
	for _, tc := range cases {
		res, body := r.get(c, tc.path)
		if res.StatusCode != tc.code {
			t.Errorf("GET %s: %s, want %d", tc.path, res.Status, tc.code)
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: lacks %q", tc.path, w)
			}
		}
		for _, a := range tc.avoid {
			if strings.Contains(body, a) {
				t.Errorf("GET %s: shows %q", tc.path, a)
			}
		}
	}
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	csrf := r.login(c)
	_, body := r.get(c, "/ui/dead-letters")
	if !strings.Contains(body, `href="/ui/dead-letters/3"`) || !strings.Contains(body, "decode") {
		t.Fatalf("dead-letter list:\n%s", body)
	}
	_, body = r.get(c, "/ui/dead-letters/3")
	if !strings.Contains(body, "&lt;script&gt;alert(&#34;dlq&#34;)&lt;/script&gt;") || !strings.Contains(body, "Nats-Msg-Id") {
		t.Fatalf("dead letter 3:\n%s", body)
	}
	if res, _ := r.get(c, "/ui/dead-letters/99"); res.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown dead letter: %s", res.Status)
	}
	if res, body := r.post(c, "/ui/dead-letters/3/replay", url.Values{"csrf": {csrf}}, nil); res.StatusCode != http.StatusOK || !strings.Contains(body, "Replay dead letter 3?") {
		t.Fatalf("unconfirmed replay: %s", res.Status)
	}
	res, _ := r.post(c, "/ui/dead-letters/3/replay", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	if res.StatusCode != http.StatusSeeOther || len(r.dlq.replayed) != 1 || r.dlq.replayed[0] != 3 {
		t.Fatalf("replay: %s, replayed %v", res.Status, r.dlq.replayed)
	}
	r.dlq.mu.Lock()
	r.dlq.items = []wire.DeadLetter{{Seq: 4}, {Seq: 5}}
	r.dlq.mu.Unlock()
	res, _ = r.post(c, "/ui/dead-letters/purge", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/dead-letters?done=purged&n=2" {
		t.Fatalf("purge all: %s to %q", res.Status, res.Header.Get("Location"))
	}
	_, body = r.get(c, "/ui/dead-letters?done=purged&n=2")
	if !strings.Contains(body, "Purged 2 dead letter(s).") || !strings.Contains(body, "No dead letters") {
		t.Fatalf("after purge:\n%s", body)
	}
}

func TestLiveStream(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	r.login(c)
	_, body := r.get(c, "/ui/migrations/web-tls")
	mark := regexp.MustCompile(`data-live-mark="([^"]*)"`).FindStringSubmatch(body)
	if mark == nil || !strings.Contains(body, `data-live-topic="migration:web-tls"`) {
		t.Fatalf("the migration page names no live topic and mark")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", r.srv.URL+"/ui/live?topic=migration:web-tls&since="+url.QueryEscape(mark[1]), nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("live: %s %s", res.Status, res.Header.Get("Content-Type"))
	}
	events := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				events <- ev
			}
		}
		close(events)
	}()
	// Counters moving (the controller's active time) are not a change worth a redraw.
	m, _ := r.store.GetMigration(t.Context(), "web-tls")
	m.ActiveMS += 1000
	if err := r.store.SaveMigration(t.Context(), store.Fence{}, m, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		t.Fatalf("event %q for a counter-only write", ev)
	case <-time.After(300 * time.Millisecond): // 15 polls
	}
	if _, err := r.mig.Act(t.Context(), "web-tls", wire.MigrationPause, "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev != "change" {
			t.Fatalf("event %q, want change", ev)
		}
	case <-ctx.Done():
		t.Fatal("no change event after the migration was paused")
	}
	// Closing the UI (the hub's HTTP server shutting down) ends the stream.
	r.ui.Close()
	for range events {
	}
	if ctx.Err() != nil {
		t.Fatal("the stream did not end when the UI closed")
	}
}

func TestUnavailableParts(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	s := ui.New(ui.Config{Store: r.store}) // no controller, no pipeline
	defer s.Close()
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := r.client()
	u, _ := url.Parse(srv.URL)
	_, body := r.get(c, "/ui/login")
	form := url.Values{"csrf": {csrfOf(t, body)}, "token": {adminToken}}
	jarCookies := c.Jar.Cookies(mustURL(r.srv.URL + "/ui/"))
	c.Jar.SetCookies(mustURL(srv.URL+"/ui/"), jarCookies)
	res, err := c.PostForm(u.String()+"/ui/login", form)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	for path, want := range map[string]int{"/ui/": 200, "/ui/migrations/web-tls": 200, "/ui/dead-letters": 503, "/ui/sweeps": 503} {
		res, err := c.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s without controller and pipeline: %s, want %d\n%s", path, res.Status, want, b)
		}
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// A migration that has ended can be deleted from its page, with the same CSRF token and
// confirmation as every action; its events stay.
func TestDeleteMigration(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	csrf := r.login(c)
	if _, body := r.get(c, "/ui/migrations/web-tls"); strings.Contains(body, `id="action-delete"`) {
		t.Fatal("a running migration offers delete")
	}
	res, body := r.post(c, "/ui/migrations/web-tls/delete", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	if res.StatusCode != http.StatusConflict || !strings.Contains(body, "only a migration that has ended can be deleted") {
		t.Fatalf("deleting a running migration: %s\n%s", res.Status, body)
	}
	if res, _ := r.post(c, "/ui/migrations/web-tls/abort", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("abort: %s", res.Status)
	}
	_, body = r.get(c, "/ui/migrations/web-tls")
	if !strings.Contains(body, `id="action-delete"`) || !strings.Contains(body, `data-confirm="Delete migration web-tls?"`) {
		t.Fatalf("an aborted migration's page offers no delete:\n%s", body)
	}
	if res, _ := r.post(c, "/ui/migrations/web-tls/delete", url.Values{"confirm": {"yes"}}, nil); res.StatusCode != http.StatusForbidden {
		t.Fatalf("delete without the CSRF token: %s", res.Status)
	}
	res, body = r.post(c, "/ui/migrations/web-tls/delete", url.Values{"csrf": {csrf}}, nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "Delete migration web-tls?") || !strings.Contains(body, "its events stay") {
		t.Fatalf("unconfirmed delete: %s\n%s", res.Status, body)
	}
	if _, err := r.store.GetMigration(t.Context(), "web-tls"); err != nil {
		t.Fatalf("an unconfirmed delete deleted: %v", err)
	}
	res, _ = r.post(c, "/ui/migrations/web-tls/delete", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/migrations?deleted=web-tls" {
		t.Fatalf("confirmed delete: %s to %q", res.Status, res.Header.Get("Location"))
	}
	if _, err := r.store.GetMigration(t.Context(), "web-tls"); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if _, body := r.get(c, "/ui/migrations?deleted=web-tls"); !strings.Contains(body, "Migration web-tls deleted; its events are kept.") {
		t.Fatalf("migrations page after delete lacks the message:\n%s", body)
	}
	if _, body := r.get(c, "/ui/migrations?deleted=%3Cb%3Ex"); strings.Contains(body, "deleted; its events") {
		t.Fatal("a made-up name is echoed as deleted")
	}
	if res, _ := r.get(c, "/ui/migrations/web-tls"); res.StatusCode != http.StatusNotFound {
		t.Fatalf("deleted migration's page: %s", res.Status)
	}
	page, _, err := r.store.QueryEvents(t.Context(), store.EventQuery{Migration: "web-tls", Limit: 10})
	if err != nil || len(page) == 0 {
		t.Fatalf("events of the deleted migration: %d, %v", len(page), err)
	}
}

// A degraded agent says so, with its reason, in the agents list and on its page; a healthy one
// does not.
func TestDegradedAgentIsShown(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	r.login(c)
	reason := "cannot write the runner journal /var/lib/godwit/agent/journal.db since 2026-01-02T03:04:05Z (3 failed attempts): database or disk is full (13)"
	if err := r.store.UpdateLiveness(t.Context(), []store.Liveness{{AgentID: r.agent["web-2"], Status: wire.StatusOnline, Degraded: &reason}}); err != nil {
		t.Fatal(err)
	}
	_, list := r.get(c, "/ui/agents")
	row2 := list[strings.Index(list, ">web-2<"):]
	row2 = row2[:strings.Index(row2, "</tr>")]
	row1 := list[strings.Index(list, ">web-1<"):]
	row1 = row1[:strings.Index(row1, "</tr>")]
	if !strings.Contains(row2, ">degraded<") || !strings.Contains(row2, "database or disk is full") {
		t.Fatalf("the agents list does not show web-2 degraded:\n%s", row2)
	}
	if strings.Contains(row1, ">degraded<") {
		t.Fatalf("the agents list shows the healthy web-1 degraded:\n%s", row1)
	}
	_, page := r.get(c, "/ui/agents/"+r.agent["web-2"])
	if !strings.Contains(page, `id="agent-degraded"`) || !strings.Contains(page, "database or disk is full (13)") {
		t.Fatal("the agent page does not show why web-2 is degraded")
	}
	if _, page := r.get(c, "/ui/agents/"+r.agent["web-1"]); strings.Contains(page, `id="agent-degraded"`) {
		t.Fatal("the healthy web-1's page says it is degraded")
	}
}

// An agent's page shows the digest of the policy it enforces, and "none" for one without.
func TestAgentPolicyDigestIsShown(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	c := r.client()
	r.login(c)
	digest := "sha256:" + strings.Repeat("ab", 32)
	sys := wire.SystemInfo{OS: "linux", Hostname: "web-2", PolicyDigest: digest}
	if err := r.store.UpdateLiveness(t.Context(), []store.Liveness{{AgentID: r.agent["web-2"], Status: wire.StatusOnline, System: &sys}}); err != nil {
		t.Fatal(err)
	}
	_, page := r.get(c, "/ui/agents/"+r.agent["web-2"])
	if i := strings.Index(page, `id="agent-policy"`); i < 0 || !strings.Contains(page[i:], "<code>"+digest+"</code>") {
		t.Fatal("the agent page does not show web-2's policy digest")
	}
	_, page = r.get(c, "/ui/agents/"+r.agent["web-1"])
	if i := strings.Index(page, `id="agent-policy"`); i < 0 || !strings.HasPrefix(page[i:], `id="agent-policy">none`) {
		t.Fatal("the agent page of web-1, which has no policy, does not say none")
	}
}
