// Package outage drills the question Godwit exists to answer: what happens to a migration in
// flight when the hub, an agent, NATS or the database is down for longer than every timeout?
//
// Each cell of docs/outages.md is one subtest of TestOutage: a real hub (in-process, fixed ports,
// SQLite, embedded NATS JetStream) whose migration controller counts deadlines on a clock the
// test jumps by hours, two real agents (in-process, real journals and outboxes, real shell
// commands), and one component taken down while agent-1 is held in a given phase.
package outage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent"
	"godwit.dev/godwit/internal/agent/outbox"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/hub"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// clock is the hub's clock in a drill: real time plus whatever the test added.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.offset) }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// drill is one hub with two agents.
type drill struct {
	t       *testing.T
	root    string
	cfg     *config.Hub
	clock   *clock
	db      *flakyStore
	hub     *hub.Hub
	api     string
	token   string
	agents  map[string]*agentRun
	enroll  string
	started []string
}

type agentRun struct {
	name, dir string
	cancel    context.CancelFunc
	done      chan error
	stopped   bool
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func newDrill(t *testing.T) *drill {
	t.Helper()
	d := &drill{t: t, root: t.TempDir(), clock: &clock{}, agents: map[string]*agentRun{}}
	cfg := config.DefaultHub()
	cfg.DataDir = filepath.Join(d.root, "hub")
	cfg.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.NATS.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Liveness.HeartbeatInterval, cfg.Liveness.Grace = config.Duration(150*time.Millisecond), config.Duration(time.Second)
	cfg.Liveness.Settle = config.Duration(10 * time.Second)
	cfg.ShutdownTimeout = config.Duration(10 * time.Second)
	cfg.Log.Format = "text"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d.cfg = cfg
	d.startHub()
	t.Cleanup(d.stopAll)
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, wire.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	d.token = strings.TrimSpace(string(tok))
	var tr wire.CreateTokenResponse
	d.call("POST", "/api/v1/tokens", "application/json", []byte(`{"uses":2,"ttl":"1h"}`), &tr)
	d.enroll = tr.Token
	for _, n := range []string{"agent-1", "agent-2"} {
		d.startAgent(n)
	}
	d.eventually(30*time.Second, "both agents online", func() error { return d.agentsAre(wire.StatusOnline, "agent-1", "agent-2") })
	return d
}

func (d *drill) startHub() {
	d.t.Helper()
	log := logging.New(io.Discard, "info", "text")
	if os.Getenv("GODWIT_DRILL_LOG") != "" {
		log = logging.New(os.Stderr, "debug", "text")
	}
	d.hub = hub.New(d.cfg, log, io.Discard, hub.WithClock(d.clock), hub.WithStore(func(s store.Store) store.Store {
		if d.db == nil {
			d.db = &flakyStore{Store: s}
		} else {
			d.db = &flakyStore{Store: s} // a restarted hub opens a fresh handle
		}
		return d.db
	}))
	if err := d.hub.Start(context.Background()); err != nil {
		d.t.Fatalf("start hub: %v", err)
	}
	d.api = d.hub.Endpoint().API
}

func (d *drill) stopHub() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.hub.Stop(ctx); err != nil {
		d.t.Logf("stop hub: %v", err)
	}
}

func (d *drill) startAgent(name string) {
	cfg := config.DefaultAgent()
	cfg.Hub, cfg.EnrollToken = d.api, d.enroll
	cfg.StateDir, cfg.Name, cfg.Labels = filepath.Join(d.root, name), name, []string{"drill=yes"}
	ctx, cancel := context.WithCancel(context.Background())
	a := &agentRun{name: name, dir: cfg.StateDir, cancel: cancel, done: make(chan error, 1)}
	log := logging.New(io.Discard, "info", "text")
	if os.Getenv("GODWIT_DRILL_LOG") != "" {
		log = logging.New(os.Stderr, "info", "text").With("agent", name)
	}
	go func() { a.done <- agent.New(cfg, log).Run(ctx) }()
	d.agents[name] = a
}

func (d *drill) stopAgent(name string) {
	a := d.agents[name]
	if a.stopped {
		return
	}
	a.stopped = true
	a.cancel()
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		buf := make([]byte, 1<<20)
		d.t.Fatalf("%s did not stop; goroutines:\n%s", name, buf[:runtime.Stack(buf, true)])
	}
}

func (d *drill) stopAll() {
	for n := range d.agents {
		d.stopAgent(n)
	}
	d.stopHub()
}

// work is a file in an agent's work directory.
func (d *drill) work(agent, file string) string { return filepath.Join(d.root, agent, "work", file) }

func (d *drill) touch(agent, file string) {
	if err := os.WriteFile(d.work(agent, file), nil, 0o600); err != nil {
		d.t.Fatal(err)
	}
}

func (d *drill) remove(agent, file string) { _ = os.Remove(d.work(agent, file)) }

func (d *drill) exists(agent, file string) bool {
	_, err := os.Stat(d.work(agent, file))
	return err == nil
}

func (d *drill) read(agent, file string) string {
	b, err := os.ReadFile(d.work(agent, file))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// call does an API request with the admin token; out may be nil.
func (d *drill) call(method, path, contentType string, body []byte, out any) {
	d.t.Helper()
	if err := d.try(method, path, contentType, body, out); err != nil {
		d.t.Fatal(err)
	}
}

func (d *drill) try(method, path, contentType string, body []byte, out any) error {
	req, _ := http.NewRequest(method, d.api+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+d.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// apiClient bounds every API call, so a hung request fails the poll instead of the whole test.
var apiClient = &http.Client{Timeout: 10 * time.Second}

func (d *drill) eventually(timeout time.Duration, what string, cond func() error) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}

func (d *drill) agentsAre(status string, names ...string) error {
	var l wire.List[wire.Agent]
	if err := d.try("GET", "/api/v1/agents", "", nil, &l); err != nil {
		return err
	}
	got := map[string]string{}
	for _, a := range l.Items {
		got[a.Name] = a.Status
	}
	for _, n := range names {
		if got[n] != status {
			return fmt.Errorf("%s is %q, want %q", n, got[n], status)
		}
	}
	return nil
}

func (d *drill) describe() (wire.MigrationDescription, error) {
	var desc wire.MigrationDescription
	err := d.try("GET", "/api/v1/migrations/drill", "", nil, &desc)
	return desc, err
}

func (d *drill) waitState(timeout time.Duration, states ...string) wire.MigrationDescription {
	d.t.Helper()
	var desc wire.MigrationDescription
	d.eventually(timeout, "migration "+strings.Join(states, " or "), func() error {
		var err error
		if desc, err = d.describe(); err != nil {
			return err
		}
		for _, s := range states {
			if desc.Migration.State == s {
				return nil
			}
		}
		var as []string
		for _, x := range desc.Assignments {
			as = append(as, fmt.Sprintf("%s#%d %s gen %d %s %q", x.AgentID[len(x.AgentID)-4:], x.Attempt, x.State, x.Generation, x.Action, x.Error))
		}
		return fmt.Errorf("state %s (%s); assignments: %s", desc.Migration.State, desc.Migration.Reason, strings.Join(as, "; "))
	})
	return desc
}

// outboxLen counts what an agent still has to send. The journal may be open in the running
// agent meanwhile: SQLite lets both read it.
func (d *drill) outboxLen(agent string) (int, error) {
	ob, err := outbox.Open(filepath.Join(d.root, agent, "outbox.db"), outbox.Limits{}, nil, nil)
	if err != nil {
		return 0, err
	}
	defer ob.Close()
	return ob.Len()
}
