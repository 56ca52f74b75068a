package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/hub"
	"godwit.dev/godwit/internal/wire"
)

// hubUnderTest is the hub the fleet benchmark drives: a child process or one in this process.
type hubUnderTest struct {
	api   *apiClient
	nats  []string
	pid   string // "self" when in process
	cmd   *exec.Cmd
	exit  chan error // the child's exit
	inner *hub.Hub   // in process only
}

// hubSettings are what the benchmark sets on the hub; everything else keeps its default.
type hubSettings struct {
	dataDir   string
	heartbeat time.Duration
	grace     time.Duration
	logFile   string
	relays    bool // accept relay connections (multiplexed agents): hub.WithAgentRelays
	// memoryLimit is a child hub's GOMEMLIMIT; empty leaves the environment's.
	memoryLimit string
	// cpuProfile, for a child hub: the file it writes its CPU profile of the rollout to
	// (HubCPUProfileEnv; started and ended by profileRollout).
	cpuProfile string
}

// startChildHub runs `<this executable> hub` on random ports and waits until it is ready; with
// relays, `<this executable> bench fleet-hub`, the same hub with relay connections accepted.
func startChildHub(ctx context.Context, s hubSettings) (*hubUnderTest, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("hub child process: %w", err)
	}
	logf, err := os.Create(s.logFile)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	sub := []string{"hub"}
	if s.relays {
		sub = []string{"bench", "fleet-hub"}
	}
	cmd := exec.Command(exe, append(sub, "--data-dir", s.dataDir, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--heartbeat-interval", s.heartbeat.String(), "--liveness-grace", s.grace.String(),
		"--settle", settle(s.grace).String(), "--log-format", "json")...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if s.memoryLimit != "" {
		cmd.Env = append(cmd.Environ(), "GOMEMLIMIT="+s.memoryLimit)
	}
	if s.cpuProfile != "" {
		cmd.Env = append(cmd.Environ(), HubCPUProfileEnv+"="+s.cpuProfile)
	}
	// Its own process group, so that Ctrl-C reaches it through us (a clean stop); it dies with us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	// The parent-death signal follows the thread that forked, not the process: the child is
	// started and waited for on one locked thread, which therefore lives as long as the child.
	started := make(chan error, 1)
	exit := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exit <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("hub child process: %w", err)
	}
	h := &hubUnderTest{cmd: cmd, pid: strconv.Itoa(cmd.Process.Pid), exit: exit}
	if err := h.waitReady(ctx, s.dataDir); err != nil {
		_ = h.stop(context.Background())
		return nil, fmt.Errorf("hub child process (log %s): %w", s.logFile, err)
	}
	return h, nil
}

// startInProcessHub runs the hub in this process (hub.New).
func startInProcessHub(ctx context.Context, s hubSettings) (*hubUnderTest, error) {
	cfg, err := benchHubConfig(s.dataDir, "127.0.0.1:0", "127.0.0.1:0", s.heartbeat, s.grace)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(s.logFile)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewJSONHandler(logf, nil))
	var opts []hub.Option
	if s.relays {
		opts = append(opts, hub.WithAgentRelays())
	}
	inner := hub.New(cfg, log, io.Discard, opts...)
	if err := inner.Start(ctx); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("in-process hub: %w", err)
	}
	h := &hubUnderTest{inner: inner, pid: "self"}
	if err := h.waitReady(ctx, s.dataDir); err != nil {
		_ = h.stop(context.Background())
		return nil, err
	}
	return h, nil
}

// benchHubConfig is the hub configuration of the benchmark: the defaults, but for where it
// keeps its data and listens, and its liveness timing.
func benchHubConfig(dataDir, listen, natsListen string, heartbeat, grace time.Duration) (*config.Hub, error) {
	cfg := config.DefaultHub()
	cfg.DataDir, cfg.Listen, cfg.NATS.Listen = dataDir, listen, natsListen
	cfg.Liveness.HeartbeatInterval, cfg.Liveness.Grace = config.Duration(heartbeat), config.Duration(grace)
	cfg.Liveness.Settle = config.Duration(settle(grace))
	cfg.Log.Format = "json"
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// settle is the hub's settle time for a liveness grace: its default, or the grace when that is
// longer (the hub requires settle ≥ grace; a long --heartbeat makes a long grace).
func settle(grace time.Duration) time.Duration {
	return max(config.DefaultHub().Liveness.Settle.D(), grace)
}

// FleetHubConfig is the hub `godwit bench fleet-hub` runs; the flags startChildHub passes.
type FleetHubConfig struct {
	DataDir, Listen, NATSListen string
	Heartbeat, Grace            time.Duration
}

// RunFleetHub runs the fleet benchmark's child hub until ctx ends: `godwit hub` with the
// benchmark's settings and relay connections accepted (hub.WithAgentRelays), logging JSON to
// out. It is a hidden command that `godwit bench fleet` starts on a data dir it made; `godwit hub`
// itself never accepts relays.
func RunFleetHub(ctx context.Context, c FleetHubConfig, out io.Writer) error {
	cfg, err := benchHubConfig(c.DataDir, c.Listen, c.NATSListen, c.Heartbeat, c.Grace)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(out, nil))
	return hub.New(cfg, log, io.Discard, hub.WithAgentRelays()).Run(ctx)
}

// waitReady reads the endpoint file and the admin token from the data dir and waits for /readyz.
func (h *hubUnderTest) waitReady(ctx context.Context, dataDir string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if h.exit != nil {
			select {
			case err := <-h.exit:
				h.exit <- err
				return fmt.Errorf("exited before it was ready: %v", err)
			default:
			}
		}
		if err := h.tryReady(ctx, dataDir); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("not ready within 2m: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (h *hubUnderTest) tryReady(ctx context.Context, dataDir string) error {
	raw, err := os.ReadFile(filepath.Join(dataDir, wire.HubEndpointFile))
	if err != nil {
		return err
	}
	var ep wire.HubEndpoint
	if err := json.Unmarshal(raw, &ep); err != nil {
		return err
	}
	if h.pid != "self" && strconv.Itoa(ep.PID) != h.pid {
		return fmt.Errorf("endpoint file of pid %d", ep.PID)
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, wire.AdminTokenFile))
	if err != nil {
		return err
	}
	h.api, h.nats = newAPIClient(ep.API, strings.TrimSpace(string(tok))), ep.NATS
	return h.api.do(ctx, http.MethodGet, "/readyz", nil, nil)
}

// profileRollout starts a CPU profile of a child hub (when it was started with one) and of this
// process (to ownProfile, if set) and returns what ends both.
func (h *hubUnderTest) profileRollout(withHub bool, ownProfile string) (stop func() error, err error) {
	own, err := CPUProfile(ownProfile)
	if err != nil {
		return nil, err
	}
	if !withHub || h.cmd == nil {
		return own, nil
	}
	if err := h.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		return nil, errors.Join(fmt.Errorf("start the hub's cpu profile: %w", err), own())
	}
	return func() error {
		return errors.Join(h.cmd.Process.Signal(syscall.SIGUSR2), own())
	}, nil
}

// peakRSS returns the hub process's peak resident set (VmHWM) in bytes.
func (h *hubUnderTest) peakRSS() (int64, error) {
	kb, err := procStatusKB(h.pid, "VmHWM")
	return kb << 10, err
}

// stop stops the hub: SIGTERM and wait for a child (SIGKILL after ctx), Stop in process.
func (h *hubUnderTest) stop(ctx context.Context) error {
	if h.inner != nil {
		return h.inner.Stop(ctx)
	}
	if h.cmd == nil || h.cmd.Process == nil {
		return nil
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-h.exit:
		h.exit <- err
		return nil
	case <-ctx.Done():
		_ = h.cmd.Process.Kill()
		return fmt.Errorf("hub child process did not stop in time; killed")
	}
}

// apiClient calls the hub's REST API with the admin token.
type apiClient struct {
	base, token string
	http        *http.Client
}

func newAPIClient(base, token string) *apiClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &apiClient{base: strings.TrimSuffix(base, "/"), token: token, http: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

// do sends in (JSON, or the bytes of a []byte as they are) and decodes the answer into out.
func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if b, ok := in.([]byte); ok {
		body = bytes.NewReader(b)
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var eb wire.ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Message != "" {
			return fmt.Errorf("%s %s: %s (%s)", method, path, eb.Error.Message, eb.Error.Code)
		}
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// metric reads one unlabelled counter or gauge from the hub's /metrics.
func (c *apiClient) metric(ctx context.Context, name string) (float64, error) {
	m, err := c.metrics(ctx, name)
	if err != nil {
		return 0, err
	}
	return m[name], nil
}
