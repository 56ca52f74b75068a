package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"godwit.dev/godwit/examples"
	"godwit.dev/godwit/internal/agent"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/hub"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// slowMigration stays running on the db agent long enough to pause and resume it.
const slowMigration = `apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: db-slow-upgrade
  description: A long step, so the migration stays running while the test pauses and resumes it.
spec:
  selector:
    matchLabels: {role: db}
  fromVersion: "14"
  toVersion: "15"
  steps:
    - name: long-step
      run: 'sleep 120'
      timeout: 10m
`

// fleet is a real hub with real agents, in this process: the demo migration has run (one agent's
// step failed and was rolled back) and a slow migration is running.
type fleet struct {
	t       *testing.T
	base    string // http://127.0.0.1:port
	token   string // admin token
	dir     string
	log     *bytes.Buffer
	agents  map[string]string // name → id
	stopped chan error
}

// startFleet starts a hub and three agents: web-1 and web-2 (labels demo=true, role=web; web-2's
// disk is "full") and db-1 (role=db).
func startFleet(t *testing.T) *fleet {
	t.Helper()
	dir := t.TempDir()
	f := &fleet{t: t, dir: dir, log: &bytes.Buffer{}, agents: map[string]string{}}
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: f.log}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			_ = os.WriteFile(filepath.Join(dir, "hub.log"), f.log.Bytes(), 0o600)
			t.Logf("hub and agent log kept in %s", filepath.Join(dir, "hub.log"))
		}
	})

	cfg := config.DefaultHub()
	cfg.DataDir = filepath.Join(dir, "hub")
	cfg.Listen, cfg.NATS.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Liveness.HeartbeatInterval, cfg.Liveness.Grace = config.Duration(300*time.Millisecond), config.Duration(3*time.Second)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := hub.New(cfg, log.With("hub", 1), io.Discard)
	if err := h.Start(t.Context()); err != nil {
		t.Fatalf("start hub: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := h.Stop(ctx); err != nil {
			t.Errorf("stop hub: %v", err)
		}
	})
	f.base = h.Endpoint().API
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, wire.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	f.token = strings.TrimSpace(string(tok))

	var enroll wire.CreateTokenResponse
	f.api("POST", "/api/v1/tokens", "application/json", `{"uses": 3, "ttl": "10m"}`, &enroll)
	actx, stopAgents := context.WithCancel(context.Background())
	f.stopped = make(chan error, 3)
	specs := []struct {
		name   string
		labels []string
	}{
		{"web-1", []string{"demo=true", "role=web", "site=ams"}},
		{"web-2", []string{"demo=true", "role=web", "site=fra"}},
		{"db-1", []string{"role=db", "site=ams"}},
	}
	for _, sp := range specs {
		acfg := config.DefaultAgent()
		acfg.Hub, acfg.EnrollToken = f.base, enroll.Token
		acfg.StateDir = filepath.Join(dir, sp.name)
		acfg.Name, acfg.Labels = sp.name, sp.labels
		go func() { f.stopped <- agent.New(acfg, log.With("agent", sp.name)).Run(actx) }()
	}
	// Agents stop before the hub (cleanups run last-in first-out).
	t.Cleanup(func() {
		stopAgents()
		for range specs {
			select {
			case <-f.stopped:
			case <-time.After(20 * time.Second):
				t.Error("an agent did not stop within 20s")
				return
			}
		}
	})
	f.eventually(60*time.Second, "3 agents online", func() error {
		var list wire.List[wire.Agent]
		f.api("GET", "/api/v1/agents", "", "", &list)
		online := 0
		for _, a := range list.Items {
			f.agents[a.Name] = a.ID
			if a.Status == wire.StatusOnline {
				online++
			}
		}
		if online != 3 {
			return fmt.Errorf("%d online", online)
		}
		return nil
	})

	// The demo's trick: web-2's disk is "full", so its write-v2 step fails and is rolled back.
	for _, sp := range specs {
		if err := os.WriteFile(filepath.Join(dir, sp.name, "work", "config"), []byte("version=1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "web-2", "work", "simulate-disk-full"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f.api("POST", "/api/v1/migrations", "application/yaml", string(examples.DemoMigration), nil)
	f.api("POST", "/api/v1/migrations", "application/yaml", slowMigration, nil)
	f.eventually(90*time.Second, "demo migration partially succeeded and db-slow-upgrade applying", func() error {
		var d wire.MigrationDescription
		f.api("GET", "/api/v1/migrations/demo-config-v2", "", "", &d)
		if d.Migration.State != "partially_succeeded" {
			return fmt.Errorf("demo-config-v2 is %s", d.Migration.State)
		}
		f.api("GET", "/api/v1/migrations/db-slow-upgrade", "", "", &d)
		if d.Migration.State != "running" || len(d.Assignments) != 1 || d.Assignments[0].State != "applying" {
			return fmt.Errorf("db-slow-upgrade is %s, assignments %+v", d.Migration.State, d.Assignments)
		}
		return nil
	})
	f.eventually(30*time.Second, "web-2's error event ingested", func() error {
		var evs wire.List[store.StoredEvent]
		f.api("GET", "/api/v1/events?severity=error&agent="+f.agents["web-2"], "", "", &evs)
		if len(evs.Items) == 0 {
			return fmt.Errorf("no error event of web-2 yet")
		}
		return nil
	})
	return f
}

// api calls the REST API with the admin token and decodes the answer into out (if not nil).
func (f *fleet) api(method, path, contentType, body string, out any) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.base+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		f.t.Fatalf("%s %s: %s: %s", method, path, res.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			f.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

// deadLetter publishes a payload that is not an event on web-1's subject, with web-1's own
// credentials; the ingest dead-letters it.
func (f *fleet) deadLetter(payload string) {
	f.t.Helper()
	raw, err := os.ReadFile(filepath.Join(f.dir, "web-1", "identity.json"))
	if err != nil {
		f.t.Fatal(err)
	}
	var id agent.Identity
	if err := json.Unmarshal(raw, &id); err != nil {
		f.t.Fatal(err)
	}
	nc, err := bus.ConnectAgent(id.NATSURLs, id.AgentID, id.NATSPassword)
	if err != nil {
		f.t.Fatalf("connect as web-1: %v", err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(f.t.Context(), 10*time.Second)
	defer cancel()
	if _, _, err := bus.PublishEvent(ctx, nc, id.AgentID, uuid.NewString(), []byte(payload)); err != nil {
		f.t.Fatalf("publish: %v", err)
	}
}

// eventually polls cond until it returns nil or the timeout passes.
func (f *fleet) eventually(timeout time.Duration, what string, cond func() error) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		select {
		case <-f.t.Context().Done():
			f.t.Fatalf("%s: %v", what, f.t.Context().Err())
		case err := <-f.stopped:
			f.t.Fatalf("%s: an agent stopped: %v", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// client is a cookie-less HTTP client that does not follow redirects.
func client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

func postForm(t *testing.T, c *http.Client, u string, form url.Values, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// lockedWriter serialises writes from the loggers of the hub and the agents.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
