package hub

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/agent"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/bus/bustest"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/pki"
	"godwit.dev/godwit/internal/wire"
)

func TestMain(m *testing.M) {
	code := m.Run()
	bustest.RemoveNATSServerBinary()
	os.Exit(code)
}

// logBuffer collects a process's log lines for the test to search.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testHubConfig is a hub on loopback with fast liveness, in dir.
func testHubConfig(t *testing.T, dir string) *config.Hub {
	t.Helper()
	cfg := config.DefaultHub()
	cfg.DataDir = dir
	cfg.Listen, cfg.NATS.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Liveness.HeartbeatInterval, cfg.Liveness.Grace = config.Duration(300*time.Millisecond), config.Duration(3*time.Second)
	return cfg
}

// fleet is a running hub with agents, all in this process.
type fleet struct {
	t      *testing.T
	h      *Hub
	hubLog *logBuffer
	admin  string
	agents map[string]*runningAgent
}

type runningAgent struct {
	name, dir string
	log       *logBuffer
	done      chan error
	stop      context.CancelFunc
}

// startFleet starts the hub of cfg (validated here) and stops it at the end of the test.
func startFleet(t *testing.T, cfg *config.Hub) (*fleet, error) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, hubLog: &logBuffer{}, agents: map[string]*runningAgent{}}
	f.h = New(cfg, f.hubLog.logger(), io.Discard)
	if err := f.h.Start(t.Context()); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := f.h.Stop(ctx); err != nil {
			t.Errorf("stop hub: %v", err)
		}
		if t.Failed() {
			t.Logf("hub log:\n%s", f.hubLog.String())
		}
	})
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, wire.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	f.admin = strings.TrimSpace(string(tok))
	return f, nil
}

// api calls the hub's REST API with the admin token.
func (f *fleet) api(method, path, body string, out any) int {
	f.t.Helper()
	return apiCall(f.t, f.h.Endpoint().API, http.DefaultClient, f.admin, method, path, body, out)
}

func apiCall(t *testing.T, base string, c *http.Client, token, method, path, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
	return resp.StatusCode
}

func (f *fleet) enrollToken(uses int) string {
	f.t.Helper()
	var tr wire.CreateTokenResponse
	if code := f.api("POST", "/api/v1/tokens", fmt.Sprintf(`{"uses":%d,"ttl":"10m"}`, uses), &tr); code != http.StatusCreated {
		f.t.Fatalf("create token: HTTP %d", code)
	}
	return tr.Token
}

// startAgent runs an agent in this process with its own state dir and log.
func (f *fleet) startAgent(name, hubURL, token string, tweak func(*config.Agent)) *runningAgent {
	f.t.Helper()
	ra := &runningAgent{name: name, dir: filepath.Join(f.t.TempDir(), name), log: &logBuffer{}, done: make(chan error, 1)}
	cfg := config.DefaultAgent()
	cfg.Hub, cfg.EnrollToken, cfg.StateDir, cfg.Name = hubURL, token, ra.dir, name
	if tweak != nil {
		tweak(cfg)
	}
	if err := cfg.Validate(); err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra.stop = cancel
	go func() { ra.done <- agent.New(cfg, ra.log.logger()).Run(ctx) }()
	f.agents[name] = ra
	f.t.Cleanup(func() {
		cancel()
		select {
		case <-ra.done:
		case <-time.After(20 * time.Second):
			f.t.Errorf("agent %s did not stop", name)
		}
		if f.t.Failed() {
			f.t.Logf("log of agent %s:\n%s", name, ra.log.String())
		}
	})
	return ra
}

func (ra *runningAgent) identity(t *testing.T) agent.Identity {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(ra.dir, "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	var id agent.Identity
	if err := json.Unmarshal(raw, &id); err != nil {
		t.Fatal(err)
	}
	return id
}

// waitOnline waits until the hub has every named agent online.
func (f *fleet) waitOnline(names ...string) {
	f.t.Helper()
	eventually(f.t, 60*time.Second, fmt.Sprintf("agents %v online", names), func() error {
		as, err := f.h.Store().ListAgents(f.t.Context())
		if err != nil {
			return err
		}
		online := map[string]bool{}
		for _, a := range as {
			online[a.Name] = a.Status == wire.StatusOnline
		}
		for _, n := range names {
			if !online[n] {
				if ra := f.agents[n]; ra != nil {
					select {
					case err := <-ra.done:
						f.t.Fatalf("agent %s exited: %v\n%s", n, err, ra.log.String())
					default:
					}
				}
				return fmt.Errorf("%s not online", n)
			}
		}
		return nil
	})
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// topology starts a hub of one kind and returns it with the secrets that must never reach an
// agent.
type topology struct {
	name  string
	start func(t *testing.T) (f *fleet, secrets []string)
}

func embeddedTopology(t *testing.T) (*fleet, []string) {
	f, err := startFleet(t, testHubConfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	return f, nil
}

var (
	issuerRe = regexp.MustCompile(`(?m)^\s*issuer: (\S+)$`)
	xkeyRe   = regexp.MustCompile(`(?m)^\s*xkey: (\S+)$`)
)

// externalTopology runs a real nats-server process configured as docs/security.md says. It
// first starts the hub against the cluster without the auth callout, which must refuse to start
// and leave the configuration with its keys in the data dir, as an operator would see it.
func externalTopology(t *testing.T) (*fleet, []string) { return external(t, false) }

// externalTLSTopology is the same with TLS on the cluster's client port, its CA given to the hub
// with --nats-ca and handed on to agents.
func externalTLSTopology(t *testing.T) (*fleet, []string) { return external(t, true) }

func external(t *testing.T, withTLS bool) (*fleet, []string) {
	hubPW, sysPW := "hubpw-"+credential.New(""), "syspw-"+credential.New("")
	dataDir, nsDir := t.TempDir(), t.TempDir()
	var tlsBlock, caFile string
	if withTLS {
		b, err := pki.Ensure(filepath.Join(nsDir, "certs"), []string{"127.0.0.1", "localhost"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		caFile = b.CAFile
		tlsBlock = fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n}\n",
			filepath.Join(nsDir, "certs", pki.CertFile), filepath.Join(nsDir, "certs", pki.KeyFile))
	}
	placeholders := bus.ClusterParams{Issuer: "unknown", XKey: "unknown", HubPassword: hubPW, SystemPassword: sysPW}
	before := bustest.DocsClusterConfig(t, placeholders)
	before = tlsBlock + before[:strings.Index(before, "authorization {")]
	ns := bustest.StartNATSServer(t, nsDir, before)
	cfg := func(ns *bustest.NATSServer) *config.Hub {
		c := testHubConfig(t, dataDir)
		host := ns.URL[strings.Index(ns.URL, "://")+3:]
		c.NATS.URL = "nats://" + bus.ClusterHubUser + ":" + hubPW + "@" + host
		c.NATS.System = "nats://" + bus.ClusterSystemUser + ":" + sysPW + "@" + host
		c.NATS.CA = caFile
		return c
	}
	if _, err := startFleet(t, cfg(ns)); !errors.Is(err, bus.ErrNotEnforced) || !strings.Contains(err.Error(), ClusterConfigFile) {
		t.Fatalf("hub start on a cluster without the callout: %v; want a refusal naming %s", err, ClusterConfigFile)
	}
	raw, err := os.ReadFile(filepath.Join(dataDir, ClusterConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	is, xs := issuerRe.FindStringSubmatch(string(raw)), xkeyRe.FindStringSubmatch(string(raw))
	if is == nil || xs == nil {
		t.Fatalf("%s holds no issuer or xkey:\n%s", ClusterConfigFile, raw)
	}
	ns.Stop()
	ns = bustest.StartNATSServer(t, nsDir, tlsBlock+bustest.DocsClusterConfig(t, bus.ClusterParams{
		Issuer: is[1], XKey: xs[1], HubPassword: hubPW, SystemPassword: sysPW}))
	f, err := startFleet(t, cfg(ns))
	if err != nil {
		t.Fatalf("hub start on the cluster configured as documented: %v", err)
	}
	if !strings.Contains(f.hubLog.String(), "probe passed") {
		t.Fatal("the hub started without logging a passed probe")
	}
	return f, []string{hubPW, sysPW}
}

var topologies = []topology{{"embedded", embeddedTopology}, {"external", externalTopology}, {"external-tls", externalTLSTopology}}

// TestAgentIsolation: with two real agents enrolled through the real hub, agent A's credentials
// (read from its identity.json) are refused every attack of the table, in both topologies; the
// hub's own credentials are in no agent file and in no log; revoking A closes its live
// connections, its reconnects fail, and the agent stops.
func TestAgentIsolation(t *testing.T) {
	t.Parallel()
	for _, top := range topologies {
		t.Run(top.name, func(t *testing.T) {
			t.Parallel()
			f, secrets := top.start(t)
			tok := f.enrollToken(2)
			a := f.startAgent("agent-a", f.h.Endpoint().API, tok, nil)
			b := f.startAgent("agent-b", f.h.Endpoint().API, tok, nil)
			f.waitOnline("agent-a", "agent-b")
			idA, idB := a.identity(t), b.identity(t)
			urls := f.h.Endpoint().NATS
			// A's credentials with A's own trust: what an attacker holding A's state dir has.
			var secure []nats.Option
			if raw, err := os.ReadFile(filepath.Join(a.dir, "nats-ca.pem")); err == nil {
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(raw)
				secure = append(secure, nats.Secure(pki.ClientConfig(pool)))
			}
			if top.name == "external-tls" && (len(secure) == 0 || !f.h.nc.TLSRequired()) {
				t.Fatal("the agent holds no NATS CA, or the hub's connection is not TLS")
			}
			tg := bustest.Target{Hub: f.h.nc, JS: f.h.js,
				A: bustest.Agent{ID: idA.AgentID, Password: idA.NATSPassword},
				B: bustest.Agent{ID: idB.AgentID, Password: idB.NATSPassword},
				Connect: func(_ *testing.T, id, pw string, opts ...nats.Option) (*nats.Conn, error) {
					return bus.ConnectAgent(urls, id, pw, append(secure, opts...)...)
				}}

			t.Run("attacks", func(t *testing.T) { bustest.RunAttacks(t, tg) })
			t.Run("connection limits", func(t *testing.T) { bustest.Limits(t, tg) })

			t.Run("no hub credentials reach an agent", func(t *testing.T) {
				for _, id := range []agent.Identity{idA, idB} {
					for _, u := range id.NATSURLs {
						if strings.Contains(u, "@") {
							t.Errorf("identity of %s holds a URL with credentials: %s", id.Name, u)
						}
					}
				}
				places := map[string]string{"hub log": f.hubLog.String(), "agent-a log": a.log.String(), "agent-b log": b.log.String()}
				for _, dir := range []string{a.dir, b.dir, f.h.cfg.DataDir} {
					_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
						if err == nil && d.Type().IsRegular() && !strings.Contains(p, string(filepath.Separator)+jetstreamDir+string(filepath.Separator)) {
							raw, _ := os.ReadFile(p)
							places[p] = string(raw)
						}
						return nil
					})
				}
				for _, s := range secrets {
					for where, text := range places {
						if strings.Contains(text, s) {
							t.Errorf("a hub password is in %s", where)
						}
					}
				}
				if len(places) < 8 {
					t.Fatalf("searched only %d places", len(places))
				}
			})

			t.Run("agent files are private", func(t *testing.T) {
				for _, ra := range []*runningAgent{a, b} {
					if m := mode(t, ra.dir); m != 0o700 {
						t.Errorf("%s: state dir mode %#o", ra.name, m)
					}
					for _, name := range []string{"identity.json", "outbox.db", "outbox.db-wal", "outbox.db-shm", "journal.db", "journal.db-wal", "journal.db-shm"} {
						if m := mode(t, filepath.Join(ra.dir, name)); m != 0o600 {
							t.Errorf("%s: %s has mode %#o, want 0600", ra.name, name, m)
						}
					}
				}
			})

			t.Run("revocation", func(t *testing.T) {
				bustest.Revocation(t, tg, func(t *testing.T) {
					var ag wire.Agent
					if code := f.api("POST", "/api/v1/agents/"+idA.AgentID+"/revoke", "", &ag); code != http.StatusOK || ag.RevokedAt == nil {
						t.Fatalf("revoke: HTTP %d, %+v", code, ag)
					}
				})
				select {
				case err := <-a.done:
					if !errors.Is(err, agent.ErrRejected) {
						t.Fatalf("revoked agent stopped with %v, want ErrRejected", err)
					}
					a.done <- err // for the cleanup
				case <-time.After(30 * time.Second):
					t.Fatal("the revoked agent did not stop")
				}
				if !strings.Contains(f.hubLog.String(), "agent revoked") {
					t.Error("the hub did not log the revocation")
				}
				f.waitOnline("agent-b")
			})
		})
	}
}
