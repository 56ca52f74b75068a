package ui_test

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// hostileSweep has markup in its description and its check command; sweep names are DNS labels.
const hostileSweep = `apiVersion: godwit.dev/v1
kind: Sweep
metadata:
  name: tls-drift
  description: 'nginx TLS is <b>bold</b> & "quoted" <script>alert("desc")</script>'
spec:
  schedule: "*/15 * * * *"
  timezone: Europe/Berlin
  maxSeconds: 120
  selector:
    matchLabels: {role: web}
  check:
    command: 'test "$(cat /etc/tls.conf)" = "<script>alert(1)</script>" || echo "</pre><img src=x onerror=alert(3)>"'
`

const manualSweep = `apiVersion: godwit.dev/v1
kind: Sweep
metadata:
  name: manual-only
spec:
  selector:
    matchLabels: {role: db}
  check:
    command: 'true'
`

// sweepRuns applies the sweeps and gives tls-drift one finished run with drift (the hostile agent
// among the drifted) triggered by a hostile "by", through the real sweep service and the store.
// It returns the run.
func (r *rig) sweepRuns() wire.SweepRun {
	r.t.Helper()
	ctx := r.t.Context()
	for _, sp := range []string{hostileSweep, manualSweep} {
		if _, err := r.sweep.Apply(ctx, []byte(sp), false); err != nil {
			r.t.Fatal(err)
		}
	}
	run, err := r.sweep.Trigger(ctx, "tls-drift", wire.SweepTriggerRequest{By: `<img src=x onerror=alert("by")>`})
	if err != nil || run.Status != wire.SweepRunRunning || run.Matched != 3 {
		r.t.Fatalf("trigger: %+v, %v", run, err)
	}
	// The leader would drive it; here it ends as the leader would end it.
	zero := 0
	evil := `<script>alert("agent")</script>`
	run.Status, run.ExitCode, run.FinishedAt, run.UpdatedAt = wire.SweepRunCompleted, &zero, run.FiredAt.Add(3*time.Second), run.FiredAt.Add(3*time.Second)
	run.Processed, run.Drifted, run.SkippedClean = 2, 2, 1
	run.DriftedAgents = []wire.SweepAgentRef{{ID: r.agent["web-2"], Name: "web-2"}, {ID: r.agent[evil], Name: evil}}
	if err := r.store.SaveRun(ctx, store.Fence{}, run, nil); err != nil {
		r.t.Fatal(err)
	}
	return run
}

func TestSweepPagesNeedLogin(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.sweepRuns()
	c := r.client()
	for _, path := range []string{"/ui/sweeps", "/ui/sweeps/tls-drift", "/ui/sweeps/tls-drift?limit=5", "/ui/sweeps/no-such"} {
		res, body := r.get(c, path)
		if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/ui/login?next=") {
			t.Errorf("GET %s: %s to %q, want 303 to the login page", path, res.Status, res.Header.Get("Location"))
		}
		if strings.Contains(body, "<table") || strings.Contains(body, "tls.conf") || strings.Contains(body, "*/15") {
			t.Errorf("GET %s without a session shows data: %s", path, body)
		}
	}
	for _, topic := range []string{"sweeps", "sweep:tls-drift"} {
		if res, _ := r.get(c, "/ui/live?topic="+url.QueryEscape(topic)); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("live stream %s: %s, want 401", topic, res.Status)
		}
	}
	if res, _ := r.post(c, "/ui/sweeps/tls-drift/run", url.Values{"confirm": {"yes"}}, nil); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST run without a session: %s, want 401", res.Status)
	}
	if runs, _ := r.sweep.Runs(t.Context(), "tls-drift", 10); len(runs) != 1 {
		t.Fatalf("tls-drift has %d runs after requests without a session, want 1", len(runs))
	}
}

func TestSweepPages(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	done := r.sweepRuns()
	c := r.client()
	r.login(c)

	res, body := r.get(c, "/ui/sweeps")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("sweeps: %s", res.Status)
	}
	for _, want := range []string{
		`<a href="/ui/sweeps" aria-current="page">Sweeps</a>`, // in the navigation bar
		`data-live-topic="sweeps"`,
		`<a href="/ui/sweeps/tls-drift">tls-drift</a>`, `<code>*/15 * * * *</code>`, "Europe/Berlin", "120 s",
		`<a href="/ui/sweeps/manual-only">manual-only</a>`, "none: runs only when triggered", "never ran",
		"completed: drift", "3 matched: <strong>2 processed</strong> (2 drifted, 0 errors) · 1 clean · 0 missing · 0 out of budget",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("sweeps page lacks %s", want)
		}
	}

	// A second run, in progress, and a lock-skipped request while it runs.
	running, err := r.sweep.Trigger(t.Context(), "tls-drift", wire.SweepTriggerRequest{Trigger: wire.TriggerCLI, By: "alice@laptop"})
	if err != nil {
		t.Fatal(err)
	}
	skipped, err := r.sweep.Trigger(t.Context(), "tls-drift", wire.SweepTriggerRequest{})
	if err != nil || !skipped.LockSkipped {
		t.Fatalf("second trigger: %+v, %v", skipped, err)
	}
	res, body = r.get(c, "/ui/sweeps/tls-drift")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("sweep page: %s\n%s", res.Status, body)
	}
	for _, want := range []string{
		`data-live-topic="sweep:tls-drift"`,
		"nginx TLS is &lt;b&gt;bold&lt;/b&gt; &amp; &#34;quoted&#34; &lt;script&gt;alert(&#34;desc&#34;)&lt;/script&gt;",
		`&lt;script&gt;alert(1)&lt;/script&gt;`, `&lt;/pre&gt;&lt;img src=x onerror=alert(3)&gt;`,
		`<code id="sweep-schedule">*/15 * * * *</code> in Europe/Berlin`, `id="next-firings"`,
		// The finished run: who, status, counts, exit code, drifted agents linked to their pages.
		`id="run-` + done.ID + `" data-status="completed"`,
		`<span class="who-by">&lt;img src=x onerror=alert(&#34;by&#34;)&gt;</span>`,
		`<a href="/ui/agents/` + r.agent["web-2"] + `">web-2</a>`,
		`<a href="/ui/agents/` + r.agent[`<script>alert("agent")</script>`] + `">&lt;script&gt;alert(&#34;agent&#34;)&lt;/script&gt;</a>`,
		`<td class="num"><code>0</code></td>`,
		// The running run and the lock-skipped record.
		`id="run-` + running.ID + `" data-status="running"`, "alice@laptop", "<dt>deadline</dt>",
		`id="run-` + skipped.ID + `" data-status="skipped" data-lock-skipped="true"`,
		`<strong class="lock-skipped">lock_skipped</strong>: another run held the sweep's lock`,
		// Run now, with CSRF.
		`action="/ui/sweeps/tls-drift/run"`, `name="max_seconds"`, `data-confirm="Run sweep tls-drift now?"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("sweep page lacks %s", want)
		}
	}
	// Newest first.
	iSkipped, iRunning, iDone := strings.Index(body, "run-"+skipped.ID), strings.Index(body, "run-"+running.ID), strings.Index(body, "run-"+done.ID)
	if !(iSkipped < iRunning && iRunning < iDone) {
		t.Errorf("runs are not newest first: skipped at %d, running at %d, completed at %d", iSkipped, iRunning, iDone)
	}
	csrfOf(t, body)

	// Nothing hostile is rendered as markup, anywhere.
	for _, p := range []string{"/ui/sweeps", "/ui/sweeps/tls-drift", "/ui/sweeps/manual-only", "/ui/sweeps/tls-drift?limit=1"} {
		res, body := r.get(c, p)
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", p, res.Status)
			continue
		}
		for _, bad := range []string{"<script>alert", "<img src=x", "<b>bold</b>", "</pre><img"} {
			if strings.Contains(body, bad) {
				t.Errorf("GET %s: unescaped %q in the page", p, bad)
			}
		}
		if res.Header.Get("Content-Security-Policy") == "" || res.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: security headers missing: %v", p, res.Header)
		}
	}

	// The run list is limited; a longer one is a link away.
	_, body = r.get(c, "/ui/sweeps/tls-drift?limit=1")
	if n := strings.Count(body, `<tr class="run `); n != 1 || !strings.Contains(body, `href="/ui/sweeps/tls-drift?limit=4#runs"`) {
		t.Errorf("limit=1 shows %d runs and no link to more", n)
	}
	cases := []struct {
		path string
		code int
		want string
	}{
		{"/ui/sweeps/tls-drift?limit=0", 200, "Limit: must be a number from 1 to 1000, not &#34;0&#34;"},
		{"/ui/sweeps/manual-only", 200, "No runs yet."},
		{"/ui/sweeps/no-such", 404, "Sweep &#34;no-such&#34;: not found"},
		{"/ui/sweeps/%3Cscript%3E", 404, "&lt;script&gt;"},
	}
	for _, tc := range cases {
		res, body := r.get(c, tc.path)
		if res.StatusCode != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s: %s, want %d with %q\n%s", tc.path, res.Status, tc.code, tc.want, body)
		}
	}

	// A deleted sweep fires no more, but its runs stay the audit trail.
	if err := r.sweep.Delete(t.Context(), "tls-drift"); err != nil {
		t.Fatal(err)
	}
	res, body = r.get(c, "/ui/sweeps/tls-drift")
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "was deleted") || !strings.Contains(body, "run-"+done.ID) ||
		strings.Contains(body, `name="max_seconds"`) {
		t.Errorf("deleted sweep: %s\n%s", res.Status, body)
	}
}

func TestSweepRunNow(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.sweepRuns()
	c := r.client()
	csrf := r.login(c)
	runs := func() []wire.SweepRun {
		t.Helper()
		out, err := r.sweep.Runs(t.Context(), "tls-drift", 100)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

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
		if res, _ := r.post(c, "/ui/sweeps/tls-drift/run", tc.form, tc.header); res.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %s, want 403", tc.name, res.Status)
		}
	}
	if n := len(runs()); n != 1 {
		t.Fatalf("refused posts recorded runs: %d, want the 1 of the fixture", n)
	}

	// Without confirm=yes: a confirmation page that carries the budget along, and no run.
	res, body := r.post(c, "/ui/sweeps/tls-drift/run", url.Values{"csrf": {csrf}, "max_seconds": {"45"}}, nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "Run sweep tls-drift now?") || !strings.Contains(body, "a budget of 45 s") ||
		!strings.Contains(body, `name="confirm" value="yes"`) || !strings.Contains(body, `name="max_seconds" value="45"`) {
		t.Fatalf("unconfirmed run: %s\n%s", res.Status, body)
	}
	if n := len(runs()); n != 1 {
		t.Fatalf("an unconfirmed run was recorded: %d runs", n)
	}
	// A bad budget is refused with the reason, on the sweep's page.
	for _, bad := range []string{"abc", "0", "-5", "86401"} {
		res, body := r.post(c, "/ui/sweeps/tls-drift/run", url.Values{"csrf": {csrf}, "max_seconds": {bad}, "confirm": {"yes"}}, nil)
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Max_seconds: must be a whole number of seconds from 1 to 86400") ||
			!strings.Contains(body, `id="runs"`) {
			t.Errorf("max_seconds=%s: %s\n%s", bad, res.Status, body)
		}
	}
	if res, _ := r.post(c, "/ui/sweeps/no-such/run", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("run of an unknown sweep: %s, want 404", res.Status)
	}

	// Confirmed: a run through the service, recorded as the session's actor, with the budget.
	res, _ = r.post(c, "/ui/sweeps/tls-drift/run", url.Values{"csrf": {csrf}, "max_seconds": {"45"}, "confirm": {"yes"}}, nil)
	all := runs()
	if len(all) != 2 {
		t.Fatalf("after run now: %d runs, want 2", len(all))
	}
	run := all[0]
	if !regexp.MustCompile(`^ui:[0-9a-f]{8}$`).MatchString(run.TriggeredBy) || run.Trigger != wire.TriggerAPI || run.MaxSeconds != 45 ||
		run.Status != wire.SweepRunRunning || run.LockSkipped {
		t.Fatalf("run now recorded %+v; want a running api run by ui:<session> with a budget of 45 s", run)
	}
	if want := "/ui/sweeps/tls-drift?done=started&run=" + run.ID; res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != want {
		t.Fatalf("run now: %s to %q, want 303 to %q", res.Status, res.Header.Get("Location"), want)
	}
	_, body = r.get(c, res.Header.Get("Location"))
	if !strings.Contains(body, "Run "+run.ID+" started.") || !strings.Contains(body, `<span class="who-by">`+run.TriggeredBy+`</span>`) {
		t.Errorf("the page after run now does not say it started:\n%s", body)
	}

	// Again while it runs: not an error, but a lock-skipped record, shown as such.
	res, _ = r.post(c, "/ui/sweeps/tls-drift/run", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	all = runs()
	if len(all) != 3 || !all[0].LockSkipped || all[0].Status != wire.SweepRunSkipped || all[0].TriggeredBy != run.TriggeredBy {
		t.Fatalf("run now during a run recorded %+v, want a lock-skipped record", all[0])
	}
	if want := "/ui/sweeps/tls-drift?done=lock_skipped&run=" + all[0].ID; res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != want {
		t.Fatalf("run now during a run: %s to %q, want 303 to %q", res.Status, res.Header.Get("Location"), want)
	}
	res, body = r.get(c, res.Header.Get("Location"))
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `class="flash flash-warning"`) || !strings.Contains(body, "Not started") ||
		!strings.Contains(body, "lock skipped") || strings.Contains(body, `class="flash flash-error"`) ||
		!strings.Contains(body, `id="run-`+all[0].ID+`" data-status="skipped" data-lock-skipped="true"`) {
		t.Errorf("the page after a lock-skipped run now:\n%s", body)
	}
}

func TestSweepLiveStream(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.sweepRuns()
	ctx := t.Context()
	running, err := r.sweep.Trigger(ctx, "tls-drift", wire.SweepTriggerRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// A lock-skipped record is now the latest run; the running one still moves.
	if sk, err := r.sweep.Trigger(ctx, "tls-drift", wire.SweepTriggerRequest{}); err != nil || !sk.LockSkipped {
		t.Fatalf("trigger: %+v, %v", sk, err)
	}
	c := r.client()
	r.login(c)
	for _, page := range []struct{ path, topic string }{{"/ui/sweeps/tls-drift", "sweep:tls-drift"}, {"/ui/sweeps", "sweeps"}} {
		_, body := r.get(c, page.path)
		mark := regexp.MustCompile(`data-live-mark="([^"]*)"`).FindStringSubmatch(body)
		if mark == nil || !strings.Contains(body, `data-live-topic="`+page.topic+`"`) {
			t.Fatalf("%s names no live topic %s and mark", page.path, page.topic)
		}
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		req, _ := http.NewRequestWithContext(sctx, "GET", r.srv.URL+"/ui/live?topic="+url.QueryEscape(page.topic)+"&since="+url.QueryEscape(mark[1]), nil)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK {
			t.Fatalf("live %s: %s", page.topic, res.Status)
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
		// A write that changes nothing shown (its update time) is no change.
		running.UpdatedAt = running.UpdatedAt.Add(time.Second)
		if err := r.store.SaveRun(ctx, store.Fence{}, running, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-events:
			t.Fatalf("%s: event %q for a write that changes nothing shown", page.topic, ev)
		case <-time.After(300 * time.Millisecond): // 15 polls
		}
		// An agent answering the running run (older than the latest record) is.
		running.SkippedClean++
		if err := r.store.SaveRun(ctx, store.Fence{}, running, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-events:
			if ev != "change" {
				t.Fatalf("%s: event %q, want change", page.topic, ev)
			}
		case <-sctx.Done():
			t.Fatalf("%s: no change event after the running run moved on", page.topic)
		}
		cancel()
		res.Body.Close()
		for range events {
		}
	}
}
