// Package drill runs failover groups as real processes for tests and `godwit bench failover`:
// an embedded NATS server, members as `godwit failover member` processes (killed with SIGKILL,
// paused with SIGSTOP, resumed, stopped with SIGTERM), hooks that append to one log, and a
// checker over that log (Check).
//
// The model the checker holds a run to: a member is primary for an epoch from the start of its
// onPromote hook until the end of its onFence hook, the start of its onDemote hook, or its
// death (the workload dies with its member: in production a watchdog or the service manager
// ties them, see docs/failover.md).
package drill

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	member "godwit.dev/godwit/internal/agent/failover"
	"godwit.dev/godwit/internal/netfault"
	"godwit.dev/godwit/internal/wire"
)

// Timing of a drill group (milliseconds); Validate-d by the member process like any spec.
type Timing struct {
	Interval, Timeout, Threshold, Margin, Failover, FenceMS int
}

// FastTiming keeps drills short and still survives a loaded machine's scheduling delays.
var FastTiming = Timing{Interval: 100, Timeout: 200, Threshold: 3, Margin: 350, Failover: 1200, FenceMS: 300}

// Cluster is one drill: a NATS server, a group and its member processes.
type Cluster struct {
	Exe, Dir, Log, Spec, URL string
	Group                    string
	IDs                      []string
	T                        Timing

	srv *server.Server
	// servers are the three servers of a NATS cluster (NewOnNATSCluster; srv is servers[0]).
	servers []*server.Server
	// proxies[id] carries member id's connection to its server (NewOnNATSCluster).
	proxies map[string]*netfault.Proxy
	// agentKV: members reach the bucket as agents do (direct gets, compare-and-set puts).
	agentKV bool
	kv      jetstream.KeyValue
	nc      *nats.Conn
	// Env is added to each member's environment (and so its hooks'), by member id.
	Env map[string][]string

	mu    sync.Mutex
	procs map[string]*Proc
	// Faults is what the harness did, for the checker.
	faults []Fault
}

// Fault is one thing the harness did to a member at a time.
type Fault struct {
	At     time.Time
	Member string
	What   string // kill | stop | cont | term | start
}

// Proc is one member process.
type Proc struct {
	ID     string
	cmd    *exec.Cmd
	exit   chan struct{}
	mu     sync.Mutex
	role   string
	state  string
	epoch  uint64
	paused bool
}

// New starts NATS and writes the group spec; members start with Start.
func New(exe, dir string, members int, t Timing) (*Cluster, error) {
	c, err := NewGroup(exe, dir, members, "drill")
	if err != nil {
		return nil, err
	}
	return c, c.writeSpec(t)
}

// writeSpec writes the drill group's document: members by id with falling priorities, timing
// t, hooks that log their start and end.
func (c *Cluster) writeSpec(t Timing) error {
	c.T = t
	hook := func(name string, ms int) string {
		line := func(phase string) string {
			return `echo "$(date +%s%N) ` + phase + ` ` + name + ` $GODWIT_FAILOVER_MEMBER $GODWIT_FAILOVER_EPOCH" >> ` + c.Log
		}
		return fmt.Sprintf("    %s: {command: '%s; %s', timeout: %dms}\n", name, line("start"), line("end"), ms)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: godwit.dev/v1\nkind: FailoverGroup\nmetadata: {name: %s}\nspec:\n  members:\n", c.Group)
	for i, id := range c.IDs {
		fmt.Fprintf(&b, "    - {agent: %s, priority: %d}\n", id, 100-i)
	}
	fmt.Fprintf(&b, "  heartbeatInterval: %dms\n  heartbeatTimeout: %dms\n  failureThreshold: %d\n  safetyMargin: %dms\n  failoverTimeout: %dms\n  recoveryThreshold: 2\n",
		t.Interval, t.Timeout, t.Threshold, t.Margin, t.Failover)
	b.WriteString("  hooks:\n" + hook("onPromote", 5000) + hook("onFence", t.FenceMS) + hook("onDemote", 5000))
	return os.WriteFile(c.Spec, []byte(b.String()), 0o600)
}

func newCluster(exe, dir string, members int, group string) *Cluster {
	c := &Cluster{Exe: exe, Dir: dir, Log: filepath.Join(dir, "hooks.log"), Spec: filepath.Join(dir, "group.yaml"), Group: group,
		procs: map[string]*Proc{}, Env: map[string][]string{}, proxies: map[string]*netfault.Proxy{}}
	for i := range members {
		c.IDs = append(c.IDs, fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1))
	}
	return c
}

// NewGroup starts NATS and the bucket of group for members ids ...-1, ...-2; the caller
// writes the FailoverGroup document to c.Spec (its members c.IDs) before starting members.
func NewGroup(exe, dir string, members int, group string) (*Cluster, error) {
	c := newCluster(exe, dir, members, group)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "nats"),
		NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		return nil, fmt.Errorf("nats-server did not start")
	}
	c.srv = srv
	c.URL = fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)
	c.nc, err = nats.Connect(c.URL)
	if err != nil {
		return nil, err
	}
	js, _ := jetstream.New(c.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.kv, err = js.CreateOrUpdateKeyValue(ctx, member.BucketConfig("drill", c.Group, 1))
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Close kills every member and stops NATS.
func (c *Cluster) Close() {
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	for _, p := range procs {
		_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		<-p.exit
	}
	for _, p := range c.proxies {
		p.Close()
	}
	if c.nc != nil {
		c.nc.Close()
	}
	servers := c.servers
	if len(servers) == 0 && c.srv != nil {
		servers = []*server.Server{c.srv}
	}
	for _, s := range servers {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

func (c *Cluster) note(id, what string) {
	c.mu.Lock()
	c.faults = append(c.faults, Fault{At: time.Now(), Member: id, What: what})
	c.mu.Unlock()
}

// Faults returns what the harness did.
func (c *Cluster) Faults() []Fault {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Fault(nil), c.faults...)
}

// Start starts (or restarts) member id.
func (c *Cluster) Start(id string) error {
	url := c.URL
	if p := c.proxies[id]; p != nil {
		url = p.URL()
	}
	args := []string{"failover", "member", "--nats", url, "-f", c.Spec, "--member", id, "--namespace", "drill", "--log-level", "warn"}
	if c.agentKV {
		args = append(args, "--kv", "agent")
	}
	cmd := exec.Command(c.Exe, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(c.Dir, id+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), c.Env[id]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &Proc{ID: id, cmd: cmd, exit: make(chan struct{})}
	c.mu.Lock()
	c.procs[id] = p
	c.mu.Unlock()
	c.note(id, "start")
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var t wire.FailoverTransition
			if json.Unmarshal(sc.Bytes(), &t) == nil && t.Hook == "" {
				p.mu.Lock()
				p.role, p.state, p.epoch = t.Role, t.To, t.Epoch
				p.mu.Unlock()
			}
		}
		_ = cmd.Wait()
		close(p.exit)
	}()
	return nil
}

func (c *Cluster) proc(id string) *Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[id]
}

// Kill sends SIGKILL to member id's process group (its hooks die with it) and waits for it.
func (c *Cluster) Kill(id string) {
	p := c.proc(id)
	c.note(id, "kill")
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT)
	<-p.exit
}

// Pause sends SIGSTOP to member id (not its running hook: a paused agent's workload runs on).
func (c *Cluster) Pause(id string) {
	c.note(id, "stop")
	p := c.proc(id)
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGSTOP)
}

// Resume sends SIGCONT to member id.
func (c *Cluster) Resume(id string) {
	c.note(id, "cont")
	p := c.proc(id)
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT)
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

// Term stops member id gracefully (SIGTERM) and waits for it.
func (c *Cluster) Term(id string) {
	p := c.proc(id)
	c.note(id, "term")
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exit:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exit
	}
	// A graceful stop ends its own term.
	c.note(id, "kill")
}

// Alive reports whether member id's process runs.
func (c *Cluster) Alive(id string) bool {
	p := c.proc(id)
	if p == nil {
		return false
	}
	select {
	case <-p.exit:
		return false
	default:
		return true
	}
}

// State returns member id's last reported role, state and epoch.
func (c *Cluster) State(id string) (role, state string, epoch uint64) {
	p := c.proc(id)
	if p == nil {
		return "", "", 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.role, p.state, p.epoch
}

func (c *Cluster) state(id string) (role, state string, epoch uint64, paused bool) {
	p := c.proc(id)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.role, p.state, p.epoch, p.paused
}

// Primary returns the live, running member that reports itself a healthy primary, if exactly one does.
func (c *Cluster) Primary() (string, bool) {
	found := ""
	for _, id := range c.IDs {
		if !c.Alive(id) {
			continue
		}
		if r, s, _, paused := c.state(id); r == "primary" && s == "healthy" && !paused {
			if found != "" {
				return "", false
			}
			found = id
		}
	}
	return found, found != ""
}

// WaitPrimary waits until exactly one live member is a healthy primary, other than not.
func (c *Cluster) WaitPrimary(ctx context.Context, not string) (string, error) {
	for {
		if id, ok := c.Primary(); ok && id != not {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no single healthy primary (other than %q): %w", not, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// RecordHistory returns the store's times of the group record's writes, with the primary each
// names: the server's clock only, so differences between them are meaningful.
func (c *Cluster) RecordHistory(ctx context.Context) ([]RecordWrite, error) {
	es, err := c.kv.History(ctx, member.KeyRecord)
	if err != nil {
		return nil, err
	}
	out := make([]RecordWrite, 0, len(es))
	for _, e := range es {
		var r struct {
			Primary string `json:"primary"`
			Epoch   uint64 `json:"epoch"`
			State   string `json:"state"`
		}
		_ = json.Unmarshal(e.Value(), &r)
		out = append(out, RecordWrite{Rev: e.Revision(), Created: e.Created(), Primary: r.Primary, Epoch: r.Epoch, State: r.State})
	}
	return out, nil
}

// RecordWrite is one write of the group record.
type RecordWrite struct {
	Rev     uint64
	Created time.Time
	Primary string
	Epoch   uint64
	State   string
}

// Describe says, for each member, whether it runs and its last reported role, state and epoch.
func (c *Cluster) Describe() string {
	var parts []string
	for _, id := range c.IDs {
		if c.proc(id) == nil {
			parts = append(parts, id+" never started")
			continue
		}
		r, s, e, paused := c.state(id)
		parts = append(parts, fmt.Sprintf("%s alive=%v paused=%v %s/%s epoch %d", id, c.Alive(id), paused, r, s, e))
	}
	return strings.Join(parts, "; ")
}
