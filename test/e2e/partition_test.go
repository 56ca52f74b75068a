package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/netfault"
	"godwit.dev/godwit/internal/wire"
)

// startLinkProxy starts the proxy that one hub's NATS server dials to reach one peer's route
// listener: the drills cut a replica off from the others by severing every link proxy to and
// from it (open connections are closed, new ones refused until healed).
func startLinkProxy(t *testing.T, target string) *netfault.Proxy {
	t.Helper()
	p, err := netfault.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// routeListenAddr is a free address for replica i's route listener on a loopback address of its
// own (127.0.0.2, .3, …): a server that learns of a peer from a third server's gossip dials the
// peer's route port on the address it sees the route come from (127.0.0.1, the proxies'), and
// so finds nothing there; every route between the replicas goes through a link proxy.
func routeListenAddr(t *testing.T, i int) string {
	t.Helper()
	ip := net.IPv4(127, 0, 0, byte(2+i))
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The leader is cut off from NATS (every route of its embedded server cut): it stops leader
// work (its lease's watchdog, at ttl − margin), another replica leads under a newer epoch, and
// none of the cut-off replica's writes lands under its old epoch once the new one wrote (the
// checker over every accepted leader write). Healed, it rejoins as a follower.
func TestHALeaderPartitioned(t *testing.T) {
	t.Parallel()
	ttl := 2 * time.Second
	c := startHACluster(t, []string{"--lease-ttl", ttl.String(), "--lease-renew-interval", "300ms",
		"--lease-call-timeout", "300ms", "--lease-margin", "700ms"})
	db, err := sql.Open("pgx", c.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), historySQL); err != nil {
		t.Fatal(err)
	}
	lead, epoch := c.leader(t, []int{0, 1, 2}, 0, 60*time.Second)
	// An agent and a migration running keep the controller writing.
	front := others(lead)[0]
	tok := strings.TrimSpace(c.hubs[front].cli(t, "token", "create", "--uses", "2", "--ttl", "10m"))
	c.hubs[front].startAgent(t, filepath.Join(c.root, "part-1"), tok, "role=ha")
	eventually(t, 60*time.Second, "agent online", func() error {
		if s := statusByName(c.hubs[front].agents(t))["part-1"].Status; s != wire.StatusOnline {
			return fmt.Errorf("part-1 is %q", s)
		}
		return nil
	})
	c.hubs[front].cli(t, "apply", "-f", writeTemp(t, haSpec))

	cut := time.Now()
	c.partition(lead, true)
	lead2, epoch2 := c.leader(t, others(lead), epoch, 60*time.Second)
	t.Logf("leader hub-%d cut off at epoch %d; hub-%d leads at epoch %d after %s", lead, epoch, lead2, epoch2, time.Since(cut).Round(time.Millisecond))
	eventually(t, 30*time.Second, "the cut-off leader steps down and says why", func() error {
		out := c.hubs[lead].output()
		i := strings.LastIndex(out, "this replica stepped down")
		if i < 0 {
			return fmt.Errorf("no step-down logged")
		}
		line := out[i:]
		if j := strings.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		if !strings.Contains(line, "epoch="+strconv.FormatInt(epoch, 10)) || !strings.Contains(line, "why=") {
			return fmt.Errorf("step-down line %q names neither its epoch nor why", line)
		}
		// The line's own time, against the cut (reported, not asserted: a loaded machine).
		start := strings.LastIndexByte(out[:i], '\n') + 1
		if ts, _, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(out[start:i]), "time="), " "); ok {
			if at, err := time.Parse(time.RFC3339Nano, ts); err == nil {
				t.Logf("the cut-off leader stepped down %s after the cut (ttl %s, ttl − margin %s): %s", at.Sub(cut).Round(time.Millisecond), ttl, ttl-700*time.Millisecond, line)
			}
		}
		return nil
	})
	// Cut off for a few ttls more: whatever it still tries to write is rejected.
	time.Sleep(2 * ttl)
	c.partition(lead, false)
	// The healed replica rejoins as a follower. (The heal may still move the lease once among
	// the others: its server rejoining can make the lease stream elect anew, and a renew whose
	// ack was lost then reads as replaced. Fenced, so allowed; reported.)
	l, e := c.leader(t, []int{0, 1, 2}, epoch, 60*time.Second)
	if l == lead {
		t.Fatalf("after the heal the cut-off hub-%d leads again at epoch %d", l, e)
	}
	if e != epoch2 {
		t.Logf("after the heal hub-%d leads at epoch %d (was hub-%d at %d)", l, e, lead2, epoch2)
	}
	st, err := c.hubs[lead].status(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Replicas {
		if r.ID == c.hubs[lead].replicaID() && r.Role != wire.RoleFollower {
			t.Fatalf("the healed replica's role is %q, want %q", r.Role, wire.RoleFollower)
		}
	}
	ws, epochs := readHistory(t, db)
	t.Logf("%d leader writes accepted under %d epochs", len(ws), len(epochs))
	if !epochs[epoch2] || !epochs[e] {
		t.Fatalf("a new leader wrote nothing under epoch %d or %d", epoch2, e)
	}
	if err := checkHistory(ws); err != nil {
		t.Fatal(err)
	}
}
