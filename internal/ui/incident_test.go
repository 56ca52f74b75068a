package ui_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// opensslSpec rolls back once more than one agent failed.
const opensslSpec = `apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: openssl-3
spec:
  selector:
    matchLabels: {role: web}
  toVersion: "3.0"
  steps:
    - name: install
      run: /usr/local/bin/install-openssl
      rollback: /usr/local/bin/remove-openssl
  rollout:
    canary: 1
    batchSize: 50%
    maxFailures: 1
    onFailure: rollback
`

const (
	libsslHint   = "hint: install libssl3 (apt-get install libssl3)"
	libsslCause  = "/usr/local/bin/app: error while loading shared libraries: libssl.so.3: cannot open shared object file: No such file or directory"
	libsslError  = "run command of step 0 (install) exited with code 127 (command not found): " + libsslHint
	rollbackErr  = "rollback command of step 0 (install) exited with code 1: rm: cannot remove '/opt/openssl': Device or resource busy"
	budgetReason = "failure budget exceeded: 2 agents failed, 1 allowed; onFailure: rollback"
)

// incident turns the rig into the fleet of a bad night: openssl-3 failed on web-1 and web-2
// (exit 127, the cause one line above a hint), was rolled back by the failure budget, web-2's
// rollback failed, and two dozen rollback info events came after the errors; web-tls waits for
// approval of its next batch, whose agent (db-less web-3) is offline.
func (r *rig) incident() {
	t := r.t
	ctx := t.Context()
	st := r.store
	now := time.Now().UTC()
	for _, name := range []string{"web-3", "db-1"} {
		id := fmt.Sprintf("00000000-0000-7000-8000-%012d", len(r.agent)+1)
		role := "web"
		if name == "db-1" {
			role = "db"
		}
		if err := st.Enroll(ctx, "enroll", now, wire.Agent{ID: id, Name: name, Labels: map[string]string{"role": role, "site": "ams"}, EnrolledAt: now}, "cred"); err != nil {
			t.Fatal(err)
		}
		r.agent[name] = id
	}
	var live []store.Liveness
	for name, id := range r.agent {
		status := wire.StatusOnline
		if name == "web-3" {
			status = wire.StatusOffline
		}
		live = append(live, store.Liveness{AgentID: id, Status: status, LastSeen: now})
	}
	if err := st.UpdateLiveness(ctx, live); err != nil {
		t.Fatal(err)
	}

	if _, err := r.mig.Apply(ctx, []byte(opensslSpec), false); err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMigration(ctx, "openssl-3")
	if err != nil {
		t.Fatal(err)
	}
	as, err := st.ListAssignments(ctx, "openssl-3")
	if err != nil {
		t.Fatal(err)
	}
	for i := range as {
		a := &as[i]
		a.StepName = "install"
		switch a.AgentID {
		case r.agent["web-1"]:
			a.State, a.Failure, a.FailedStep = "rolled_back", libsslError, "install"
		case r.agent["web-2"]:
			a.State, a.Failure, a.FailedStep, a.Error = "rollback_failed", libsslError, "install", rollbackErr
		case r.agent["web-3"]:
			a.State = "superseded"
		default:
			a.State = "rolled_back"
		}
	}
	m.State, m.CurrentBatch, m.Reason, m.FinishedAt = "failed", 1, "rollback failed on 1 agents; run rollback again to resume it", now
	if err := st.SaveMigration(ctx, store.Fence{}, m, as); err != nil {
		t.Fatal(err)
	}

	// web-tls: the canary (web-1) succeeded; batch 2 waits for approval; its agent is web-2 or
	// another, and web-3 is offline.
	wm, _ := st.GetMigration(ctx, "web-tls")
	was, _ := st.ListAssignments(ctx, "web-tls")
	for i := range was {
		if was[i].Batch == 0 {
			was[i].State = "succeeded"
		}
	}
	if err := st.SaveMigration(ctx, store.Fence{}, wm, was); err != nil {
		t.Fatal(err)
	}

	exit127, exit1 := 127, 1
	at := func(d time.Duration) time.Time { return now.Add(-d) }
	var evs []store.StoredEvent
	add := func(e wire.Event, t time.Time) {
		e.Time = t
		raw, _ := json.Marshal(e)
		evs = append(evs, store.StoredEvent{Event: e, Raw: raw, ReceivedAt: t})
	}
	for _, name := range []string{"web-1", "web-2"} {
		add(wire.NewEvent(wire.AgentSource(r.agent[name]), wire.EventExecutionFailed, wire.SeverityError, wire.EventData{
			AgentID: r.agent[name], Migration: "openssl-3", Step: "install", Attempt: 1, Error: libsslError, ExitCode: &exit127,
			OutputTail: "--- stderr ---\nlinking /usr/local/bin/app\n" + libsslCause + "\n" + libsslHint + "\n"}), at(10*time.Minute))
	}
	changed := func(from, to, reason string, sev string, when time.Duration) {
		extra, _ := json.Marshal(map[string]string{"from": from, "to": to})
		add(wire.NewEvent(wire.HubSource("test"), wire.EventMigrationStateChanged, sev, wire.EventData{Migration: "openssl-3",
			Message: fmt.Sprintf("migration openssl-3: %s → %s: %s", from, to, reason), Extra: extra}), at(when))
	}
	changed("running", "rolling_back", budgetReason, wire.SeverityWarning, 9*time.Minute)
	add(wire.NewEvent(wire.AgentSource(r.agent["web-2"]), wire.EventRollbackFailed, wire.SeverityError, wire.EventData{
		AgentID: r.agent["web-2"], Migration: "openssl-3", Step: "install", Attempt: 1, Error: rollbackErr, ExitCode: &exit1,
		OutputTail: "--- stderr ---\nrm: cannot remove '/opt/openssl': Device or resource busy\n"}), at(8*time.Minute))
	for i := range 24 {
		name := []string{"web-1", `<script>alert("agent")</script>`}[i%2]
		add(wire.NewEvent(wire.AgentSource(r.agent[name]), wire.EventRollbackSucceeded, wire.SeverityInfo, wire.EventData{
			AgentID: r.agent[name], Migration: "openssl-3", Step: "install", Attempt: 1, Message: "rollback of step 0 (install) done"}),
			at(7*time.Minute-time.Duration(i)*10*time.Second))
	}
	changed("rolling_back", "failed", m.Reason, wire.SeverityError, time.Minute)
	if _, err := st.InsertEvents(ctx, evs, nil); err != nil {
		t.Fatal(err)
	}
}

// login logs the browser in to the rig with the admin token and lands on next.
func (b *browser) login(base, next string) {
	b.t.Helper()
	b.do("log in",
		chromedp.Navigate(base+"/ui/login?next="+next),
		chromedp.WaitVisible(id("token")),
		chromedp.SendKeys(id("token"), adminToken),
		click(id("login-submit")),
		until(`location.pathname === "`+next+`"`),
	)
}

// text is the visible text of the first element sel matches ("" when none).
func text(b *browser, sel string) string {
	b.t.Helper()
	return js[string](b, `(document.querySelector(`+jsString(sel)+`) || {innerText: ""}).innerText`)
}

func jsString(s string) string {
	out, _ := json.Marshal(s)
	return string(out)
}

// shotWidths saves the page at 1400 and 420 px wide.
func (b *browser) shotWidths(name string) {
	b.t.Helper()
	for _, w := range []int64{1400, 420} {
		b.do("resize", chromedp.EmulateViewport(w, 900))
		if w == 420 && js[bool](b, `document.documentElement.scrollWidth > window.innerWidth + 2`) {
			wide := js[[]string](b, `Array.from(document.querySelectorAll("body *")).filter(e => e.getBoundingClientRect().right > window.innerWidth + 2 && !e.closest("table, pre, .table-scroll")).slice(0, 8).map(e => e.tagName + "." + e.className + " " + Math.round(e.getBoundingClientRect().right))`)
			b.t.Errorf("%s at 420 px: the page is %v px wide (it scrolls sideways); too wide: %v", name, js[float64](b, `document.documentElement.scrollWidth`), wide)
		}
		b.shot(fmt.Sprintf("%s-%d", name, w))
	}
	b.do("reset size", chromedp.EmulateViewport(1400, 900))
}

// sweepIncident gives tls-drift a run that found web-2 drifted and web-3 missing (offline when it
// fired), a lock-skipped request made while it ran, and the sweep.progress event of the run.
func (r *rig) sweepIncident() (done, skipped wire.SweepRun) {
	t := r.t
	ctx := t.Context()
	if _, err := r.sweep.Apply(ctx, []byte(hostileSweep), false); err != nil {
		t.Fatal(err)
	}
	run, err := r.sweep.Trigger(ctx, "tls-drift", wire.SweepTriggerRequest{By: "alice@laptop"})
	if err != nil || run.SkippedMissing != 1 {
		t.Fatalf("trigger: %+v, %v (want web-3 missing)", run, err)
	}
	if skipped, err = r.sweep.Trigger(ctx, "tls-drift", wire.SweepTriggerRequest{}); err != nil || !skipped.LockSkipped {
		t.Fatalf("second trigger: %+v, %v", skipped, err)
	}
	zero := 0
	run.Status, run.ExitCode, run.FinishedAt, run.UpdatedAt = wire.SweepRunCompleted, &zero, run.FiredAt.Add(3*time.Second), run.FiredAt.Add(3*time.Second)
	run.Processed, run.Drifted, run.SkippedClean = 1, 1, run.Matched-2
	run.DriftedAgents = []wire.SweepAgentRef{{ID: r.agent["web-2"], Name: "web-2"}}
	agents, err := r.store.ListRunAgents(ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	one := 1
	var changed []wire.SweepRunAgent
	for _, a := range agents {
		switch {
		case a.AgentID == r.agent["web-2"]:
			a.State, a.ExitCode, a.Error, a.OutputTail = wire.CheckDrifted, &one, "check command exited with code 1", "--- stdout ---\nTLS 1.0 enabled\n"
		case a.State != wire.CheckMissing:
			a.State = wire.CheckClean
		}
		changed = append(changed, a)
	}
	if err := r.store.SaveRun(ctx, store.Fence{}, run, changed); err != nil {
		t.Fatal(err)
	}
	extra, _ := json.Marshal(run)
	e := wire.NewEvent(wire.HubSource("test"), wire.EventSweepProgress, wire.SeverityWarning, wire.EventData{
		Message: "sweep tls-drift: run completed: 1 drifted", Extra: extra})
	raw, _ := json.Marshal(e)
	if _, err := r.store.InsertEvents(ctx, []store.StoredEvent{{Event: e, Raw: raw, ReceivedAt: e.Time}}, nil); err != nil {
		t.Fatal(err)
	}
	return run, skipped
}

func TestBrowserIncident(t *testing.T) {
	exe := chromium(t)
	r := newRig(t)
	r.incident()
	done, skipped := r.sweepIncident()
	b := newBrowser(t, exe)
	b.login(r.srv.URL, "/ui/migrations/openssl-3")

	t.Run("MigrationKeepsWhoFailedAndWhy", func(t *testing.T) {
		b := b.with(t)
		b.do("the outcome", chromedp.WaitVisible(id("outcome-why")))
		if k := js[string](b, `document.getElementById("outcome-why").dataset.kind`); k != "budget" {
			t.Errorf("outcome kind %q, want budget", k)
		}
		if why := text(b, "#outcome-why"); !strings.Contains(why, budgetReason) || !strings.Contains(why, "running → rolling_back") {
			t.Errorf("outcome: %q, want the budget's reason", why)
		}
		if last := text(b, "#outcome-last"); !strings.Contains(last, "rolling_back → failed") || !strings.Contains(last, "rollback failed on 1 agents") {
			t.Errorf("then: %q", last)
		}
		if s := text(b, "#outcome-summary"); !strings.Contains(s, "2 agents failed") || !strings.Contains(s, "1 needs attention") {
			t.Errorf("summary: %q", s)
		}
		for _, name := range []string{"web-1", "web-2"} {
			row := text(b, `#failed-agents tr[data-agent="`+name+`"]`)
			if !strings.Contains(row, "libssl.so.3: cannot open shared object file") || strings.Contains(row, "hint:") || !strings.Contains(row, "install") {
				t.Errorf("failed agent %s: %q, want the cause at step install", name, row)
			}
		}
		if row := text(b, `#failed-agents tr[data-agent="web-2"]`); !strings.Contains(strings.ToLower(row), "needs attention") ||
			!strings.Contains(row, "Rollback: "+rollbackErr) || !strings.Contains(strings.ToLower(row), "rollback failed") {
			t.Errorf("web-2 row: %q, want needs attention and its rollback error", row)
		}
		// The grid says who failed among the rolled back, and each agent's liveness.
		cell := text(b, `#grid li.cell-failrb`)
		if !strings.Contains(cell, "web-1") || !strings.Contains(cell, "failed at install, rolled back") || !strings.Contains(cell, "online") {
			t.Errorf("web-1's cell: %q", cell)
		}
		if n := js[int](b, `document.querySelectorAll('#grid li[data-liveness]').length`); n != 4 {
			t.Errorf("%d grid cells carry liveness, want 4", n)
		}
		if c := text(b, `#grid li[data-liveness="offline"]`); !strings.Contains(c, "web-3") {
			t.Errorf("the offline cell: %q", c)
		}
		// The batch bar counts failed-then-rolled-back apart.
		if l := text(b, "#progress"); !strings.Contains(l, "failed, rolled back") {
			t.Errorf("batch bars: %q", l)
		}
		// The failure group is keyed by the cause, with the last lines of output.
		heads := js[[]string](b, `Array.from(document.querySelectorAll("#failures p.headline")).map(p => p.innerText)`)
		if len(heads) != 2 || !strings.Contains(strings.Join(heads, "|"), "libssl.so.3: cannot open shared object file") ||
			!strings.Contains(strings.Join(heads, "|"), "rm: cannot remove '/opt/openssl'") {
			t.Errorf("failure group headlines: %q, want the run's cause and the rollback's error apart", heads)
		}
		sigs := js[[]string](b, `Array.from(document.querySelectorAll("#failures code.signature")).map(c => c.innerText)`)
		if len(sigs) != 2 || strings.Contains(strings.Join(sigs, "|"), "hint") || !strings.Contains(strings.Join(sigs, "|"), "libssl.so.N: cannot open shared object file") {
			t.Errorf("failure signatures %q: want the cause, not the hint", sigs)
		}
		// Errors stay on the page behind two dozen rollback info rows.
		if p := text(b, "#migration-problems"); !strings.Contains(p, "migration.execution.failed") || !strings.Contains(p, "migration.rollback.failed") {
			t.Errorf("recent errors: %q", p)
		}
		if p := text(b, "#migration-events"); strings.Contains(p, "migration.execution.failed") {
			t.Log("recent events still show the execution failure (fewer info rows than expected)")
		}
		b.shotWidths("migration-after-rollback")
	})

	t.Run("NeedsAttentionWhereverTheAgentIs", func(t *testing.T) {
		b := b.with(t)
		b.do("agents list", chromedp.Navigate(r.srv.URL+"/ui/agents"), chromedp.WaitVisible(css("table.agents")))
		rows := js[[]string](b, `Array.from(document.querySelectorAll("table.agents tbody tr")).filter(tr => /needs attention/i.test(tr.innerText)).map(tr => tr.querySelector("a").innerText)`)
		if len(rows) != 1 || rows[0] != "web-2" {
			t.Errorf("agents needing attention on the list: %v, want [web-2]", rows)
		}
		b.do("web-2's page", chromedp.Navigate(r.srv.URL+"/ui/agents/"+r.agent["web-2"]), chromedp.WaitVisible(id("agent-attention")))
		if a := text(b, "#agent-attention"); !strings.Contains(a, "openssl-3") {
			t.Errorf("attention banner: %q", a)
		}
		if s := text(b, "#agent-status"); !strings.Contains(strings.ToLower(s), "needs attention") {
			t.Errorf("status: %q", s)
		}
		b.shotWidths("agent-needs-attention")
		b.do("web-1's page", chromedp.Navigate(r.srv.URL+"/ui/agents/"+r.agent["web-1"]), chromedp.WaitVisible(id("agent-status")))
		if js[bool](b, `!!document.getElementById("agent-attention")`) {
			t.Error("web-1 (rolled back cleanly) is shown as needing attention")
		}
	})

	t.Run("ApprovalWarns", func(t *testing.T) {
		b := b.with(t)
		b.do("web-tls", chromedp.Navigate(r.srv.URL+"/ui/migrations/web-tls"), chromedp.WaitVisible(id("action-approve")))
		w := text(b, "#approve-warnings")
		if !strings.Contains(w, "web-2 (openssl-3)") || !strings.Contains(w, "need") {
			t.Errorf("approval warnings: %q, want web-2's failed rollback", w)
		}
		b.do("ask to approve", click(id("action-approve")), chromedp.WaitVisible(id("confirm-dialog")))
		detail := text(b, "#confirm-detail")
		if !strings.HasPrefix(detail, "Warning:") || !strings.Contains(detail, "web-2") {
			t.Errorf("the approval dialog says %q, want a warning naming web-2", detail)
		}
		b.do("cancel", click(id("confirm-cancel")), until(`!document.getElementById("confirm-dialog").open`))
		if taken := r.mig.taken(); len(taken) != 0 {
			t.Errorf("actions taken after a cancel: %v", taken)
		}
	})

	t.Run("SweepsLeadSomewhere", func(t *testing.T) {
		b := b.with(t)
		b.do("the sweep", chromedp.Navigate(r.srv.URL+"/ui/sweeps/tls-drift"), chromedp.WaitVisible(id("run-"+skipped.ID)))
		// The missing agent is named and linked; the lock holder is a link to its run.
		if m := js[string](b, `document.querySelector("#run-`+done.ID+` td.missing a[href^='/ui/agents/']").getAttribute("href")`); m != "/ui/agents/"+r.agent["web-3"] {
			t.Errorf("missing agent link %q, want web-3's page", m)
		}
		b.shotWidths("sweep")
		b.do("follow the lock holder", click(css("#run-"+skipped.ID+" a.lock-holder")), until(`location.pathname.endsWith("/runs/`+done.ID+`")`),
			chromedp.WaitVisible(id("agents-missing")))
		if m := text(b, "#agents-missing"); !strings.Contains(m, "web-3") || !strings.Contains(strings.ToLower(m), "offline") {
			t.Errorf("the run's missing agents: %q, want web-3 (offline)", m)
		}
		if d := text(b, "#agents-drifted"); !strings.Contains(d, "web-2") {
			t.Errorf("the run's drifted agents: %q", d)
		}
		// A sweep event links to its sweep and its run.
		b.do("sweep events", chromedp.Navigate(r.srv.URL+"/ui/events?type=sweep.*"), chromedp.WaitVisible(css("a.run-link")))
		if h := js[string](b, `document.querySelector("#history a.run-link").getAttribute("href")`); h != "/ui/sweeps/tls-drift/runs/"+done.ID {
			t.Errorf("sweep event links to %q", h)
		}
		if h := js[string](b, `document.querySelector("#history a.sweep-link").getAttribute("href")`); h != "/ui/sweeps/tls-drift" {
			t.Errorf("sweep event's sweep link %q", h)
		}
		// Drift and agents that need attention are on the dashboard.
		b.do("dashboard", chromedp.Navigate(r.srv.URL+"/ui/"), chromedp.WaitVisible(id("drift")))
		if d := text(b, "#drift"); !strings.Contains(d, "tls-drift") || !strings.Contains(d, "1 drifted") || !strings.Contains(d, "web-2") || !strings.Contains(d, "1 missing") {
			t.Errorf("dashboard drift: %q", d)
		}
		if a := text(b, "#attention-list"); !strings.Contains(a, "web-2") || !strings.Contains(a, "openssl-3") {
			t.Errorf("dashboard attention: %q", a)
		}
		b.shotWidths("dashboard")
	})

	t.Run("FilterEventsByAgentName", func(t *testing.T) {
		b := b.with(t)
		b.do("events", chromedp.Navigate(r.srv.URL+"/ui/events"), chromedp.WaitVisible(id("filter-agent")))
		opts := js[[]string](b, `Array.from(document.querySelectorAll("#agent-options option")).map(o => o.value)`)
		if !strings.Contains(strings.Join(opts, ","), "web-2") || len(opts) != len(r.agent) {
			t.Errorf("agent suggestions %v, want the fleet's %d names", opts, len(r.agent))
		}
		migs := js[[]string](b, `Array.from(document.querySelectorAll("#filter-migration option")).map(o => o.value)`)
		if strings.Join(migs, ",") != ",openssl-3,web-tls" {
			t.Errorf("migration choices %v", migs)
		}
		b.do("filter by web-2's name", chromedp.SendKeys(id("filter-agent"), "web-2"),
			chromedp.SetValue(id("filter-migration"), "openssl-3"),
			click(css(`form.filters button[type="submit"]`)), until(`location.search.includes("agent=web-2")`), chromedp.WaitVisible(css("#history table.events")))
		agents := js[[]string](b, `Array.from(document.querySelectorAll("#history table.events tbody tr td:nth-child(4)")).map(td => td.innerText.trim())`)
		if len(agents) == 0 {
			t.Fatal("no event of web-2 listed")
		}
		for _, a := range agents {
			if a != "web-2" {
				t.Errorf("filtered by web-2, an event of %q is listed", a)
			}
		}
		if v := js[string](b, `document.getElementById("filter-agent").value`); v != "web-2" {
			t.Errorf("the filter shows %q", v)
		}
		b.do("an unknown name", chromedp.Navigate(r.srv.URL+"/ui/events?agent=nobody"), chromedp.WaitVisible(css(".filters + .flash-error")))
		if e := text(b, ".filters + .flash-error"); !strings.Contains(e, "agent") || !strings.Contains(e, "nobody") {
			t.Errorf("unknown agent: %q", e)
		}
	})

	t.Run("ErrorsOverTime", func(t *testing.T) {
		b := b.with(t)
		// The rig's own failure of web-tls counts on the dashboard, not on openssl-3's page.
		for page, executions := range map[string]int{"/ui/": 3, "/ui/migrations/openssl-3": 2} {
			b.do("chart on "+page, chromedp.Navigate(r.srv.URL+page), chromedp.WaitVisible(css("#errors-chart svg.chart")))
			if n := js[int](b, `document.querySelectorAll("#errors-chart svg.chart rect[class^='ch-']").length`); n == 0 {
				t.Errorf("%s: the chart has no bars", page)
			}
			legend := strings.Join(strings.Fields(text(b, "#errors-chart ul.chart-legend")), " ")
			if !strings.Contains(legend, fmt.Sprintf("ERROR migration.execution.failed %d", executions)) || !strings.Contains(legend, "migration.rollback.failed 1") || !strings.Contains(strings.ToUpper(legend), "ERROR") {
				t.Errorf("%s: legend %q, want per type and severity with counts", page, legend)
			}
			b.do("the last hour", click(css(`#errors-chart a.chip[href*="chart=hour"]`)), until(`location.search.includes("chart=hour")`),
				chromedp.WaitVisible(css("#errors-chart svg.chart")))
			if tt := js[string](b, `document.querySelector("#errors-chart svg.chart rect[class^='ch-'] title").textContent`); !strings.Contains(tt, "UTC:") {
				t.Errorf("%s: a bar's title %q", page, tt)
			}
		}
	})
}
