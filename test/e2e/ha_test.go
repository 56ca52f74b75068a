package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/netfault"
	"godwit.dev/godwit/internal/store/pgtest"
	"godwit.dev/godwit/internal/wire"
)

// haLease is the drills' lease timing: shorter than the default, within the rule (2×1 + 1 + 2 ≤
// 8), and with a watchdog (ttl − margin = 6 s) longer than a loaded machine takes to elect a new
// leader for the lease's R3 stream when the server that led it is killed — so that losing a
// follower's NATS server, as the issue asks, needs no leader change. (At 3 s the watchdog of 2 s
// sometimes fired first on a busy machine: fenced and safe, but a needless change.)
var haLease = []string{"--lease-ttl", "8s", "--lease-renew-interval", "1s", "--lease-call-timeout", "1s", "--lease-margin", "2s"}

// haCluster is three hub processes on one PostgreSQL database, their embedded NATS servers one
// JetStream cluster with R3 streams and buckets.
type haCluster struct {
	lease     []string // the lease timing flags
	dsn, root string
	natsAddr  []string
	routeAddr []string
	// links[i][j] is the proxy through which replica i's NATS server routes to replica j's.
	links [3][3]*netfault.Proxy
	hubs  []*hubProc
	token string
	// external is the NATS flags of hubs on an external cluster (--nats, …); empty when each hub
	// runs its own embedded server.
	external []string
}

func (c *haCluster) args(i int) []string {
	if len(c.external) > 0 {
		args := append([]string{"--database", c.dsn, "--shutdown-timeout", "5s"}, c.external...)
		return append(append(args, c.lease...), fastLiveness...)
	}
	args := []string{"--database", c.dsn, "--nats-listen", c.natsAddr[i], "--nats-cluster-listen", c.routeAddr[i],
		"--nats-replicas", "3", "--shutdown-timeout", "5s"}
	for j := range c.routeAddr {
		if j != i {
			args = append(args, "--nats-route", "nats://"+c.links[i][j].Addr())
		}
	}
	for _, a := range c.natsAddr {
		args = append(args, "--nats-advertise", "nats://"+a)
	}
	args = append(args, c.lease...)
	return append(args, fastLiveness...)
}

// start starts (or restarts) replica i.
func (c *haCluster) start(t *testing.T, i int) {
	t.Helper()
	h := startHub(t, filepath.Join(c.root, fmt.Sprintf("hub-%d", i)), c.args(i)...)
	if c.token != "" {
		h.token = c.token
	}
	c.hubs[i] = h
}

func startHACluster(t *testing.T, lease []string) *haCluster {
	t.Helper()
	c := &haCluster{lease: lease, dsn: pgtest.DSN(t), root: t.TempDir(), hubs: make([]*hubProc, 3)}
	for i := range 3 {
		c.routeAddr = append(c.routeAddr, routeListenAddr(t, i))
	}
	for i := range 3 {
		for j := range 3 {
			if i != j {
				c.links[i][j] = startLinkProxy(t, c.routeAddr[j])
			}
		}
	}
	// Only now, with the proxies listening: a port freeAddr found free and let go may be handed
	// to the next listener on 127.0.0.1, and a proxy that took a replica's client port kept that
	// replica from starting ("address already in use").
	for len(c.natsAddr) < 3 {
		if a := freeAddr(t); !slices.Contains(c.natsAddr, a) {
			c.natsAddr = append(c.natsAddr, a)
		}
	}
	// Together: each waits for a quorum of the JetStream cluster before it serves.
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { c.start(t, i) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, h := range c.hubs {
		if h.token != "" {
			c.token = h.token
		}
	}
	for _, h := range c.hubs {
		h.token = c.token
	}
	return c
}

// partition cuts replica i's NATS server off from the others' (every route to and from it),
// or heals it.
func (c *haCluster) partition(i int, cut bool) {
	for j := range 3 {
		if j != i {
			for _, l := range []*netfault.Proxy{c.links[i][j], c.links[j][i]} {
				if cut {
					l.Sever()
				} else {
					l.Heal()
				}
			}
		}
	}
}

func (h *hubProc) status(t *testing.T) (wire.HubStatus, error) {
	t.Helper()
	out, errOut, code := h.cliCode("status", "-o", "json")
	if code != 0 {
		return wire.HubStatus{}, fmt.Errorf("status: exit %d: %s", code, errOut)
	}
	var st wire.HubStatus
	err := json.Unmarshal([]byte(out), &st)
	return st, err
}

// replicaID is the replica id a hub process runs under (host-pid).
func (h *hubProc) replicaID() string {
	host, _ := os.Hostname()
	return host + "-" + strconv.Itoa(h.cmd.Process.Pid)
}

// leader waits until the replicas in among agree on one leader under an epoch above after, and
// returns its index in c.hubs and the epoch.
func (c *haCluster) leader(t *testing.T, among []int, after int64, timeout time.Duration) (int, int64) {
	t.Helper()
	idx, epoch := -1, int64(0)
	eventually(t, timeout, "one leader", func() error {
		var leader string
		for _, i := range among {
			st, err := c.hubs[i].status(t)
			if err != nil {
				return err
			}
			if st.Leadership == nil || st.Leadership.Leader == "" {
				return fmt.Errorf("hub-%d sees no leader", i)
			}
			if leader != "" && st.Leadership.Leader != leader {
				return fmt.Errorf("hub-%d sees %s, another sees %s", i, st.Leadership.Leader, leader)
			}
			if st.Leadership.Epoch <= after {
				return fmt.Errorf("hub-%d sees epoch %d, want above %d", i, st.Leadership.Epoch, after)
			}
			leader, epoch = st.Leadership.Leader, st.Leadership.Epoch
		}
		for _, i := range among {
			if c.hubs[i].replicaID() == leader {
				idx = i
				return nil
			}
		}
		return fmt.Errorf("leader %s is none of the running hubs", leader)
	})
	return idx, epoch
}

func others(of int, except ...int) []int {
	var out []int
	for i := range 3 {
		skip := i == of
		for _, e := range except {
			skip = skip || i == e
		}
		if !skip {
			out = append(out, i)
		}
	}
	return out
}

const haSpec = `apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: ha}
spec:
  selector: {matchLabels: {role: ha}}
  toVersion: "2"
  steps:
    - name: one
      run: 'echo x >> c1; sleep 2'
      timeout: 2m
    - name: two
      run: 'echo x >> c2; sleep 2'
      timeout: 2m
    - name: three
      run: 'echo x >> c3'
      timeout: 2m
  rollout:
    batchSize: 100%
`

// Three hubs on one PostgreSQL database and one embedded JetStream cluster, two real agents and
// a migration running. The leader is killed (-9): another replica leads, the migration completes
// with every step run exactly once and every agent's result event stored. The new leader is then
// paused past its ttl: a third replica leads, and the paused one, resumed, steps down and says
// why. Then one replica (and with it one NATS server) is killed: the others go on answering under
// the same leader. A hub with its own NATS on the same database is refused.
func TestHADrills(t *testing.T) {
	t.Parallel()
	c := startHACluster(t, haLease)
	for _, h := range c.hubs {
		if h.api == "" {
			t.Fatal("a hub did not come up")
		}
	}

	// The cluster leads, so its NATS identity is the database's: the first NATS a database's hubs
	// use is the one it keeps.
	lead, epoch := c.leader(t, []int{0, 1, 2}, 0, 60*time.Second)

	// Bad input: a fourth hub with a standalone NATS on this database is refused at start.
	other := start(t, "hub other-nats", nil, "hub", "--data-dir", filepath.Join(c.root, "other"), "--listen", "127.0.0.1:0",
		"--nats-listen", "127.0.0.1:0", "--database", c.dsn, "--log-format", "text")
	if code := other.wait(60 * time.Second); code == 0 || !strings.Contains(other.output(), "is not the NATS cluster of the other hubs of this database") {
		t.Fatalf("a hub on another NATS: exit %d, output:\n%s", code, other.output())
	}

	st, err := c.hubs[0].status(t)
	if err != nil || len(st.Replicas) != 3 {
		t.Fatalf("status replicas = %+v, %v; want 3", st.Replicas, err)
	}

	// Agents enroll on a follower: every replica serves the API. kill -9 the leader mid-migration.
	agents := []string{"ha-1", "ha-2"}
	c.enrollAndApply(t, lead, agents)
	lead2, epoch2, survivor := c.killLeaderMidMigration(t, lead, epoch, agents)
	eventually(t, 30*time.Second, "every agent's result event stored", func() error {
		var evs []wire.EventRecord
		out := c.hubs[survivor].cli(t, "events", "--type", wire.EventExecutionSucceeded, "-o", "json")
		if err := json.Unmarshal([]byte(out), &evs); err != nil {
			return err
		}
		if len(evs) != len(agents) {
			return fmt.Errorf("%d %s events, want %d", len(evs), wire.EventExecutionSucceeded, len(agents))
		}
		return nil
	})

	// The killed replica comes back (as a follower), so that a pause of one more leaves a
	// quorum of NATS servers.
	c.start(t, lead)
	if l, _ := c.leader(t, []int{0, 1, 2}, epoch, 60*time.Second); l != lead2 {
		t.Fatalf("the restarted replica hub-%d took the lead from hub-%d", l, lead2)
	}

	// SIGSTOP the leader past its ttl, then SIGCONT.
	c.hubs[lead2].signal(syscall.SIGSTOP)
	lead3, epoch3 := c.leader(t, others(lead2), epoch2, 60*time.Second)
	c.hubs[lead2].signal(syscall.SIGCONT)
	t.Logf("leader hub-%d paused at epoch %d; hub-%d leads at epoch %d", lead2, epoch2, lead3, epoch3)
	eventually(t, 30*time.Second, "the paused leader steps down and says why", func() error {
		out := c.hubs[lead2].output()
		i := strings.LastIndex(out, "this replica stepped down")
		if i < 0 {
			return fmt.Errorf("no step-down logged")
		}
		line := out[i:]
		if j := strings.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		if !strings.Contains(line, "epoch="+strconv.FormatInt(epoch2, 10)) || !strings.Contains(line, "why=") {
			return fmt.Errorf("step-down line %q names neither its epoch nor why", line)
		}
		return nil
	})
	if _, e := c.leader(t, []int{0, 1, 2}, epoch2, 30*time.Second); e != epoch3 {
		t.Fatalf("after the pause the epoch is %d, want %d (hub-%d's)", e, epoch3, lead3)
	}

	// Kill one follower, and with it one of the three NATS servers: no leader change, the API
	// answers on the others. The leader keeps the lease's stream led by its own NATS server, so
	// that no follower's loss stalls its renews for a stream leader election.
	eventually(t, 30*time.Second, "the lease stream led by the leader's NATS server", func() error {
		if !regexp.MustCompile(`the lease stream is led by this replica's NATS server"? .*epoch=` + strconv.FormatInt(epoch3, 10) + `\b`).MatchString(c.hubs[lead3].output()) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	victim := others(lead3)[0]
	c.hubs[victim].signal(syscall.SIGKILL)
	c.hubs[victim].wait(10 * time.Second)
	rest := others(victim)
	for range 5 {
		for _, i := range rest {
			resp, err := http.Get(c.hubs[i].api + "/readyz")
			if err != nil {
				t.Fatalf("hub-%d after a NATS server was lost: %v", i, err)
			}
			resp.Body.Close()
			c.hubs[i].cli(t, "get", "agents")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if l, e := c.leader(t, rest, epoch2, 30*time.Second); l != lead3 || e != epoch3 {
		t.Fatalf("after losing hub-%d: leader hub-%d at %d, want hub-%d at %d", victim, l, e, lead3, epoch3)
	}
}

// A second hub on the data dir, and so the SQLite file, of a running hub is refused and says why;
// the first goes on.
func TestSecondHubOnOneSQLiteFileRefused(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "hub")
	first := startHub(t, dir)
	second := start(t, "second hub", nil, "hub", "--data-dir", dir, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--log-format", "text")
	if code := second.wait(60 * time.Second); code == 0 || !strings.Contains(second.output(), "its SQLite store serves one hub only") {
		t.Fatalf("second hub on one SQLite file: exit %d, output:\n%s", code, second.output())
	}
	first.cli(t, "get", "agents")
}

// enrollAndApply enrolls agents (label role=ha) through a follower of lead, applies haSpec there,
// and returns once the first agent runs the first step.
func (c *haCluster) enrollAndApply(t *testing.T, lead int, agents []string) {
	t.Helper()
	front := others(lead)[0]
	tok := strings.TrimSpace(c.hubs[front].cli(t, "token", "create", "--uses", strconv.Itoa(2*len(agents)), "--ttl", "10m"))
	for _, a := range agents {
		c.hubs[front].startAgent(t, filepath.Join(c.root, a), tok, "role=ha")
	}
	eventually(t, 60*time.Second, "agents online", func() error {
		m := statusByName(c.hubs[front].agents(t))
		for _, a := range agents {
			if m[a].Status != wire.StatusOnline {
				return fmt.Errorf("%s is %q", a, m[a].Status)
			}
		}
		return nil
	})
	c.hubs[front].cli(t, "apply", "-f", writeTemp(t, haSpec))
	eventually(t, 60*time.Second, "the first step running", func() error {
		_, err := os.Stat(c.work(agents[0], "c1"))
		return err
	})
}

// killLeaderMidMigration kills the leader with SIGKILL while haSpec runs: another replica leads
// under a newer epoch, the migration succeeds, and every step ran exactly once on every agent
// (its counter file holds one line). It returns the new leader, its epoch, and the replica that
// is neither.
func (c *haCluster) killLeaderMidMigration(t *testing.T, lead int, epoch int64, agents []string) (lead2 int, epoch2 int64, survivor int) {
	t.Helper()
	killed := time.Now()
	c.hubs[lead].signal(syscall.SIGKILL)
	c.hubs[lead].wait(10 * time.Second)
	lead2, epoch2 = c.leader(t, others(lead), epoch, 60*time.Second)
	t.Logf("leader hub-%d killed at epoch %d; hub-%d leads at epoch %d after %s", lead, epoch, lead2, epoch2, time.Since(killed).Round(time.Millisecond))
	survivor = others(lead, lead2)[0]
	eventually(t, 120*time.Second, "migration succeeded", func() error {
		var d wire.MigrationDescription
		if err := json.Unmarshal([]byte(c.hubs[survivor].cli(t, "describe", "migration", "ha", "-o", "json")), &d); err != nil {
			return err
		}
		if d.Migration.State != "succeeded" {
			return fmt.Errorf("state %s (%s)", d.Migration.State, d.Migration.Reason)
		}
		return nil
	})
	for _, a := range agents {
		for _, f := range []string{"c1", "c2", "c3"} {
			if b, err := os.ReadFile(c.work(a, f)); err != nil || strings.TrimSpace(string(b)) != "x" {
				t.Fatalf("%s/%s = %q, %v: a step ran more than once, or not at all", a, f, b, err)
			}
		}
	}
	return lead2, epoch2, survivor
}

// work is the path of a file in an agent's work dir.
func (c *haCluster) work(agent, file string) string {
	return filepath.Join(c.root, agent, "work", file)
}
