// Package readme runs the README's "A short tour" the way a newcomer would: the commands are read
// from the README's code block when the test runs (so editing the README changes what is tested),
// and each is typed, in order, into one bash that lives for the whole tour.
//
// What differs from a newcomer's machine, and nothing else:
//   - HOME is a temp dir, so the hub's data dir (~/.godwit/hub) and the client's discovery of it
//     are the test's own; inherited GODWIT_* variables are dropped. The Go caches keep their real
//     places (GOCACHE, GOMODCACHE, GOPATH, GOENV are set from `go env`), so the tour's go build is
//     an incremental build.
//   - The hub listens on random free ports: GODWIT_LISTEN and GODWIT_NATS_LISTEN are 127.0.0.1:0
//     (the defaults are 127.0.0.1:7750 and :7751). Once the hub is up, its address is read from its
//     endpoint file and "127.0.0.1:7750" in the later commands is replaced by it.
//   - "/tmp/" in a command (the agents' state dirs) is replaced by a temp dir of the test.
//   - The commands run in a temp dir holding a symlink to each top-level entry of the module
//     (go.mod, cmd, internal, examples, …), so ./godwit is built there, not in the source tree.
//   - A newcomer waits for things to happen between commands; the test polls for the same
//     condition with a deadline (the agents enrolled, the canary done, …) before the next one.
//   - A command that runs until interrupted (events --follow) is started in the background,
//     read until it shows what it promises, and then interrupted as with Ctrl-C; xdg-open is not
//     run, the page it would open is fetched instead.
//
// Every command must exit 0 (one started in the background: its start; apply --wait & is checked
// when the migration it watches ends). Where the README's comment promises something cheap to see,
// the check asserts it. A check whose command left the README fails the test, so the checks cannot
// silently stop running. Everything the tour started is killed at the end.
package readme

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/syncbuf"
)

// hubDefault is the hub's default HTTP address as the README writes it.
const hubDefault = "127.0.0.1:7750"

// check is what the test knows about one command of the tour, found by a substring of its code.
type check struct {
	match   string
	timeout time.Duration            // for the command to finish (default 2 minutes)
	before  func(*tour)              // wait for what a newcomer would wait for
	after   func(*tour, *stepResult) // assert what the README promises
	follow  bool                     // runs until interrupted
	skip    string                   // not run; why
}

var checks = []check{
	{match: "go build -o godwit ./cmd/godwit", timeout: 15 * time.Minute, after: func(tr *tour, _ *stepResult) {
		fi, err := os.Stat(filepath.Join(tr.dir, "godwit"))
		if err != nil || fi.Mode()&0o111 == 0 {
			tr.t.Fatalf("go build left no executable ./godwit: %v", err)
		}
	}},
	{match: "./godwit hub &", after: func(tr *tour, r *stepResult) {
		tr.waitHub(r)
		// "Prints the admin token once (to a terminal only) and saves it (0600) in the data dir."
		// The tour runs without a terminal: the token stays out of the output, which says where
		// the file is.
		path := filepath.Join(tr.home, ".godwit", "hub", "admin.token")
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			tr.t.Fatalf("admin token file: %v (mode %v), want 0600", err, fi.Mode().Perm())
		}
		out := r.output()
		if strings.Contains(out, tr.token) {
			tr.t.Fatalf("the hub printed its admin token to a non-terminal:\n%s", out)
		}
		if !strings.Contains(out, path) {
			tr.t.Fatalf("the hub did not say where its admin token is (%s); it printed:\n%s", path, out)
		}
	}},
	{match: "token create --uses 5", after: func(tr *tour, _ *stepResult) {
		if n := strings.TrimSpace(tr.probe(`printf '%s' "${#TOKEN}"`).output()); n == "0" || n == "" {
			tr.t.Fatalf("TOKEN is empty after the token create command")
		}
	}},
	{match: "--enroll-token \"$TOKEN\"", after: func(tr *tour, _ *stepResult) {
		tr.eventually("5 agents web-1..web-5 enrolled and online", func() error {
			var l struct {
				Items []struct{ Name, Status string }
			}
			if err := tr.api("/api/v1/agents", &l); err != nil {
				return err
			}
			online := 0
			for _, a := range l.Items {
				if strings.HasPrefix(a.Name, "web-") && a.Status == "online" {
					online++
				}
			}
			if online != 5 {
				return fmt.Errorf("%d of 5 online: %+v", online, l.Items)
			}
			return nil
		})
	}},
	{match: "./godwit get agents", after: func(tr *tour, r *stepResult) {
		// "ID, NAME, STATUS, LAST SEEN, VERSION, LABELS, DEGRADED"
		out := r.output()
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 6 {
			tr.t.Fatalf("get agents: want a header and 5 agents, got:\n%s", out)
		}
		if !regexp.MustCompile(`^ID\s+NAME\s+STATUS\s+LAST SEEN\s+VERSION\s+LABELS\s+DEGRADED\s*$`).MatchString(lines[0]) {
			tr.t.Fatalf("get agents: header is %q", lines[0])
		}
		for i := 1; i <= 5; i++ {
			if !regexp.MustCompile(fmt.Sprintf(`(?m)\sweb-%d\s+online\s.*role=web`, i)).MatchString(out) {
				tr.t.Fatalf("get agents: no online web-%d with role=web in:\n%s", i, out)
			}
		}
	}},
	{match: "examples/five-agents.yaml --dry-run", after: func(tr *tour, r *stepResult) {
		// "which agent falls in which batch": a canary, then batches of 40%.
		out := r.output()
		if !strings.Contains(out, "web-tls-1-3 (dry run): 5 agents in 3 batches") {
			tr.t.Fatalf("dry run: want 5 agents in 3 batches, got:\n%s", out)
		}
		for i := 1; i <= 5; i++ {
			if !strings.Contains(out, fmt.Sprintf("web-%d", i)) {
				tr.t.Fatalf("dry run: web-%d is in no batch:\n%s", i, out)
			}
		}
		if tr.migration(nil) == nil {
			tr.t.Fatalf("the dry run created the migration")
		}
	}},
	{match: "examples/five-agents.yaml --wait &", after: func(tr *tour, r *stepResult) {
		tr.waitJob = r
		tr.eventually("apply --wait printing progress", func() error {
			if !strings.Contains(r.output(), "web-tls-1-3 [") {
				return fmt.Errorf("no progress line yet: %q", r.output())
			}
			return nil
		})
	}},
	{match: "./godwit approve web-tls-1-3", before: func(tr *tour) {
		tr.waitApproval(0) // the canary; then the migration waits for approval
	}, after: func(tr *tour, r *stepResult) {
		if !strings.Contains(r.output(), "batch 2 approved") {
			tr.t.Fatalf("approve: %s", r.output())
		}
	}},
	{match: "./godwit describe migration web-tls-1-3", before: func(tr *tour) {
		tr.waitApproval(1) // what was approved has run
	}, after: func(tr *tour, r *stepResult) {
		// "progress per batch, per-agent state, failures by cause"
		out := r.output()
		for _, want := range []string{"Name:     web-tls-1-3", "State:    paused", "waiting for approval of batch 3 of 3", "Progress:", "batch 1", "batch 2", "batch 3", "Agents:"} {
			if !strings.Contains(out, want) {
				tr.t.Fatalf("describe: no %q in:\n%s", want, out)
			}
		}
		if n := len(regexp.MustCompile(`(?m)^\s+web-\d\s+\d\s+1\s+succeeded\s`).FindAllString(out, -1)); n != 3 {
			tr.t.Fatalf("describe: want 3 agents succeeded (canary + batch 2), got %d in:\n%s", n, out)
		}
	}},
	{match: "./godwit rollback web-tls-1-3", after: func(tr *tour, r *stepResult) {
		if !strings.Contains(r.output(), "web-tls-1-3: rolling_back") {
			tr.t.Fatalf("rollback: %s", r.output())
		}
		// "every agent that changed runs its rollback"
		tr.eventually("the migration rolled back", func() error {
			var d description
			if err := tr.migration(&d); err != nil {
				return err
			}
			if d.Migration.State != "rolled_back" {
				return fmt.Errorf("state %s", d.Migration.State)
			}
			rolled := 0
			for _, a := range d.Assignments {
				if a.State == "rolled_back" {
					rolled++
				}
			}
			if rolled != 3 {
				return fmt.Errorf("%d of the 3 agents that changed rolled back", rolled)
			}
			return nil
		})
		// The apply --wait in the background watched it to the end: the migration did not
		// succeed, so it says how it ended and exits 1.
		if tr.waitJob != nil {
			w := tr.probe(fmt.Sprintf("wait %d", tr.waitJob.pid))
			out := tr.waitJob.output()
			if w.rc != 1 || !strings.Contains(out, "migration web-tls-1-3 ended rolled_back") {
				tr.t.Fatalf("apply --wait: exit %d, want 1 with the final state; it printed:\n%s", w.rc, out)
			}
		}
	}},
	{match: "./godwit events --severity error --since 1h", after: func(tr *tour, r *stepResult) {
		// Nothing in the tour fails: the search finds no error.
		if !regexp.MustCompile(`^TIME\s+SEVERITY\s+TYPE\s+AGENT\s+MIGRATION\s+DETAIL\s*$`).MatchString(r.output()) {
			tr.t.Fatalf("events --severity error: the tour logged errors:\n%s", r.output())
		}
	}},
	{match: "./godwit events --follow", follow: true, after: func(tr *tour, r *stepResult) {
		tr.eventually("events --follow showing the rollback", func() error {
			if !regexp.MustCompile(`(?m)^TIME\s+SEVERITY\s+TYPE`).MatchString(r.output()) || !strings.Contains(r.output(), "rolled_back") {
				return fmt.Errorf("not yet: %q", r.output())
			}
			return nil
		})
	}},
	{match: "./godwit status", after: func(tr *tour, r *stepResult) {
		// "agents by status, event pipeline lag, dead letters"
		out := r.output()
		if !regexp.MustCompile(`(?m)^agents\s+5 online, 0 offline`).MatchString(out) {
			tr.t.Fatalf("status: no 5 agents online in:\n%s", out)
		}
	}},
	{match: "./godwit dlq list", after: func(tr *tour, r *stepResult) {
		// "messages that could not be stored, with the reason": none in the tour.
		if !regexp.MustCompile(`^SEQ\s+TIME\s+SUBJECT\s+DELIVERIES\s+REASON\s*$`).MatchString(r.output()) {
			tr.t.Fatalf("dlq list: want the header and no dead letter, got:\n%s", r.output())
		}
	}},
	{match: "./godwit check", after: func(tr *tour, r *stepResult) {
		if !strings.Contains(r.output(), "no differences") {
			tr.t.Fatalf("check: after the rollback the hub and the agents agree, but:\n%s", r.output())
		}
	}},
	{match: "/metrics | grep '^godwit_'", after: func(tr *tour, r *stepResult) {
		lines := strings.Split(strings.TrimSpace(r.output()), "\n")
		if len(lines) < 10 {
			tr.t.Fatalf("metrics: want the godwit_ series, got:\n%s", r.output())
		}
		for _, l := range lines {
			if !strings.HasPrefix(l, "godwit_") {
				tr.t.Fatalf("metrics: line %q", l)
			}
		}
	}},
	{match: "./godwit apply -f examples/tls-drift.yaml", after: func(tr *tour, r *stepResult) {
		if !strings.Contains(r.output(), "sweep tls-drift created: 5 agents match now") {
			tr.t.Fatalf("apply sweep: want the sweep created with the 5 web agents, got:\n%s", r.output())
		}
	}},
	{match: "./godwit sweep run tls-drift", after: func(tr *tour, r *stepResult) {
		// The rollback took min_tls=1.3 away again: every web agent has drifted.
		if !strings.Contains(r.output(), "5/5 settled (drifted 5, clean 0") {
			tr.t.Fatalf("sweep run: want all 5 agents drifted after the rollback, got:\n%s", r.output())
		}
	}},
	{match: "xdg-open http://" + hubDefault + "/ui/", skip: "opens a browser; the page it would open is fetched instead", after: func(tr *tour, _ *stepResult) {
		resp, err := http.Get("http://" + tr.hubAddr + "/ui/")
		if err != nil {
			tr.t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("<form")) {
			tr.t.Fatalf("GET /ui/: %d, want the login page:\n%s", resp.StatusCode, body)
		}
	}},
}

func TestShortTour(t *testing.T) {
	if testing.Short() {
		t.Skip("the tour builds the binary and runs a hub and 5 agents; skipped in -short mode")
	}
	root := moduleRoot(t)
	stmts := tourCommands(t, filepath.Join(root, "README.md"))
	tr := startTour(t, root)
	used := make([]bool, len(checks))
	for _, stmt := range stmts {
		code := stripComments(stmt)
		var c check
		for i, k := range checks {
			if strings.Contains(code, k.match) {
				c, used[i] = k, true
				break
			}
		}
		if c.skip != "" {
			t.Logf("$ %s\n  (not run: %s)", stmt, c.skip)
			if c.after != nil {
				c.after(tr, nil)
			}
			continue
		}
		if c.before != nil {
			c.before(tr)
		}
		run := tr.rewrite(stmt)
		if c.follow {
			run = tr.rewrite(code) + " &"
		}
		t.Logf("$ %s", run)
		r := tr.step(run, cmp.Or(c.timeout, 2*time.Minute))
		if c.follow {
			if c.after != nil {
				c.after(tr, r)
			}
			if err := syscall.Kill(r.pid, syscall.SIGINT); err != nil {
				t.Fatalf("interrupt %s: %v", code, err)
			}
			if w := tr.probe(fmt.Sprintf("wait %d", r.pid)); w.rc != 0 {
				t.Fatalf("%s: exit %d after Ctrl-C; it printed:\n%s", code, w.rc, r.output())
			}
			continue
		}
		if !strings.HasSuffix(code, "&") {
			t.Logf("%s", head(r.output(), 30))
		}
		if r.rc != 0 {
			t.Fatalf("%s: exit %d, want 0; it printed:\n%s", stmt, r.rc, r.output())
		}
		if c.after != nil {
			c.after(tr, r)
		}
	}
	for i, k := range checks {
		if !used[i] {
			t.Errorf("the README's tour no longer has a command with %q: update this test's checks", k.match)
		}
	}
}

// tourCommands reads the code block under "## A short tour" and splits it into the commands a
// newcomer would type one at a time: a line, with its continuation lines (trailing \) and, for a
// compound command (for … done), the lines up to its end. bash -n decides what is complete.
func tourCommands(t *testing.T, readme string) []string {
	t.Helper()
	raw, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "\n## A short tour\n")
	if !ok {
		t.Fatalf("%s has no \"## A short tour\" section", readme)
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatalf("%s: the short tour has no ```sh code block", readme)
	}
	block, _, ok := strings.Cut(rest, "\n```")
	if !ok {
		t.Fatalf("%s: the short tour's code block is not closed", readme)
	}
	var stmts []string
	var cur []string
	for _, line := range strings.Split(block, "\n") {
		if len(cur) == 0 && (strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#")) {
			continue
		}
		cur = append(cur, line)
		if strings.HasSuffix(line, `\`) {
			continue
		}
		text := strings.Join(cur, "\n")
		cmd := exec.Command("bash", "-n")
		cmd.Stdin = strings.NewReader(text + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			if strings.Contains(string(out), "unexpected end of file") {
				continue // a compound command goes on
			}
			t.Fatalf("the README's tour has a shell syntax error in %q: %s", text, out)
		}
		stmts = append(stmts, text)
		cur = nil
	}
	if len(cur) > 0 {
		t.Fatalf("the README's tour ends inside a command: %q", strings.Join(cur, "\n"))
	}
	if len(stmts) < 10 {
		t.Fatalf("the README's tour has only %d commands; the split went wrong: %q", len(stmts), stmts)
	}
	return stmts
}

// stripComments removes shell comments (a # that starts a word, outside quotes) from each line.
func stripComments(stmt string) string {
	lines := strings.Split(stmt, "\n")
	for i, l := range lines {
		var quote rune
		for j, r := range l {
			if quote != 0 {
				if r == quote {
					quote = 0
				}
				continue
			}
			if r == '\'' || r == '"' {
				quote = r
			} else if r == '#' && (j == 0 || l[j-1] == ' ' || l[j-1] == '\t') {
				l = l[:j]
				break
			}
		}
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// tour is the one bash the commands are typed into, and what the test learned on the way.
type tour struct {
	t         *testing.T
	dir, home string
	tmp       string // replaces /tmp/
	bash      *exec.Cmd
	stdin     io.WriteCloser
	markers   chan marker
	exited    chan struct{}
	stderr    *syncbuf.Buffer
	n         int

	hubAddr, token string
	waitJob        *stepResult
}

type marker struct {
	id, rc, pid int
}

// stepResult is one command's exit code and the file its output goes to (a background command
// keeps writing to it).
type stepResult struct {
	rc, pid int
	file    string
}

func (r *stepResult) output() string {
	b, _ := os.ReadFile(r.file)
	return string(b)
}

func startTour(t *testing.T, root string) *tour {
	t.Helper()
	base := t.TempDir()
	tr := &tour{t: t, dir: filepath.Join(base, "work"), home: filepath.Join(base, "home"), tmp: filepath.Join(base, "tmp") + "/",
		markers: make(chan marker, 16), exited: make(chan struct{}), stderr: &syncbuf.Buffer{}}
	for _, d := range []string{tr.dir, tr.home, tr.tmp, filepath.Join(base, "steps")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case ".git", "godwit", "bin", "test-artifacts":
			continue // VCS, and what the tour or the suite writes
		}
		if err := os.Symlink(filepath.Join(root, e.Name()), filepath.Join(tr.dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}

	env := []string{"HOME=" + tr.home, "GODWIT_LISTEN=127.0.0.1:0", "GODWIT_NATS_LISTEN=127.0.0.1:0"}
	goEnv, err := exec.Command("go", "env", "-json", "GOCACHE", "GOMODCACHE", "GOPATH", "GOENV").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	var ge map[string]string
	if err := json.Unmarshal(goEnv, &ge); err != nil {
		t.Fatalf("go env: %v", err)
	}
	for k, v := range ge {
		env = append(env, k+"="+v)
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOME" || strings.HasPrefix(k, "GODWIT_") || ge[k] != "" {
			continue
		}
		env = append(env, kv)
	}

	tr.bash = exec.Command("bash", "--noprofile", "--norc")
	tr.bash.Dir, tr.bash.Env = tr.dir, env
	tr.bash.Stderr = tr.stderr
	// Its own process group: everything the tour starts in the background is killed with it.
	tr.bash.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if tr.stdin, err = tr.bash.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := tr.bash.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.bash.Start(); err != nil {
		t.Fatalf("start bash: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m marker
			if _, err := fmt.Sscanf(sc.Text(), "::done %d %d %d", &m.id, &m.rc, &m.pid); err == nil {
				tr.markers <- m
			}
		}
		_ = tr.bash.Wait()
		close(tr.exited)
	}()
	t.Cleanup(tr.stop)
	return tr
}

// step types one command and waits for bash to finish it. Its output goes to a file of its own;
// its stdin is /dev/null so that it cannot read the commands that follow.
func (tr *tour) step(stmt string, timeout time.Duration) *stepResult {
	tr.t.Helper()
	tr.n++
	r := &stepResult{file: filepath.Join(filepath.Dir(tr.dir), "steps", fmt.Sprintf("%02d.out", tr.n))}
	script := fmt.Sprintf("{\n%s\n} >%s 2>&1 </dev/null; echo \"::done %d $? ${!:-0}\"\n", stmt, shellQuote(r.file), tr.n)
	if _, err := io.WriteString(tr.stdin, script); err != nil {
		tr.t.Fatalf("type %q: %v", stmt, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case m := <-tr.markers:
			if m.id != tr.n {
				continue
			}
			r.rc, r.pid = m.rc, m.pid
			return r
		case <-tr.exited:
			tr.t.Fatalf("bash exited during %q: %s", stmt, tr.stderr.String())
		case <-timer.C:
			tr.t.Fatalf("%q did not finish within %s; it printed:\n%s", stmt, timeout, r.output())
		}
	}
}

// probe runs a command of the test's own in the tour's shell (to read a variable, wait for a job).
func (tr *tour) probe(cmd string) *stepResult {
	tr.t.Helper()
	return tr.step(cmd, time.Minute)
}

// rewrite applies the substitutions listed in the package comment.
func (tr *tour) rewrite(stmt string) string {
	if strings.Contains(stmt, hubDefault) {
		if tr.hubAddr == "" {
			tr.t.Fatalf("%q uses the hub's address before the tour started a hub", stmt)
		}
		stmt = strings.ReplaceAll(stmt, hubDefault, tr.hubAddr)
	}
	return strings.ReplaceAll(stmt, "/tmp/", tr.tmp)
}

// waitHub waits for the hub started in the background to write its endpoint file and be ready.
func (tr *tour) waitHub(r *stepResult) {
	dataDir := filepath.Join(tr.home, ".godwit", "hub")
	tr.eventually("the hub's endpoint file", func() error {
		raw, err := os.ReadFile(filepath.Join(dataDir, "endpoint.json"))
		if err != nil {
			return fmt.Errorf("%w; the hub printed: %s", err, r.output())
		}
		var ep struct {
			API string `json:"api"`
			PID int    `json:"pid"`
		}
		if err := json.Unmarshal(raw, &ep); err != nil {
			return err
		}
		if ep.PID != r.pid {
			return fmt.Errorf("endpoint file is from pid %d, the hub is %d", ep.PID, r.pid)
		}
		tr.hubAddr = strings.TrimPrefix(ep.API, "http://")
		return nil
	})
	if _, port, _ := net.SplitHostPort(tr.hubAddr); port == "7750" {
		tr.t.Fatalf("the hub took the default port despite GODWIT_LISTEN")
	}
	raw, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.token = strings.TrimSpace(string(raw))
	tr.eventually("the hub ready", func() error {
		resp, err := http.Get("http://" + tr.hubAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
}

// api GETs a hub API path as the admin.
func (tr *tour) api(path string, out any) error {
	req, err := http.NewRequest(http.MethodGet, "http://"+tr.hubAddr+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tr.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

// description is the part of GET /api/v1/migrations/NAME the checks read.
type description struct {
	Migration struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
	} `json:"migration"`
	Batches []struct {
		Total  int            `json:"total"`
		States map[string]int `json:"states"`
	} `json:"batches"`
	Assignments []struct {
		State string `json:"state"`
	} `json:"assignments"`
}

func (tr *tour) migration(d *description) error {
	return tr.api("/api/v1/migrations/web-tls-1-3", d)
}

// waitApproval waits until batch i (from 0) has succeeded on every agent and the migration is
// paused waiting for the approval of the next one.
func (tr *tour) waitApproval(i int) {
	tr.eventually(fmt.Sprintf("batch %d of web-tls-1-3 done, batch %d waiting for approval", i+1, i+2), func() error {
		var d description
		if err := tr.migration(&d); err != nil {
			return err
		}
		if len(d.Batches) <= i {
			return fmt.Errorf("%d batches", len(d.Batches))
		}
		if b := d.Batches[i]; b.Total == 0 || b.States["succeeded"] != b.Total {
			return fmt.Errorf("batch %d: %v of %d", i+1, b.States, b.Total)
		}
		if want := fmt.Sprintf("waiting for approval of batch %d", i+2); d.Migration.State != "paused" || !strings.Contains(d.Migration.Reason, want) {
			return fmt.Errorf("%s (%s), want paused, %s", d.Migration.State, d.Migration.Reason, want)
		}
		return nil
	})
}

// eventually polls cond until it returns nil, failing the test after a minute.
func (tr *tour) eventually(what string, cond func() error) {
	tr.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tr.t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the tour: SIGTERM to its process group (the hub drains, the agents stop), then
// SIGKILL for anything still there, and the test fails if a process of the tour survives.
func (tr *tour) stop() {
	_ = tr.stdin.Close()
	pgid := tr.bash.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	if waitGone(pgid, 30*time.Second) {
		return
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if !waitGone(pgid, 10*time.Second) {
		tr.t.Errorf("processes of the tour (process group %d) survived SIGKILL", pgid)
	}
}

// waitGone polls until no live (non-zombie) process is left in the process group.
func waitGone(pgid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !groupAlive(pgid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// groupAlive tells whether a process of group pgid is still running. Zombies do not count: an
// orphan is reaped by whatever runs as PID 1, which in a container may never happen.
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return true // no /proc: trust kill(2)
	}
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 3 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// head is the first n lines of s, and how many more there were.
func head(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= n+1 {
		return s
	}
	return strings.Join(lines[:n], "") + fmt.Sprintf("(%d more lines)", len(lines)-n)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
