package ui_test

import (
	"bufio"
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
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
	if runs, _, _ := r.sweep.Runs(t.Context(), "tls-drift", 10, ""); len(runs) != 1 {
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
		// The run that held the lock is a link to its page.
		`<strong class="lock-skipped">lock_skipped</strong>: run <a href="/ui/sweeps/tls-drift/runs/` + running.ID + `" class="lock-holder"><code>` + running.ID + `</code></a> held the sweep's lock`,
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

	// Runs come a page at a time: following "Older runs" shows each run once, newest first,
	// and "Newest runs" leads back.
	older := regexp.MustCompile(`<a href="([^"]+)" rel="next" id="runs-older">`)
	var seen []string
	page := "/ui/sweeps/tls-drift?limit=1"
	for i := 0; page != ""; i++ {
		res, body := r.get(c, page)
		if res.StatusCode != http.StatusOK || strings.Count(body, `<tr class="run `) != 1 {
			t.Fatalf("GET %s: %s, %d runs, want one", page, res.Status, strings.Count(body, `<tr class="run `))
		}
		id := regexp.MustCompile(`id="run-([0-9a-f-]+)"`).FindStringSubmatch(body)[1]
		seen = append(seen, id)
		if (i > 0) != strings.Contains(body, `<a href="/ui/sweeps/tls-drift?limit=1#runs" id="runs-newest">Newest runs</a>`) {
			t.Errorf("page %d: the link back to the newest runs is %v", i, i > 0)
		}
		page = ""
		if m := older.FindStringSubmatch(body); m != nil {
			page = html.UnescapeString(strings.TrimSuffix(m[1], "#runs"))
			if !strings.Contains(page, "&limit=1") || !strings.Contains(page, "?cursor=") {
				t.Fatalf("older page link %q", page)
			}
		}
	}
	if want := []string{skipped.ID, running.ID, done.ID}; !slices.Equal(seen, want) {
		t.Errorf("paging through the runs saw %v, want %v (newest first, each once)", seen, want)
	}
	if _, body := r.get(c, "/ui/sweeps/tls-drift?cursor=bogus"); !strings.Contains(body, "Cursor: not a cursor") || strings.Count(body, `<tr class="run `) != 3 {
		t.Errorf("a bogus cursor does not show the newest runs with the reason")
	}
	// Listed runs carry no context snapshot: the page does not show the matched agents' ids.
	if _, body := r.get(c, "/ui/sweeps/tls-drift"); strings.Contains(body, "matched_agents") {
		t.Errorf("the runs list shows a run's context")
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
		out, _, err := r.sweep.Runs(t.Context(), "tls-drift", 100, "")
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

// The suspend/resume toggle: CSRF and same-origin like every action, a confirmation first, then
// through the sweep service as the session's actor; the page says why the sweep is not firing.
func TestSweepSuspendToggle(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.sweepRuns()
	c := r.client()
	csrf := r.login(c)
	ctx := t.Context()
	stored := func() wire.Sweep {
		t.Helper()
		sw, err := r.store.GetSweep(ctx, "tls-drift")
		if err != nil {
			t.Fatal(err)
		}
		return sw
	}
	_, body := r.get(c, "/ui/sweeps/tls-drift")
	for _, want := range []string{`id="suspension-section" data-live`, `action="/ui/sweeps/tls-drift/suspend"`, `data-confirm="Suspend sweep tls-drift?"`,
		`id="suspend-sweep"`, `name="reason"`, "<dt>Resume policy</dt><dd>skip</dd>"} {
		if !strings.Contains(body, want) {
			t.Errorf("sweep page lacks %s", want)
		}
	}
	for _, action := range []string{"suspend", "resume"} {
		for _, tc := range []struct {
			name   string
			form   url.Values
			header http.Header
		}{
			{"no token", url.Values{"confirm": {"yes"}}, nil},
			{"wrong token", url.Values{"csrf": {"wrong"}, "confirm": {"yes"}}, nil},
			{"another site", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, http.Header{"Origin": {"http://evil.example"}}},
		} {
			if res, _ := r.post(c, "/ui/sweeps/tls-drift/"+action, tc.form, tc.header); res.StatusCode != http.StatusForbidden {
				t.Errorf("%s, %s: %s, want 403", action, tc.name, res.Status)
			}
		}
		if res, _ := r.post(r.client(), "/ui/sweeps/tls-drift/"+action, url.Values{"confirm": {"yes"}}, nil); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without a session: %s, want 401", action, res.Status)
		}
	}
	if sw := stored(); sw.Suspended {
		t.Fatal("a refused post suspended the sweep")
	}

	// Unconfirmed: a confirmation page that carries the reason along; nothing changes.
	res, body := r.post(c, "/ui/sweeps/tls-drift/suspend", url.Values{"csrf": {csrf}, "reason": {`cut over <b>friday</b>`}}, nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "Suspend sweep tls-drift?") || !strings.Contains(body, "No scheduled run fires") ||
		!strings.Contains(body, `name="reason" value="cut over &lt;b&gt;friday&lt;/b&gt;"`) || !strings.Contains(body, `name="confirm" value="yes"`) {
		t.Fatalf("unconfirmed suspend: %s\n%s", res.Status, body)
	}
	if sw := stored(); sw.Suspended {
		t.Fatal("an unconfirmed suspend suspended the sweep")
	}

	// Confirmed.
	res, _ = r.post(c, "/ui/sweeps/tls-drift/suspend", url.Values{"csrf": {csrf}, "reason": {`cut over <b>friday</b>`}, "confirm": {"yes"}}, nil)
	if want := "/ui/sweeps/tls-drift?done=suspended"; res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != want {
		t.Fatalf("suspend: %s to %q, want 303 to %q", res.Status, res.Header.Get("Location"), want)
	}
	sw := stored()
	if !sw.Suspended || sw.Suspension == nil || sw.Suspension.Via != wire.SuspendViaUI || !regexp.MustCompile(`^ui:[0-9a-f]{8}$`).MatchString(sw.Suspension.By) ||
		sw.Suspension.Reason != "cut over <b>friday</b>" {
		t.Fatalf("stored after suspend: %+v (%+v)", sw, sw.Suspension)
	}
	_, body = r.get(c, "/ui/sweeps/tls-drift?done=suspended")
	for _, want := range []string{"Sweep tls-drift suspended: no scheduled run fires until it is resumed.", `id="suspended-banner"`,
		`<span class="who-by">` + sw.Suspension.By + `</span> via <code>ui</code>`, `<q class="suspend-reason">cut over &lt;b&gt;friday&lt;/b&gt;</q>`,
		"None while suspended", `action="/ui/sweeps/tls-drift/resume"`, `id="resume-sweep"`, `data-confirm="Resume sweep tls-drift?"`,
		`<span class="badge-text">suspended</span>`} {
		if !strings.Contains(body, want) {
			t.Errorf("page of the suspended sweep lacks %s", want)
		}
	}
	if strings.Contains(body, `id="suspend-sweep"`) || strings.Contains(body, "<b>friday</b>") {
		t.Errorf("page of the suspended sweep still offers suspend, or renders the reason as markup")
	}
	if _, body := r.get(c, "/ui/sweeps"); !strings.Contains(body, `<span class="badge-text">suspended</span>`) {
		t.Errorf("the sweeps list does not show the sweep suspended")
	}
	// Run now still works: the canary.
	if res, _ := r.post(c, "/ui/sweeps/manual-only/run", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("run now of another sweep: %s", res.Status)
	}
	res, _ = r.post(c, "/ui/sweeps/tls-drift/run", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	if res.StatusCode != http.StatusSeeOther || !strings.Contains(res.Header.Get("Location"), "done=started") {
		t.Fatalf("run now of the suspended sweep: %s to %s", res.Status, res.Header.Get("Location"))
	}
	// Suspending again changes nothing.
	res, _ = r.post(c, "/ui/sweeps/tls-drift/suspend", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	if want := "/ui/sweeps/tls-drift?done=already_suspended"; res.Header.Get("Location") != want || stored().Version != sw.Version {
		t.Fatalf("second suspend: to %q (version %d), want %q and no change", res.Header.Get("Location"), stored().Version, want)
	}

	// Firings came due while it was suspended (its stored next firing is an hour ago): the
	// resume confirmation says what resumePolicy skip does with them.
	past := stored()
	past.NextFireAt = time.Now().Add(-time.Hour).Truncate(15 * time.Minute).Add(15 * time.Minute)
	if err := r.store.UpdateSweep(ctx, past, true); err != nil {
		t.Fatal(err)
	}
	res, body = r.post(c, "/ui/sweeps/tls-drift/resume", url.Values{"csrf": {csrf}}, nil)
	if res.StatusCode != http.StatusOK || !regexp.MustCompile(`\d scheduled firings came due while it was suspended\. resumePolicy: skip: they are not run`).MatchString(body) {
		t.Fatalf("unconfirmed resume: %s\n%s", res.Status, body)
	}
	res, _ = r.post(c, "/ui/sweeps/tls-drift/resume", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/sweeps/tls-drift?done=resumed&held=") || !strings.HasSuffix(loc, "&policy=skip") {
		t.Fatalf("resume: %s to %q", res.Status, loc)
	}
	if sw := stored(); sw.Suspended || sw.Suspension != nil || !sw.NextFireAt.After(time.Now()) {
		t.Fatalf("stored after resume: %+v", sw)
	}
	_, body = r.get(c, loc)
	if !regexp.MustCompile(`Sweep tls-drift resumed\. \d scheduled firings came due while it was suspended; not run \(resumePolicy: skip\)\.`).MatchString(body) ||
		strings.Contains(body, `id="suspended-banner"`) || !strings.Contains(body, `id="suspend-sweep"`) {
		t.Errorf("page after resume:\n%s", body)
	}
	if res, _ := r.post(c, "/ui/sweeps/no-such/suspend", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("suspend of an unknown sweep: %s, want 404", res.Status)
	}
}
