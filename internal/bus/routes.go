package bus

import (
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"godwit.dev/godwit/internal/fault"
)

// Routes joins the embedded server to the embedded servers of the other hub replicas: one
// JetStream cluster, whose replicated streams and buckets (R3) survive the loss of any one
// replica, with no NATS service besides the hubs (docs/ha.md).
type Routes struct {
	// Name is the cluster's name, the same on every replica.
	Name string
	// Listen is where this server accepts routes ("host:port"; port 0 picks a free one).
	Listen string
	// Peers are the other servers' route addresses (nats://host:port).
	Peers []string
	// ServerName is this server's name in the cluster, unique among the replicas.
	ServerName string
	// User and Password authenticate routes between the replicas' servers: a server accepts a
	// route only with them, and offers them on the routes it opens.
	User, Password string
}

// DefaultClusterName is the embedded cluster's name when the configuration gives none.
const DefaultClusterName = "godwit"

func (r *Routes) apply(opts *server.Options) error {
	host, portStr, err := net.SplitHostPort(r.Listen)
	if err != nil {
		return fault.Invalid("Cluster.Listen", "want host:port: %v", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return fault.Invalid("Cluster.Listen", "bad port %q", portStr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if r.User == "" || r.Password == "" {
		return fault.Invalid("Cluster.User", "routes need a user and a password")
	}
	name := r.Name
	if name == "" {
		name = DefaultClusterName
	}
	opts.Cluster.Name = name
	opts.Cluster.Host = host
	opts.Cluster.Port = port
	opts.Cluster.Username = r.User
	opts.Cluster.Password = r.Password
	opts.Cluster.NoAdvertise = true
	opts.ServerName = r.ServerName
	if opts.ServerName == "" {
		opts.ServerName = defaultServerName(r.Listen)
	}
	for _, p := range r.Peers {
		u, err := url.Parse(p)
		if err != nil || u.Host == "" {
			return fault.Invalid("Cluster.Peers", "%q is not nats://host:port", p)
		}
		u.User = url.UserPassword(r.User, r.Password)
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// PeerStatus is what this server knows of its peers: the configured route addresses not
// connected now (for a replica that waits for them, to say which).
func (s *Server) PeerStatus() (connected int, missing []string) {
	if s.cfg.Cluster == nil {
		return 0, nil
	}
	inst := s.cur.Load()
	rz, err := inst.ns.Routez(&server.RoutezOptions{})
	if err != nil {
		return 0, s.cfg.Cluster.Peers
	}
	up := map[string]bool{}
	names := map[string]bool{}
	for _, r := range rz.Routes {
		up[net.JoinHostPort(r.IP, strconv.Itoa(r.Port))] = true
		names[r.RemoteName] = true
	}
	for _, p := range s.cfg.Cluster.Peers {
		u, err := url.Parse(p)
		if err != nil || !(up[u.Host] || names[defaultServerName(u.Host)]) {
			missing = append(missing, p)
		}
	}
	return len(names), missing
}

// defaultServerName is a server's name in the cluster when the configuration gives none: made
// from its route address, so that peers can tell which configured address a route is.
func defaultServerName(listen string) string {
	return "godwit-hub-" + strings.NewReplacer(":", "-", "[", "", "]", "").Replace(listen)
}
