package bus

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// Names of the embedded server's accounts and of the hub's internal user (see the package comment).
const (
	AccountHub    = "GODWIT"
	AccountAgents = "GODWIT_AGENTS"
	HubUser       = "hub"
	// systemUser is the hub's in-process user of the server's system account, which reaches
	// every server of a routed cluster (DisconnectAgent).
	systemUser = "godwit-system"
)

// Defaults for ServerConfig.
const (
	DefaultAuthLookupTimeout = 3 * time.Second
	DefaultStartTimeout      = time.Minute
)

// Authenticator looks up agents' NATS credentials; the hub implements it on its SQL store.
type Authenticator interface {
	// AgentCredential returns the hex SHA-256 hash of the agent's NATS password and whether it is
	// revoked; an error wrapping fault.ErrNotFound for an unknown agent.
	AgentCredential(ctx context.Context, agentID string) (hash string, revoked bool, err error)
}

// ServerConfig configures the embedded NATS server.
type ServerConfig struct {
	StoreDir string // JetStream storage directory (created if absent)
	Listen   string // "host:port"; port 0 picks a free port
	Auth     Authenticator
	Logger   *slog.Logger // nats-server logs routed here (warnings and up by default)

	// Verbose also routes nats-server notices (at Info) and debug output (at Debug).
	Verbose bool
	// AuthLookupTimeout bounds one Authenticator call; 0 means DefaultAuthLookupTimeout.
	AuthLookupTimeout time.Duration
	// StartTimeout bounds start-up, including JetStream recovering its streams from StoreDir;
	// 0 means DefaultStartTimeout.
	StartTimeout time.Duration
	// TLS, when set, makes the client listener require TLS with this configuration. The hub's
	// in-process connection does not use the network, so it needs none.
	TLS *tls.Config
	// Cluster, when set, joins the server to the other hub replicas' embedded servers: one
	// JetStream cluster (routes.go).
	Cluster *Routes
	// Relays accepts relay connections (relay.go): one connection carrying several agents, each
	// with its own credentials checked. For `godwit bench fleet` only, never set by `godwit hub`.
	Relays bool
}

// Server is the embedded NATS server with JetStream.
type Server struct {
	// cur is the running nats-server; Halt and Resume replace it (outage drills), and the hub's
	// in-process connection follows it across the swap.
	cur       atomic.Pointer[instance]
	opts      *server.Options // as first started, with the port actually bound
	cfg       ServerConfig
	swap      sync.Mutex
	log       *slog.Logger
	hubSecret string
	verify    *verifier
	ctx       context.Context // cancelled by Stop, bounds in-flight credential look-ups
	cancel    context.CancelFunc
	stopOnce  sync.Once
	stopped   chan struct{}
	clientURL string
}

// StartServer starts the embedded server and returns once it accepts connections with JetStream
// enabled in the hub account.
func StartServer(cfg ServerConfig) (*Server, error) {
	if cfg.Auth == nil {
		return nil, fault.Invalid("Auth", "an authenticator is required")
	}
	if cfg.StoreDir == "" {
		return nil, fault.Invalid("StoreDir", "a JetStream storage directory is required")
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fault.Invalid("Listen", "want host:port: %v", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fault.Invalid("Listen", "bad port %q", portStr)
	}
	if port == 0 {
		// nats-server reads 0 as "the default port, 4222"; -1 asks for a free one.
		port = server.RANDOM_PORT
	}
	if cfg.AuthLookupTimeout < 0 {
		return nil, fault.Invalid("AuthLookupTimeout", "must not be negative")
	}
	if cfg.StartTimeout < 0 {
		return nil, fault.Invalid("StartTimeout", "must not be negative")
	}
	if cfg.AuthLookupTimeout == 0 {
		cfg.AuthLookupTimeout = DefaultAuthLookupTimeout
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("start nats: store dir: %w", err)
	}

	opts := &server.Options{}
	if err := opts.ProcessConfigString(accountsConfig()); err != nil {
		return nil, fmt.Errorf("start nats: accounts: %w", err)
	}
	opts.ServerName = "godwit-hub"
	opts.Host = host
	opts.Port = port
	opts.JetStream = true
	opts.StoreDir = cfg.StoreDir
	opts.NoSigs = true
	opts.DisableJetStreamBanner = true
	if cfg.TLS != nil {
		opts.TLS = true
		opts.TLSConfig = cfg.TLS.Clone()
		opts.TLSTimeout = 5
	}
	if cfg.Relays {
		// A relay's CONNECT is checked against the store once per agent it carries, on the
		// connection's read loop, which nats-server's authentication timer (2s by default)
		// bounds; and a server PING sent meanwhile (the first comes after 1-2s) breaks the
		// client's handshake, which expects the PONG of its own.
		opts.AuthTimeout = relayAuthTimeout.Seconds()
		opts.DisableShortFirstPing = true
	}
	if cfg.Cluster != nil {
		if err := cfg.Cluster.apply(opts); err != nil {
			return nil, err
		}
	}

	s := &Server{
		log:       cfg.Logger,
		hubSecret: newSecret(),
		verify:    &verifier{auth: cfg.Auth, timeout: cfg.AuthLookupTimeout, log: cfg.Logger, now: time.Now},
		stopped:   make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	opts.CustomClientAuthentication = (*authenticator)(s)

	s.cfg = cfg
	inst, err := s.launch(opts)
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("start nats: %w", err)
	}
	s.cur.Store(inst)
	s.clientURL = clientURL(inst.ns)
	// A restart (Resume) must come back on the same port: agents know only that address.
	s.opts = opts.Clone()
	s.opts.Port = inst.ns.Addr().(*net.TCPAddr).Port
	return s, nil
}

// instance is one running nats-server with its two accounts.
type instance struct {
	ns          *server.Server
	hub, agents *server.Account
}

func (s *Server) launch(opts *server.Options) (*instance, error) {
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	logs := &logAdapter{log: s.cfg.Logger, verbose: s.cfg.Verbose, fatal: make(chan string, 1)}
	ns.SetLoggerV2(logs, s.cfg.Verbose, false, false)
	// The accounts exist once NewServer has read the configuration; keep them before any client
	// can connect.
	inst := &instance{ns: ns}
	if inst.hub, err = ns.LookupAccount(AccountHub); err == nil {
		inst.agents, err = ns.LookupAccount(AccountAgents)
	}
	if err != nil {
		return nil, err
	}
	// Clients authenticate against the instance being started.
	s.cur.Store(inst)
	ns.Start()
	if err := waitReady(ns, logs.fatal, s.cfg.StartTimeout); err != nil {
		ns.Shutdown()
		return nil, err
	}
	if !ns.JetStreamEnabled() || !inst.hub.JetStreamEnabled() {
		ns.Shutdown()
		return nil, errors.New("jetstream is not enabled in the hub account")
	}
	return inst, nil
}

// Halt stops the server without stopping this Server: every connection drops and reconnects
// once Resume starts it again on the same store and port. It exists for outage drills and
// tests ("NATS down for hours").
func (s *Server) Halt() {
	s.swap.Lock()
	defer s.swap.Unlock()
	inst := s.cur.Load()
	inst.ns.Shutdown()
	inst.ns.WaitForShutdown()
}

// Resume starts the server again after Halt, on the same JetStream store and port.
func (s *Server) Resume() error {
	s.swap.Lock()
	defer s.swap.Unlock()
	if s.cur.Load().ns.Running() {
		return nil
	}
	inst, err := s.launch(s.opts.Clone())
	if err != nil {
		return fmt.Errorf("resume nats: %w", err)
	}
	s.cur.Store(inst)
	return nil
}

// inProcess hands nats.go a connection to whichever nats-server is current, so the hub's
// in-process connection reconnects across Halt/Resume like a network client would.
type inProcess struct{ s *Server }

func (p inProcess) InProcessConn() (net.Conn, error) {
	inst := p.s.cur.Load()
	if !inst.ns.Running() {
		return nil, errors.New("nats server is not running")
	}
	return inst.ns.InProcessConn()
}

// waitReady waits until ns accepts connections. nats-server reports a failed start (port in use,
// JetStream unable to open its store) only by logging at fatal level and not listening, so a fatal
// log ends the wait at once instead of after the whole timeout.
func waitReady(ns *server.Server, fatal <-chan string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case msg := <-fatal:
			return errors.New(msg)
		default:
		}
		if ns.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready for connections within %s", timeout)
		}
	}
}

// accountsConfig is the nats-server configuration of the two accounts (see the package comment).
func accountsConfig() string {
	exp, imp := accountLinks("      ")
	return fmt.Sprintf(`accounts {
  %s {
    jetstream: enabled
    exports: [
%s    ]
  }
  %s {
    limits: {max_subscriptions: %d, max_payload: %d}
    imports: [
%s    ]
  }
}
`, AccountHub, exp, AccountAgents, AgentMaxSubscriptions, AgentMaxPayload, imp)
}

// accountLinks returns the hub account's exports and the agents' account's imports, one per line
// with the given indent: the only subjects agents can reach. The subjects are derived from the
// wire package, with "*" standing for the agent ID. Both the embedded server and the external
// cluster's configuration (ClusterConfig) are made from it.
func accountLinks(indent string) (exports, imports string) {
	services := []string{
		wire.KVSubject(wire.BucketHeartbeats, "*"),
		wire.KVSubject(wire.BucketObserved, "*"),
		wire.KVDirectGetSubject(wire.BucketDesired, "*"),
		wire.EventSubject("*"),
		wire.KVSubject(wire.BucketSweepResults, "*"),
		wire.KVDirectGetSubject(wire.BucketSweep, "*"),
		wire.KVDirectGetSubject(wire.BucketFailover, "*"),
		// Failover group buckets (any bucket: a user's permissions name its own group's).
		"$JS.API.DIRECT.GET.*.$KV.*.record",
		"$JS.API.DIRECT.GET.*.$KV.*.control",
		"$JS.API.DIRECT.GET.*.$KV.*.member.*",
		"$KV.*.record",
		"$KV.*.member.*",
	}
	streams := []string{wire.KVSubject(wire.BucketDesired, "*"), wire.KVSubject(wire.BucketSweep, "*"),
		wire.KVSubject(wire.BucketFailover, "*")}

	var exp, imp strings.Builder
	for _, subj := range services {
		fmt.Fprintf(&exp, "%s{service: %q, accounts: [%s]}\n", indent, subj, AccountAgents)
		fmt.Fprintf(&imp, "%s{service: {account: %s, subject: %q}}\n", indent, AccountHub, subj)
	}
	for _, subj := range streams {
		fmt.Fprintf(&exp, "%s{stream: %q, accounts: [%s]}\n", indent, subj, AccountAgents)
		fmt.Fprintf(&imp, "%s{stream: {account: %s, subject: %q}}\n", indent, AccountHub, subj)
	}
	return exp.String(), imp.String()
}

func newSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("bus: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// clientURL is the address actually bound. An unspecified host (0.0.0.0, ::) is reported as the
// loopback address so the URL can be dialled; remote agents need an advertised address instead.
func clientURL(ns *server.Server) string {
	addr, ok := ns.Addr().(*net.TCPAddr)
	if !ok {
		return ns.ClientURL()
	}
	ip := addr.IP
	switch {
	case len(ip) == net.IPv6len && ip.To4() == nil && ip.IsUnspecified():
		ip = net.IPv6loopback
	case ip == nil || ip.IsUnspecified():
		ip = net.IPv4(127, 0, 0, 1)
	}
	return "nats://" + net.JoinHostPort(ip.String(), strconv.Itoa(addr.Port))
}

// ClientURL returns nats://host:port of the listener actually bound.
func (s *Server) ClientURL() string { return s.clientURL }

// ConnectHub opens an in-process connection as the internal hub user, which may use every
// subject of the hub account, JetStream API included. opts are applied after the defaults.
func (s *Server) ConnectHub(name string, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{
		nats.InProcessServer(inProcess{s}),
		nats.UserInfo(HubUser, s.hubSecret),
		nats.Name(name),
	}
	nc, err := nats.Connect("", append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect hub: %w", err)
	}
	return nc, nil
}

// DisconnectAgent closes every live connection of the agent and returns how many it closed. Call
// it after the revocation is committed to the store: a reconnect is then refused, since every
// connection attempt looks the credential up afresh. With routes (Cluster), the agent may be
// connected to another replica's server: the connections are found and closed on every server
// through the system account.
func (s *Server) DisconnectAgent(agentID string) int {
	if !ValidAgentID(agentID) {
		return 0
	}
	if s.cfg.Cluster != nil {
		n, err := s.disconnectEverywhere(agentID)
		if err == nil {
			return n
		}
		s.log.Warn("nats: closing the agent's connections on the cluster's servers failed; closing them on this one", "agent_id", agentID, "err", err)
	}
	return s.disconnectLocal(agentID)
}

// disconnectEverywhere is DisconnectAgent on every server of the cluster (SystemClient).
func (s *Server) disconnectEverywhere(agentID string) (int, error) {
	nc, err := nats.Connect("", nats.InProcessServer(inProcess{s}), nats.UserInfo(systemUser, s.hubSecret),
		nats.Name("godwit-hub-system"), nats.MaxReconnects(0))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	return NewSystemClient(nc).DisconnectAgent(ctx, agentID)
}

func (s *Server) disconnectLocal(agentID string) int {
	var ids []uint64
	for offset := 0; ; {
		cz, err := s.cur.Load().ns.Connz(&server.ConnzOptions{
			Username: true,
			User:     agentID,
			Account:  AccountAgents,
			State:    server.ConnOpen,
			Offset:   offset,
			Limit:    1024,
		})
		if err != nil {
			s.log.Warn("nats: list agent connections", "agent_id", agentID, "err", err)
			break
		}
		for _, c := range cz.Conns {
			ids = append(ids, c.Cid)
		}
		if len(cz.Conns) == 0 || offset+len(cz.Conns) >= cz.Total {
			break
		}
		offset += len(cz.Conns)
	}
	n := 0
	for _, id := range ids {
		if err := s.cur.Load().ns.DisconnectClientByID(id); err == nil {
			n++
		}
	}
	return n
}

// Stop shuts the server down and waits for it, or for ctx. It is safe to call more than once.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.cancel()
		go func() {
			s.swap.Lock()
			ns := s.cur.Load().ns
			s.swap.Unlock()
			ns.Shutdown()
			ns.WaitForShutdown()
			close(s.stopped)
		}()
	})
	select {
	case <-s.stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop nats: %w", ctx.Err())
	}
}

// Ready reports whether the server is running with JetStream enabled.
func (s *Server) Ready() bool {
	select {
	case <-s.stopped:
		return false
	default:
	}
	ns := s.cur.Load().ns
	return ns.Running() && ns.JetStreamEnabled()
}

// logAdapter routes nats-server's logger to slog.
type logAdapter struct {
	log     *slog.Logger
	verbose bool
	fatal   chan string // the first fatal message, for StartServer
}

var _ server.Logger = (*logAdapter)(nil)

func (l *logAdapter) Noticef(format string, v ...any) {
	if l.verbose {
		l.log.Info(fmt.Sprintf(format, v...), "component", "nats")
	}
}

func (l *logAdapter) Warnf(format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...), "component", "nats")
}

// Fatalf only logs: nats-server returns after it, and ending the process is the hub's decision.
func (l *logAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg, "component", "nats", "fatal", true)
	select {
	case l.fatal <- msg:
	default:
	}
}

func (l *logAdapter) Errorf(format string, v ...any) {
	l.log.Error(fmt.Sprintf(format, v...), "component", "nats")
}

func (l *logAdapter) Debugf(format string, v ...any) {
	if l.verbose {
		l.log.Debug(fmt.Sprintf(format, v...), "component", "nats")
	}
}

func (l *logAdapter) Tracef(format string, v ...any) {
	if l.verbose {
		l.log.Log(context.Background(), slog.LevelDebug-4, fmt.Sprintf(format, v...), "component", "nats")
	}
}
