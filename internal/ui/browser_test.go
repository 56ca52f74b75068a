package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"godwit.dev/godwit/internal/wire"
)

// driftSweep finds web-2 drifted: the demo leaves a "disk full" marker in its work directory,
// where checks run. It has no schedule: it runs when triggered.
const driftSweep = `apiVersion: godwit.dev/v1
kind: Sweep
metadata:
  name: disk-drift
  description: No agent of the demo pretends its disk is full.
spec:
  selector:
    matchLabels: {demo: "true"}
  check:
    command: test ! -e simulate-disk-full
`

// nightlySweep has a schedule (once a year, so that it never fires by itself during the test):
// the suspend/resume toggle is about it.
const nightlySweep = `apiVersion: godwit.dev/v1
kind: Sweep
metadata:
  name: nightly-drift
spec:
  schedule: "0 3 1 1 *"
  selector:
    matchLabels: {demo: "true"}
  check:
    command: test ! -e simulate-disk-full
`

// The browser tests drive Debian's Chromium with chromedp against a real hub with real agents.
// GODWIT_TEST_CHROMIUM names the browser; scripts/test sets it to the Chromium it found or
// installed, and when it is set the tests must run: a browser it names that is not there fails
// them. Without it they look for Chromium on PATH and skip when there is none, except under
// CI=true, where they must run.

func chromium(t *testing.T) string {
	t.Helper()
	if name := os.Getenv("GODWIT_TEST_CHROMIUM"); name != "" {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("GODWIT_TEST_CHROMIUM=%s: %v (the browser tests must run with the browser it names)", name, err)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium found (install it: apt-get install chromium, or run ./scripts/test, which does; or set GODWIT_TEST_CHROMIUM); the browser tests need it"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: the browser tests are mandatory)")
	}
	t.Skip(msg)
	return ""
}

// artifacts is where screenshots go: $GODWIT_TEST_ARTIFACTS/ui, else test-artifacts/ui at the
// module root (git-ignored).
func artifacts(t *testing.T) string {
	t.Helper()
	root := os.Getenv("GODWIT_TEST_ARTIFACTS")
	if root == "" {
		dir, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				dir = t.TempDir()
				break
			}
			dir = parent
		}
		root = filepath.Join(dir, "test-artifacts")
	}
	out := filepath.Join(root, "ui")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// chrome is one headless Chromium with a fresh profile.
type chrome struct {
	ctx   context.Context
	shots string
	mu    sync.Mutex
	logs  []string
}

// browser is the Chromium as one (sub)test uses it: failures are that test's.
type browser struct {
	t *testing.T
	*chrome
}

func (b *browser) with(t *testing.T) *browser { return &browser{t: t, chrome: b.chrome} }

type void = chromedp.Void

func newBrowser(t *testing.T, exe string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		// The machine's network is closed: without these Chromium stalls on its own traffic.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1360, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t, chrome: &chrome{shots: artifacts(t)}}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(func(f string, a ...any) {
		b.mu.Lock()
		b.logs = append(b.logs, fmt.Sprintf(f, a...))
		b.mu.Unlock()
	}))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		if t.Failed() {
			b.mu.Lock()
			defer b.mu.Unlock()
			for _, l := range b.logs {
				t.Log("chromedp: " + l)
			}
		}
	})
	// The first run starts the browser and must not have a deadline of its own (the browser
	// lives as long as that call's context), so a watchdog bounds it instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start chromium %s: %v", exe, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("chromium %s did not start within 60s", exe)
	}
	b.ctx = ctx
	return b
}

func (b *browser) fail(what string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	b.shot("failed-" + strings.NewReplacer(" ", "-", "/", "-", "'", "").Replace(what))
	b.t.Fatalf("%s (at %s): %v", what, loc, err)
}

// do runs steps with a deadline; the test fails with what was being done.
func (b *browser) do(what string, steps ...chromedp.Action[void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fail(what, err)
	}
}

// get runs one action that reads a value.
func get[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fail(what, err)
	}
	return v
}

// js evaluates a JavaScript expression.
func js[T any](b *browser, expr string) T {
	b.t.Helper()
	return get(b, expr, chromedp.Evaluate[T](expr))
}

// shot saves a full-page PNG screenshot as name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	b.t.Logf("screenshot %s", path)
}

// until waits until the JavaScript expression is true. It asks again while the page navigates
// (an evaluation then fails because its document went away).
func until(expr string) chromedp.Action[void] {
	return func(ctx context.Context, t *chromedp.Target) (void, error) {
		var last error
		for {
			ok, err := chromedp.Evaluate[bool]("Boolean("+expr+")")(ctx, t)
			if err == nil && ok {
				return void{}, nil
			}
			if err != nil {
				last = err
			}
			select {
			case <-ctx.Done():
				if last != nil {
					return void{}, fmt.Errorf("waiting for %s: %w (last error: %v)", expr, ctx.Err(), last)
				}
				return void{}, fmt.Errorf("waiting for %s: %w", expr, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

type (
	id  = chromedp.ID
	css = chromedp.CSS
)

// click clicks what sel finds, and finds it again when a live update replaced the element between
// the finding and the click (the pages re-render parts of themselves over server-sent events, and
// the browser then reports the node it was given as gone).
func click[S chromedp.Selectable](sel S) chromedp.Action[void] {
	return func(ctx context.Context, t *chromedp.Target) (void, error) {
		for {
			_, err := chromedp.Click(sel)(ctx, t)
			if err == nil || !strings.Contains(err.Error(), "Could not find node with given id") {
				return void{}, err
			}
			select {
			case <-ctx.Done():
				return void{}, fmt.Errorf("click: %w (last error: %v)", ctx.Err(), err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func TestBrowser(t *testing.T) {
	exe := chromium(t)
	f := startFleet(t)
	b := newBrowser(t, exe)
	web2 := f.agents["web-2"]

	t.Run("RefusedWithoutLogin", func(t *testing.T) {
		b := b.with(t)
		b.do("open a migration page without a session",
			chromedp.Navigate(f.base+"/ui/migrations/db-slow-upgrade"),
			chromedp.WaitVisible(id("token")),
		)
		loc := get(b, "location", chromedp.Location())
		next := get(b, "next", chromedp.Value(css(`input[name="next"]`)))
		if u, _ := url.Parse(loc); u.Path != "/ui/login" || next != "/ui/migrations/db-slow-upgrade" {
			t.Fatalf("without a session the browser is at %s (next %q), want the login page", loc, next)
		}
		b.shot("01-login")
		// No page, action or stream answers without a session, whatever the client.
		c := client()
		for _, path := range []string{"/ui/", "/ui/agents/" + web2, "/ui/migrations", "/ui/dead-letters", "/ui/events", "/ui/nonexistent"} {
			res, err := c.Get(f.base + path)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/ui/login") {
				t.Errorf("GET %s without a session: %s to %q, want 303 to the login page", path, res.Status, res.Header.Get("Location"))
			}
		}
		res, err := c.Get(f.base + "/ui/live?topic=dashboard")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET /ui/live without a session: %s, want 401", res.Status)
		}
		if res := postForm(t, c, f.base+"/ui/migrations/db-slow-upgrade/pause", url.Values{"confirm": {"yes"}}, nil); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST pause without a session: %s, want 401", res.Status)
		}
		var d struct{ Migration struct{ State string } }
		f.api("GET", "/api/v1/migrations/db-slow-upgrade", "", "", &d)
		if d.Migration.State != "running" {
			t.Fatalf("db-slow-upgrade is %s after refused requests, want running", d.Migration.State)
		}
	})

	t.Run("Login", func(t *testing.T) {
		b := b.with(t)
		b.do("log in with a wrong token",
			chromedp.SendKeys(id("token"), "gwa_not-the-token"),
			click(id("login-submit")),
			chromedp.WaitVisible(css(`.login .flash-error`)),
		)
		b.do("log in with the admin token",
			chromedp.SendKeys(id("token"), f.token),
			click(id("login-submit")),
			// next= takes the browser where it wanted to go.
			chromedp.WaitVisible(id("migration-state")),
		)
		if !js[bool](b, `!document.cookie.includes("godwit_session")`) {
			t.Error("the session cookie is visible to scripts")
		}
		b.do("open the dashboard",
			chromedp.Navigate(f.base+"/ui/"),
			chromedp.WaitVisible(id("count-online")),
			until(`document.querySelector('#count-online').textContent.trim() === '3'`),
			until(`document.querySelectorAll('#dashboard tr.sev-error').length > 0`),
		)
		b.shot("02-dashboard")
	})

	t.Run("Agents", func(t *testing.T) {
		b := b.with(t)
		b.do("list agents",
			chromedp.Navigate(f.base+"/ui/agents"),
			chromedp.WaitVisible(css(`table.agents`)),
		)
		b.shot("03-agents")
		b.do("filter by label",
			chromedp.SendKeys(css(`input[name="label"]`), "role=web"),
			chromedp.Submit(css(`input[name="label"]`)),
			until(`location.search.includes('label=role')`),
			chromedp.WaitVisible(css(`table.agents`)),
		)
		if rows := js[int](b, `document.querySelectorAll('table.agents tbody tr').length`); rows != 2 {
			t.Fatalf("label role=web lists %d agents, want 2", rows)
		}
	})

	t.Run("AgentHistory", func(t *testing.T) {
		b := b.with(t)
		b.do("open web-2's history and expand its error",
			chromedp.Navigate(f.base+"/ui/agents/"+web2),
			chromedp.WaitVisible(css(`#history tr.sev-error`)),
			click(css(`#history tr.sev-error details.err-details summary`)),
			chromedp.WaitVisible(css(`#history tr.sev-error details.err-details pre.error-text`)),
		)
		errText := get(b, "error text", chromedp.Text(css(`#history tr.sev-error details.err-details pre.error-text`)))
		sevLabel := get(b, "severity label", chromedp.Text(css(`#history tr.sev-error .badge-text`)))
		open := js[bool](b, `document.querySelector('#history tr.sev-error details.err-details').open`)
		if !open || !strings.Contains(errText, "no space left on device") || !strings.Contains(errText, "write-v2") {
			t.Fatalf("expanded error (open %v): %q; want the failed step write-v2 and its stderr", open, errText)
		}
		// Severity is written, not only coloured.
		if !strings.EqualFold(sevLabel, "error") {
			t.Fatalf("error row's badge says %q", sevLabel)
		}
		b.shot("04-agent-history-error-expanded")
	})

	t.Run("FilterBySeverity", func(t *testing.T) {
		b := b.with(t)
		all := js[int](b, `document.querySelectorAll('#history tr.ev').length`)
		b.do("filter by severity error",
			click(css(`input[name="severity"][value="error"]`)),
			chromedp.Submit(css(`input[name="severity"][value="error"]`)),
			until(`location.search.includes('severity=error')`),
			chromedp.WaitVisible(css(`#history tr.ev`)),
		)
		errorsOnly := js[int](b, `document.querySelectorAll('#history tr.ev[data-severity="error"]').length`)
		others := js[int](b, `document.querySelectorAll('#history tr.ev:not([data-severity="error"])').length`)
		if errorsOnly == 0 || others != 0 || errorsOnly >= all {
			t.Fatalf("severity=error shows %d error rows and %d others (of %d before)", errorsOnly, others, all)
		}
		b.shot("05-agent-history-errors-only")
	})

	t.Run("PauseResumeWithoutReload", func(t *testing.T) {
		b := b.with(t)
		b.do("open the running migration",
			chromedp.Navigate(f.base+"/ui/migrations/db-slow-upgrade"),
			until(`document.querySelector('#migration-state').dataset.state === 'running'`),
			// The live stream is open before anything changes.
			until(`document.querySelector('#live-indicator').dataset.state === 'on'`),
		)
		js[bool](b, `window.__sameDocument = true`)
		b.shot("06-migration-running")
		b.do("pause asks for confirmation",
			click(id("action-pause")),
			chromedp.WaitVisible(id("confirm-dialog")),
		)
		b.shot("07-confirm-pause")
		b.do("confirm the pause",
			click(id("confirm-ok")),
			until(`document.querySelector('#migration-state').dataset.state === 'paused'`),
			chromedp.WaitVisible(id("action-resume")),
		)
		b.do("the operator action is recorded with who did it, and shows up live",
			until(`[...document.querySelectorAll('#migration-events tr[data-type="operator.action"]')].some(r => /paused by operator \(by ui:[0-9a-f]{8}\)/.test(r.textContent))`),
		)
		b.shot("08-migration-paused")
		b.do("resume, confirmed",
			click(id("action-resume")),
			chromedp.WaitVisible(id("confirm-dialog")),
			click(id("confirm-ok")),
			until(`document.querySelector('#migration-state').dataset.state === 'running'`),
		)
		// A change made elsewhere (the CLI, another operator) arrives over the live stream.
		f.api("POST", "/api/v1/migrations/db-slow-upgrade/pause", "", "", nil)
		b.do("a pause through the API shows up without reloading",
			until(`document.querySelector('#migration-state').dataset.state === 'paused'`),
		)
		f.api("POST", "/api/v1/migrations/db-slow-upgrade/resume", "", "", nil)
		b.do("and the resume too",
			until(`document.querySelector('#migration-state').dataset.state === 'running'`),
		)
		if !js[bool](b, `window.__sameDocument === true`) {
			t.Fatal("the page was reloaded")
		}
		b.shot("09-migration-resumed")
	})

	t.Run("MigrationWithFailure", func(t *testing.T) {
		b := b.with(t)
		b.do("the demo migration groups web-2's failure",
			chromedp.Navigate(f.base+"/ui/migrations/demo-config-v2"),
			chromedp.WaitVisible(css(`#failures table`)),
		)
		group := get(b, "failure group", chromedp.Text(css(`#failures tbody tr`)))
		if !strings.Contains(group, "web-2") || !strings.Contains(group, "write-v2") || !strings.Contains(group, "no space left on device") {
			t.Fatalf("failure group %q does not name web-2, the step write-v2 and the error", group)
		}
		b.shot("10-migration-partially-succeeded")
	})

	t.Run("SweepRunNow", func(t *testing.T) {
		b := b.with(t)
		f.api("POST", "/api/v1/sweeps", "application/yaml", driftSweep, nil)
		b.do("open the sweeps list and the sweep",
			chromedp.Navigate(f.base+"/ui/sweeps"),
			chromedp.WaitVisible(css(`table.sweeps tr[data-sweep="disk-drift"]`)),
			click(css(`table.sweeps tr[data-sweep="disk-drift"] a`)),
			chromedp.WaitVisible(id("run-now")),
			until(`document.querySelector('#live-indicator').dataset.state === 'on'`),
		)
		js[bool](b, `window.__sameDocument = true`)
		b.do("run it now with a budget, confirmed",
			chromedp.SendKeys(id("max-seconds"), "60"),
			click(id("run-now")),
			chromedp.WaitVisible(id("confirm-dialog")),
			click(id("confirm-ok")),
			until(`/Run [0-9a-f-]+ started\./.test(document.querySelector('#flash').textContent)`),
		)
		// The real agents answer; the runs table follows the run over the live stream.
		ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, until(`document.querySelector('#runs tr.run[data-status="completed"]') !== null`)); err != nil {
			b.fail("the run completes", err)
		}
		row := get(b, "run row", chromedp.Text(css(`#runs tr.run`)))
		drifted := get(b, "drifted agents", chromedp.Text(css(`#runs tr.run td.drifted`)))
		if !regexp.MustCompile(`by ui:[0-9a-f]{8}`).MatchString(row) || !strings.Contains(strings.ToLower(row), "completed: drift") || !strings.Contains(row, "budget 60 s") || drifted != "web-2" {
			t.Fatalf("run row %q (drifted %q): want a run by ui:<session> that found web-2 drifted", row, drifted)
		}
		if !js[bool](b, `document.querySelector('#runs td.drifted a').getAttribute('href') === '/ui/agents/`+web2+`'`) {
			t.Error("the drifted agent does not link to its page")
		}
		if !js[bool](b, `window.__sameDocument === true`) {
			t.Fatal("the page was reloaded")
		}
		b.shot("14-sweep-run")
		// A refused request is shown in place, with the reason (the field checks its value first;
		// here it is made a text field so that the hub sees a bad one).
		js[bool](b, `(() => { const i = document.querySelector('#max-seconds'); i.type = 'text'; i.value = 'soon'; return true })()`)
		b.do("a bad budget is refused with the reason, in place",
			click(id("run-now")),
			chromedp.WaitVisible(id("confirm-dialog")),
			click(id("confirm-ok")),
			until(`/Max_seconds: must be a whole number/.test(document.querySelector('#flash .flash-error')?.textContent || '')`),
		)
		if !js[bool](b, `window.__sameDocument === true && location.pathname === '/ui/sweeps/disk-drift'`) {
			t.Fatal("the refused request left the page")
		}
		b.do("the sweeps list shows the latest run",
			chromedp.Navigate(f.base+"/ui/sweeps"),
			chromedp.WaitVisible(css(`table.sweeps tr[data-sweep="disk-drift"] .badge-warning`)),
		)
		b.shot("13-sweeps")
	})

	t.Run("SweepSuspendToggle", func(t *testing.T) {
		b := b.with(t)
		f.api("POST", "/api/v1/sweeps", "application/yaml", nightlySweep, nil)
		b.do("open the scheduled sweep",
			chromedp.Navigate(f.base+"/ui/sweeps/nightly-drift"),
			chromedp.WaitVisible(id("suspend-sweep")),
			chromedp.WaitVisible(css(`#next-firings li`)),
			until(`document.querySelector('#live-indicator').dataset.state === 'on'`),
		)
		js[bool](b, `window.__sameDocument = true`)
		b.do("suspend it with a reason: the dialog says what it does",
			chromedp.SendKeys(id("suspend-reason"), "canary first"),
			click(id("suspend-sweep")),
			chromedp.WaitVisible(id("confirm-dialog")),
			until(`document.querySelector('#confirm-title').textContent === 'Suspend sweep nightly-drift?'`),
			until(`/No scheduled run fires/.test(document.querySelector('#confirm-detail').textContent)`),
		)
		b.shot("15-sweep-suspend-confirm")
		b.do("confirm: the page shows it suspended, in place",
			click(id("confirm-ok")),
			until(`/Sweep nightly-drift suspended/.test(document.querySelector('#flash').textContent)`),
			chromedp.WaitVisible(id("suspended-banner")),
			chromedp.WaitVisible(id("resume-sweep")),
		)
		banner := get(b, "banner", chromedp.Text(id("suspended-banner")))
		if !regexp.MustCompile(`Suspended since .* by ui:[0-9a-f]{8} via ui: \W?canary first\W?\. No scheduled run fires until it is resumed`).MatchString(banner) {
			t.Fatalf("banner %q does not say who suspended it, how, why, and what it means", banner)
		}
		if !js[bool](b, `window.__sameDocument === true && document.querySelector('#suspend-sweep') === null`) {
			t.Fatal("the page was reloaded, or still offers suspend")
		}
		var sum struct {
			Suspended  bool
			Suspension struct{ By, Via, Reason string }
		}
		f.api("GET", "/api/v1/sweeps/nightly-drift", "", "", &sum)
		if !sum.Suspended || sum.Suspension.Via != "ui" || sum.Suspension.Reason != "canary first" || !strings.HasPrefix(sum.Suspension.By, "ui:") {
			t.Fatalf("the hub has %+v", sum)
		}
		b.shot("16-sweep-suspended")

		// The canary: Run now runs the suspended sweep, recorded as a manual run.
		b.do("run the canary while suspended",
			click(id("run-now")),
			chromedp.WaitVisible(id("confirm-dialog")),
			click(id("confirm-ok")),
			until(`/Run [0-9a-f-]+ started\./.test(document.querySelector('#flash').textContent)`),
		)
		ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, until(`document.querySelector('#runs tr.run[data-status="completed"]') !== null`)); err != nil {
			b.fail("the canary completes", err)
		}
		if row := get(b, "canary row", chromedp.Text(css(`#runs tr.run`))); !regexp.MustCompile(`api by ui:[0-9a-f]{8}`).MatchString(row) {
			t.Fatalf("canary row %q: want a manual (api) run by the session", row)
		}

		// Cancelling the dialog changes nothing.
		b.do("start a resume and cancel it",
			click(id("resume-sweep")),
			chromedp.WaitVisible(id("confirm-dialog")),
			until(`/resumePolicy|no scheduled firing came due|No scheduled firing came due/i.test(document.querySelector('#confirm-detail').textContent)`),
			click(id("confirm-cancel")),
			chromedp.WaitNotVisible(id("confirm-dialog")),
		)
		f.api("GET", "/api/v1/sweeps/nightly-drift", "", "", &sum)
		if !sum.Suspended {
			t.Fatal("a cancelled resume resumed the sweep")
		}
		b.do("the sweeps list shows it suspended",
			chromedp.Navigate(f.base+"/ui/sweeps"),
			chromedp.WaitVisible(css(`table.sweeps tr[data-sweep="nightly-drift"] .badge-muted`)),
		)
		if txt := get(b, "list row", chromedp.Text(css(`table.sweeps tr[data-sweep="nightly-drift"]`))); !strings.Contains(strings.ToLower(txt), "suspended") {
			t.Fatalf("sweeps list row %q does not say suspended", txt)
		}
		b.do("resume it from its page",
			chromedp.Navigate(f.base+"/ui/sweeps/nightly-drift"),
			chromedp.WaitVisible(id("resume-sweep")),
			click(id("resume-sweep")),
			chromedp.WaitVisible(id("confirm-dialog")),
			click(id("confirm-ok")),
			until(`/Sweep nightly-drift resumed\./.test(document.querySelector('#flash').textContent)`),
			chromedp.WaitVisible(id("suspend-sweep")),
			chromedp.WaitVisible(css(`#next-firings li`)),
		)
		if js[bool](b, `document.querySelector('#suspended-banner') !== null`) {
			t.Fatal("the banner is still shown after the resume")
		}
		f.api("GET", "/api/v1/sweeps/nightly-drift", "", "", &sum)
		if sum.Suspended {
			t.Fatal("the hub still has the sweep suspended")
		}
		b.shot("17-sweep-resumed")
		// Both are operator actions in the events (which the ingest stores asynchronously).
		f.eventually(20*time.Second, "the suspend and the resume are operator.action events", func() error {
			var evs struct {
				Items []struct {
					Subject string
					Data    struct {
						Extra struct{ Action, Actor, Via string }
					}
				}
			}
			f.api("GET", "/api/v1/events?type=operator.action&limit=50", "", "", &evs)
			var acts []string
			for _, e := range evs.Items {
				if x := e.Data.Extra; e.Subject == "sweep/nightly-drift" && x.Action != "" {
					acts = append(acts, x.Action+"/"+x.Via)
				}
			}
			if strings.Join(acts, " ") != "resume/ui suspend/ui" {
				return fmt.Errorf("operator.action events (newest first) = %v, want a resume and a suspend via the UI", acts)
			}
			return nil
		})
	})

	t.Run("DeadLetters", func(t *testing.T) {
		b := b.with(t)
		f.deadLetter(`not an event <script>alert("x")</script>`)
		b.do("a dead letter is listed",
			chromedp.Navigate(f.base+"/ui/dead-letters"),
			// The ingest dead-letters it asynchronously: the page updates itself when it does.
			chromedp.WaitVisible(css(`table.deadletters`)),
		)
		b.shot("11-dead-letters")
		b.do("inspect it",
			click(css(`table.deadletters tbody tr a`)),
			chromedp.WaitVisible(id("payload")),
		)
		payload := get(b, "payload", chromedp.Text(id("payload")))
		if !strings.Contains(payload, `<script>alert("x")</script>`) || js[bool](b, `document.querySelectorAll('#payload script').length > 0`) {
			t.Fatalf("payload shown as %q, or as markup", payload)
		}
		b.shot("12-dead-letter")
		b.do("purge it, confirmed",
			click(id("purge")),
			chromedp.WaitVisible(id("confirm-dialog")),
			click(id("confirm-ok")),
			until(`location.pathname === '/ui/dead-letters' && document.querySelector('.flash-ok') !== null`),
			until(`document.querySelector('table.deadletters') === null`),
		)
	})

	t.Run("FailoverGroup", func(t *testing.T) {
		b := b.with(t)
		group := fmt.Sprintf(`apiVersion: godwit.dev/v1
kind: FailoverGroup
metadata: {name: ui-pair}
spec:
  members:
    - {agent: %s, priority: 100}
    - {agent: %s, priority: 50}
  hooks:
    onPromote: {command: "true", timeout: 10s}
    onFence: {command: "true", timeout: 2s}
`, f.agents["web-1"], f.agents["db-1"])
		f.api("POST", "/api/v1/failovergroups", "application/yaml", group, nil)
		// The agents get the group over the bus, elect a primary and report it; the page
		// shows it when the transitions arrive.
		b.do("the group's page shows the primary its members elected",
			chromedp.Navigate(f.base+"/ui/failovergroups/ui-pair"),
			chromedp.WaitVisible(id("members")),
			until(`document.querySelector('tr[data-primary="true"] .badge-ok') !== null`),
		)
		b.shot("18-failover-group")
		b.do("pause it with a reason, confirmed",
			chromedp.SendKeys(id("pause-reason"), "ui test"),
			click(id("pause-group")),
			chromedp.WaitVisible(id("confirm-dialog")),
			click(id("confirm-ok")),
			until(`document.querySelector('#paused-banner') !== null`),
			chromedp.WaitVisible(id("resume-group")),
		)
		var g wire.FailoverGroup
		f.api("GET", "/api/v1/failovergroups/ui-pair", "", "", &g)
		if !g.Paused || g.PauseReason != "ui test" {
			t.Fatalf("after the pause the hub has paused %v, reason %q", g.Paused, g.PauseReason)
		}
		b.do("the list shows it paused",
			chromedp.Navigate(f.base+"/ui/failovergroups"),
			chromedp.WaitVisible(css(`tr[data-group="ui-pair"] .group-mode .badge-warning`)),
		)
		b.shot("19-failover-groups")
	})

	t.Run("Logout", func(t *testing.T) {
		b := b.with(t)
		b.do("log out",
			chromedp.Navigate(f.base+"/ui/"),
			click(css(`.logout button`)),
			chromedp.WaitVisible(id("token")),
			chromedp.Navigate(f.base+"/ui/agents"),
			chromedp.WaitVisible(id("token")),
		)
		if u, _ := url.Parse(get(b, "location", chromedp.Location())); u.Path != "/ui/login" {
			t.Fatalf("after logout the agents page is at %s, want the login page", u)
		}
	})
}
