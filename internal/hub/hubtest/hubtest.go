// Package hubtest starts a real hub, and real agents, inside a test's process: loopback ports,
// temporary directories, fast heartbeats, everything stopped when the test ends. Tests that need
// the whole thing (every API answer, every exported metric) use it instead of each keeping a copy.
package hubtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"godwit.dev/godwit/internal/agent"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/hub"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/syncbuf"
	"godwit.dev/godwit/internal/wire"
)

// Agent is an agent to start with the hub.
type Agent struct {
	Name   string
	Labels []string // key=value
}

// Options shape the fleet.
type Options struct {
	// Agents are enrolled with one token and started; Start returns once all are online.
	Agents []Agent
	// Front, when set, wraps the path from the test's calls (and the agents' enrollment) to the
	// hub's HTTP server, e.g. to check every answer.
	Front func(http.Handler) http.Handler
	// Config adjusts the hub's configuration before it is validated.
	Config func(*config.Hub)
	// WrapStore wraps the store the hub opens (fault injection; see hub.WithStore).
	WrapStore func(store.Store) store.Store
}

// Fleet is a running hub with its agents.
type Fleet struct {
	t testing.TB
	// URL is where the test's calls go (the front, when there is one).
	URL string
	// Token is the admin token.
	Token string
	// Agents maps agent names to ids.
	Agents map[string]string
	Hub    *hub.Hub
	log    *syncbuf.Buffer
}

// Start starts the hub and the agents; the test's cleanup stops them (agents first) and prints
// their log if the test failed.
func Start(t testing.TB, o Options) *Fleet {
	t.Helper()
	dir := t.TempDir()
	f := &Fleet{t: t, Agents: map[string]string{}, log: &syncbuf.Buffer{}}
	log := slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hub and agent log:\n%s", f.log.String())
		}
	})
	cfg := config.DefaultHub()
	cfg.DataDir = filepath.Join(dir, "hub")
	cfg.Listen, cfg.NATS.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Liveness.HeartbeatInterval = config.Duration(200 * time.Millisecond)
	cfg.Liveness.Grace, cfg.Liveness.Settle = config.Duration(2*time.Second), config.Duration(2*time.Second)
	if o.Config != nil {
		o.Config(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var opts []hub.Option
	if o.WrapStore != nil {
		opts = append(opts, hub.WithStore(o.WrapStore))
	}
	f.Hub = hub.New(cfg, log.With("hub", 1), io.Discard, opts...)
	if err := f.Hub.Start(t.Context()); err != nil {
		t.Fatalf("start hub: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := f.Hub.Stop(ctx); err != nil {
			t.Errorf("stop hub: %v", err)
		}
	})
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, wire.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	f.Token = strings.TrimSpace(string(tok))
	f.URL = f.Hub.Endpoint().API
	if o.Front != nil {
		target, _ := url.Parse(f.URL)
		front := httptest.NewServer(o.Front(httputil.NewSingleHostReverseProxy(target)))
		t.Cleanup(front.Close)
		f.URL = front.URL
	}
	if len(o.Agents) > 0 {
		f.startAgents(o.Agents, dir, log)
	}
	return f
}

func (f *Fleet) startAgents(agents []Agent, dir string, log *slog.Logger) {
	f.t.Helper()
	var tok wire.CreateTokenResponse
	f.Must(http.StatusCreated, "POST", "/api/v1/tokens", "application/json", fmt.Sprintf(`{"uses": %d, "ttl": "10m"}`, len(agents)), &tok)
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan error, len(agents))
	for _, a := range agents {
		cfg := config.DefaultAgent()
		cfg.Hub, cfg.EnrollToken = f.URL, tok.Token
		cfg.StateDir, cfg.Name, cfg.Labels = filepath.Join(dir, "agent-"+a.Name), a.Name, a.Labels
		go func() { stopped <- agent.New(cfg, log.With("agent", a.Name)).Run(ctx) }()
	}
	// Agents stop before the hub: cleanups run last in, first out.
	f.t.Cleanup(func() {
		stop()
		for range agents {
			select {
			case <-stopped:
			case <-time.After(20 * time.Second):
				f.t.Error("an agent did not stop within 20s")
				return
			}
		}
	})
	f.Eventually(fmt.Sprintf("%d agents online", len(agents)), func() error {
		var l wire.List[wire.Agent]
		f.Must(http.StatusOK, "GET", "/api/v1/agents", "", "", &l)
		online := 0
		for _, a := range l.Items {
			f.Agents[a.Name] = a.ID
			if a.Status == wire.StatusOnline {
				online++
			}
		}
		if online != len(agents) {
			return fmt.Errorf("%d of %d online", online, len(agents))
		}
		return nil
	})
}

// Call sends a request with the admin token (opts may change the request), decodes a 2xx JSON
// answer into out (when not nil), and returns the status and the body.
func (f *Fleet) Call(method, path, contentType, body string, out any, opts ...func(*http.Request)) (int, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.Token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			f.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return resp.StatusCode, string(raw)
}

// Must is Call that fails the test unless the status is want.
func (f *Fleet) Must(want int, method, path, contentType, body string, out any, opts ...func(*http.Request)) {
	f.t.Helper()
	if code, raw := f.Call(method, path, contentType, body, out, opts...); code != want {
		f.t.Fatalf("%s %s: %d, want %d: %s", method, path, code, want, raw)
	}
}

// Eventually polls cond until it returns nil, failing the test after a minute.
func (f *Fleet) Eventually(what string, cond func() error) {
	f.t.Helper()
	f.EventuallyWithin(time.Minute, what, cond)
}

// EventuallyWithin polls cond until it returns nil, failing the test after timeout.
func (f *Fleet) EventuallyWithin(timeout time.Duration, what string, cond func() error) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}

// Metrics scrapes the hub's /metrics and parses the Prometheus text format.
func (f *Fleet) Metrics() map[string]*dto.MetricFamily {
	f.t.Helper()
	resp, err := http.Get(f.URL + "/metrics")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		f.t.Fatalf("/metrics does not parse: %v", err)
	}
	return mfs
}

// Value returns the value of the series of family name with exactly the given labels (gauge,
// counter or untyped), and whether it exists.
func Value(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, lp := range m.GetLabel() {
			if labels[lp.GetName()] != lp.GetValue() {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}
