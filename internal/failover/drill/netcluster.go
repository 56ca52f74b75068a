package drill

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	member "godwit.dev/godwit/internal/agent/failover"
	"godwit.dev/godwit/internal/netfault"
)

// NewOnNATSCluster is New on a 3-node JetStream cluster: three embedded servers routed to each
// other, the group's bucket replicated on all three (R3), and member i connected to server i
// mod 3 through a Proxy of its own (Proxy(id)), so that the drill can cut one member off from
// NATS, or slow its acknowledgements, while the cluster keeps its quorum. Members reach the
// bucket as agents do (`--kv agent`: direct gets and compare-and-set puts, no JetStream API).
func NewOnNATSCluster(exe, dir string, members int, t Timing) (*Cluster, error) {
	c := newCluster(exe, dir, members, "drill")
	c.agentKV = true
	routes := make([]string, 3)
	for i := range routes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		routes[i] = ln.Addr().String()
		ln.Close()
	}
	for i := range 3 {
		var peers []string
		for j, r := range routes {
			if j != i {
				peers = append(peers, "nats://"+r)
			}
		}
		_, port, _ := net.SplitHostPort(routes[i])
		var p int
		fmt.Sscan(port, &p)
		srv, err := server.NewServer(&server.Options{ServerName: fmt.Sprintf("drill-%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprintf("nats-%d", i)), NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "drill", Host: "127.0.0.1", Port: p},
			Routes:  server.RoutesFromStr(strings.Join(peers, ","))})
		if err != nil {
			c.Close()
			return nil, err
		}
		go srv.Start()
		c.servers = append(c.servers, srv)
	}
	for i, srv := range c.servers {
		if !srv.ReadyForConnections(30 * time.Second) {
			c.Close()
			return nil, fmt.Errorf("nats server %d did not start", i)
		}
	}
	c.srv = c.servers[0]
	c.URL = c.srv.ClientURL()
	var err error
	if c.nc, err = nats.Connect(c.URL); err != nil {
		c.Close()
		return nil, err
	}
	js, _ := jetstream.New(c.nc)
	// The cluster elects its JetStream meta leader first; until then creating the bucket fails.
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c.kv, err = js.CreateOrUpdateKeyValue(ctx, member.BucketConfig("drill", c.Group, 3))
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			c.Close()
			return nil, fmt.Errorf("R3 group bucket: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, id := range c.IDs {
		p, err := netfault.Start(strings.TrimPrefix(c.servers[i%3].ClientURL(), "nats://"))
		if err != nil {
			c.Close()
			return nil, err
		}
		c.proxies[id] = p
	}
	return c, c.writeSpec(t)
}

// Proxy is the proxy between member id and its NATS server (nil unless NewOnNATSCluster).
func (c *Cluster) Proxy(id string) *netfault.Proxy { return c.proxies[id] }

// Cut black-holes member id's connection to NATS (noted for the checker as "cut": the member
// runs on, so it is held to rule 3 like any member).
func (c *Cluster) Cut(id string) {
	c.note(id, "cut")
	c.proxies[id].Cut()
}

// Heal ends the cut of member id.
func (c *Cluster) Heal(id string) {
	c.note(id, "heal")
	c.proxies[id].Heal()
}
