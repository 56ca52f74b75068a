package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/bus/bustest"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/hub"
	"godwit.dev/godwit/internal/store/pgtest"
)

// natsCluster is three real nats-server processes routed into one JetStream cluster on
// loopback, each configured with the block of docs/security.md.
type natsCluster struct {
	dirs, names, routes []string
	servers             []*bustest.NATSServer
}

func newNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	bustest.NATSServerBinary(t) // built once, before any timing starts
	nc := &natsCluster{}
	for i := range 3 {
		nc.dirs = append(nc.dirs, t.TempDir())
		nc.names = append(nc.names, fmt.Sprintf("ext-%d", i))
		nc.routes = append(nc.routes, freeAddr(t))
	}
	return nc
}

// start (re)starts the three servers with conf, each with its cluster block added, on the same
// JetStream stores as before; the client ports are new.
func (nc *natsCluster) start(t *testing.T, conf string) {
	t.Helper()
	nc.servers = make([]*bustest.NATSServer, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		var routes []string
		for j, r := range nc.routes {
			if j != i {
				routes = append(routes, "nats-route://"+r)
			}
		}
		cluster := fmt.Sprintf("cluster {\n  name: godwit-ext\n  listen: %q\n  routes: [%s]\n}\n", nc.routes[i], strings.Join(routes, ", "))
		wg.Go(func() { nc.servers[i] = bustest.StartNamedNATSServer(t, nc.dirs[i], nc.names[i], cluster+conf) })
	}
	wg.Wait()
}

func (nc *natsCluster) stop() {
	for _, s := range nc.servers {
		s.Stop()
	}
}

// urls is the servers' client URLs with user:password.
func (nc *natsCluster) urls(user, password string) string {
	var out []string
	for _, s := range nc.servers {
		out = append(out, "nats://"+user+":"+password+"@"+strings.TrimPrefix(s.URL, "nats://"))
	}
	return strings.Join(out, ",")
}

var calloutKeyRe = regexp.MustCompile(`(?m)^\s*(issuer|xkey): (\S+)$`)

// Three hubs on one PostgreSQL database and an external three-server NATS JetStream cluster,
// set up the way docs/security.md tells an operator: the first hub, started against the cluster
// as it is, makes its auth-callout keys, writes the cluster configuration with them into its data
// dir and refuses to start; the block, with its keys and the two passwords, goes into every
// server, which is restarted. Then two real agents (placed by the hubs' callout) run a migration.
// The leader is killed (-9): another replica leads under a larger epoch and the migration
// completes, each step run once. Then a nats-server the leader is not connected to is killed
// (-9): every hub, the killed one restarted, answers under the same leader and epoch.
func TestHAExternalNATS(t *testing.T) {
	t.Parallel()
	ns := newNATSCluster(t)
	hubPW, sysPW := "hubpw-"+credential.New(""), "syspw-"+credential.New("")
	block := func(issuer, xkey string) string {
		return bustest.DocsClusterConfig(t, bus.ClusterParams{Issuer: issuer, XKey: xkey, HubPassword: hubPW, SystemPassword: sysPW})
	}
	before := block("unknown", "unknown")
	ns.start(t, before[:strings.Index(before, "authorization {")])

	c := &haCluster{lease: haLease, dsn: pgtest.DSN(t), root: t.TempDir(), hubs: make([]*hubProc, 3)}
	natsFlags := func() []string {
		return []string{"--nats", ns.urls(bus.ClusterHubUser, hubPW), "--nats-system", ns.urls(bus.ClusterSystemUser, sysPW), "--nats-replicas", "3"}
	}

	// 1. The first start makes the keys and refuses: the cluster does not send agents to it.
	c.external = natsFlags()
	first := start(t, "hub first-start", nil, append([]string{"hub", "--data-dir", filepath.Join(c.root, "hub-0"),
		"--listen", "127.0.0.1:0", "--log-format", "text"}, c.args(0)...)...)
	if code := first.wait(60 * time.Second); code != 1 || !regexp.MustCompile(`does not send unknown users to this hub's auth callout .*`+
		regexp.QuoteMeta(hub.ClusterConfigFile)).MatchString(first.output()) {
		t.Fatalf("first start on the cluster without the callout: exit %d, want 1 saying the callout is missing and naming %s; output:\n%s",
			code, hub.ClusterConfigFile, first.output())
	}
	raw, err := os.ReadFile(filepath.Join(c.root, "hub-0", hub.ClusterConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, m := range calloutKeyRe.FindAllStringSubmatch(string(raw), -1) {
		keys[m[1]] = m[2]
	}
	if keys["issuer"] == "" || keys["xkey"] == "" {
		t.Fatalf("%s holds no issuer or xkey:\n%s", hub.ClusterConfigFile, raw)
	}

	// 2. The block with the keys in every server (auth_callout needs a restart), then the hubs.
	ns.stop()
	ns.start(t, block(keys["issuer"], keys["xkey"]))
	c.external = natsFlags()
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
	for i, h := range c.hubs {
		h.token = c.token
		if !strings.Contains(h.output(), "probe passed") {
			t.Fatalf("hub-%d started without a passed probe of the cluster", i)
		}
	}
	lead, epoch := c.leader(t, []int{0, 1, 2}, 0, 60*time.Second)

	// 3. Agents, on a follower; a migration. 4. kill -9 the leader.
	agents := []string{"ext-1", "ext-2"}
	c.enrollAndApply(t, lead, agents)
	lead2, epoch2, _ := c.killLeaderMidMigration(t, lead, epoch, agents)

	// The killed replica comes back, as a follower.
	c.start(t, lead)
	if l, _ := c.leader(t, []int{0, 1, 2}, epoch, 60*time.Second); l != lead2 {
		t.Fatalf("the restarted replica hub-%d took the lead from hub-%d", l, lead2)
	}

	// 5. kill -9 a nats-server the leader is not connected to. The leader keeps the lease's
	// stream led by the server it is connected to, and says which.
	var near string
	lineRe := regexp.MustCompile(`the lease stream is led by this replica's NATS server"? server=(\S+) epoch=` + strconv.FormatInt(epoch2, 10) + `\b`)
	eventually(t, 30*time.Second, "the lease stream led by the leader's NATS server", func() error {
		m := lineRe.FindStringSubmatch(c.hubs[lead2].output())
		if m == nil {
			return fmt.Errorf("not yet")
		}
		near = m[1]
		return nil
	})
	victim := -1
	for i, s := range ns.servers {
		if s.Name != near && victim < 0 {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("the leader's NATS server %q is none of the cluster's", near)
	}
	t.Logf("hub-%d is connected to %s; killing %s", lead2, near, ns.names[victim])
	ns.servers[victim].Kill()
	all := []int{0, 1, 2}
	eventually(t, 30*time.Second, "every hub ready with a NATS server lost", func() error {
		for _, i := range all {
			resp, err := http.Get(c.hubs[i].api + "/readyz")
			if err != nil {
				return fmt.Errorf("hub-%d: %w", i, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("hub-%d: readyz %d", i, resp.StatusCode)
			}
		}
		return nil
	})
	for _, i := range all {
		c.hubs[i].cli(t, "get", "agents")
		c.hubs[i].cli(t, "get", "migrations")
	}
	if l, e := c.leader(t, all, epoch, 30*time.Second); l != lead2 || e != epoch2 {
		t.Fatalf("after losing %s: leader hub-%d at %d, want hub-%d at %d", ns.names[victim], l, e, lead2, epoch2)
	}
}
