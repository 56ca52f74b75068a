// Package e2e runs the real godwit binary: hubs and agents as separate processes on loopback,
// in temp dirs, the way an operator would start them.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/bus/bustest"
	"godwit.dev/godwit/internal/wire"
)

var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped in -short mode")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "godwit-e2e-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "godwit")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "../../cmd/godwit")...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Println("e2e: build failed:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	bustest.RemoveNATSServerBinary()
	os.Exit(code)
}

// proc is a running godwit process whose output is captured.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// wait returns the exit code once the process ends, failing the test after timeout.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

func (p *proc) signal(s syscall.Signal) { _ = p.cmd.Process.Signal(s) }

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}

// hubProc is a running hub with its endpoint and admin token.
type hubProc struct {
	*proc
	dataDir, api, token string
}

// fastLiveness keeps the liveness tests short: heartbeats every 200ms, offline after 1.5s.
var fastLiveness = []string{"--heartbeat-interval", "200ms", "--liveness-grace", "1500ms"}

func startHub(t *testing.T, dataDir string, extra ...string) *hubProc {
	t.Helper()
	args := append([]string{"hub", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--log-format", "text"}, extra...)
	h := &hubProc{proc: start(t, "hub "+filepath.Base(dataDir), nil, args...), dataDir: dataDir}
	eventually(t, 60*time.Second, "hub endpoint file", func() error {
		select {
		case <-h.done:
			return fmt.Errorf("hub exited: %v", h.err)
		default:
		}
		raw, err := os.ReadFile(filepath.Join(dataDir, "endpoint.json"))
		if err != nil {
			return err
		}
		var ep struct {
			API string `json:"api"`
			PID int    `json:"pid"`
		}
		if err := json.Unmarshal(raw, &ep); err != nil {
			return err
		}
		if ep.PID != h.cmd.Process.Pid {
			return fmt.Errorf("endpoint file is from pid %d", ep.PID)
		}
		h.api = ep.API
		return nil
	})
	if raw, err := os.ReadFile(filepath.Join(dataDir, "admin.token")); err == nil {
		h.token = strings.TrimSpace(string(raw))
	}
	eventually(t, 60*time.Second, "hub ready", func() error {
		resp, err := http.Get(h.api + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	return h
}

// cli runs a client command against the hub and returns stdout, failing the test on error.
func (h *hubProc) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := h.cliCode(args...)
	if code != 0 {
		t.Fatalf("godwit %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func (h *hubProc) cliCode(args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "GODWIT_HUB="+h.api, "GODWIT_TOKEN="+h.token, "HOME="+h.dataDir)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		e.WriteString(err.Error())
	}
	return o.String(), e.String(), code
}

func (h *hubProc) agents(t *testing.T) []wire.Agent {
	t.Helper()
	var as []wire.Agent
	if err := json.Unmarshal([]byte(h.cli(t, "get", "agents", "-o", "json")), &as); err != nil {
		t.Fatalf("decode agents: %v", err)
	}
	return as
}

func (h *hubProc) startAgent(t *testing.T, stateDir, token string, labels ...string) *proc {
	t.Helper()
	args := []string{"agent", "--hub", h.api, "--state-dir", stateDir, "--name", filepath.Base(stateDir), "--log-format", "text"}
	if token != "" {
		args = append(args, "--enroll-token", token)
	}
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	return start(t, "agent "+filepath.Base(stateDir), nil, args...)
}

func statusByName(as []wire.Agent) map[string]wire.Agent {
	m := map[string]wire.Agent{}
	for _, a := range as {
		m[a.Name] = a
	}
	return m
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
