package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/lease"
	"godwit.dev/godwit/internal/wire"
)

// Default ports. They avoid the standard ports of services that often run beside a hub:
// NATS 4222/6222/7422/8222, PostgreSQL 5432, Redis 6379, MySQL 3306, RabbitMQ 5672, MQTT 1883,
// HTTP 8080.
const (
	DefaultHTTPPort = 7750
	DefaultNATSPort = 7751
)

// Hub is the hub's configuration.
type Hub struct {
	// DataDir holds the SQLite store, JetStream storage, the admin token and endpoint file.
	DataDir string `yaml:"dataDir" flag:"data-dir" usage:"directory for the SQLite store, JetStream data, admin token and endpoint file"`
	// Listen is the HTTP address for the API, UI, metrics and health checks.
	Listen string `yaml:"listen" flag:"listen" usage:"HTTP address (API, UI, /metrics, /healthz, /readyz)"`
	// Database is empty for SQLite in DataDir, or a postgres:// URL.
	Database string   `yaml:"database" flag:"database" usage:"PostgreSQL URL (postgres://…); empty keeps SQLite in the data dir"`
	NATS     NATS     `yaml:"nats"`
	Liveness Liveness `yaml:"liveness"`
	Lease    Lease    `yaml:"lease"`
	// ShutdownTimeout bounds the drain on SIGTERM.
	ShutdownTimeout Duration `yaml:"shutdownTimeout" flag:"shutdown-timeout" usage:"drain budget on SIGTERM/SIGINT"`
	// MaxOutage is the longest outage (of the hub, NATS, the database or an agent) the hub must
	// ride out without losing anything; every retention must outlive it.
	MaxOutage Duration  `yaml:"maxOutage" flag:"max-outage" usage:"longest outage to ride out without losing anything; retentions must outlive it"`
	Retention Retention `yaml:"retention"`
	// MaxBodyBytes bounds request bodies; larger ones get 413.
	MaxBodyBytes int64 `yaml:"maxBodyBytes" flag:"max-body-bytes" usage:"largest accepted request body (bytes)"`
	TLS          TLS   `yaml:"tls"`
	// InsecurePlaintext allows HTTP and NATS without TLS on addresses other than loopback.
	InsecurePlaintext bool        `yaml:"insecurePlaintext" flag:"insecure-plaintext" usage:"serve HTTP and NATS without TLS on non-loopback addresses (not recommended)"`
	Auth              Auth        `yaml:"auth"`
	AgentLimits       AgentLimits `yaml:"agentLimits"`
	Log               Log         `yaml:"log"`
}

// Auth configures how callers are told apart and how failed attempts are limited.
type Auth struct {
	// FailureBurst is how many failed authentications (API, web UI login, enrollment) one client
	// address may make before it gets 429; FailureInterval earns one attempt back.
	FailureBurst    int      `yaml:"failureBurst" flag:"auth-failure-burst" usage:"failed authentications one client address may make before it is refused with 429"`
	FailureInterval Duration `yaml:"failureInterval" flag:"auth-failure-interval" usage:"how long a refused address waits for each further attempt"`
	// TrustedProxies are addresses or CIDRs of reverse proxies whose X-Forwarded-For names the
	// client (audit log, rate limit). Empty: the connection's address always.
	TrustedProxies []string `yaml:"trustedProxies" flag:"trusted-proxy" usage:"address or CIDR of a reverse proxy whose X-Forwarded-For is believed (repeatable)"`
}

// AgentLimits bounds what one agent may send; see docs/security.md.
type AgentLimits struct {
	// ClockSkew is how far ahead of the hub's receipt an event's time may be; a later time is
	// replaced by the receipt time and flagged.
	ClockSkew Duration `yaml:"clockSkew" flag:"agent-clock-skew" usage:"how far ahead of its receipt an agent's event time may be before the hub replaces it with the receipt time"`
	// EventRate and EventBurst, ByteRate and ByteBurst are the ingest's per-agent quota (events
	// and bytes per second, on average and at once); events beyond it are dead-lettered.
	EventRate  int   `yaml:"eventRate" flag:"agent-event-rate" usage:"events per second one agent may send on average"`
	EventBurst int   `yaml:"eventBurst" flag:"agent-event-burst" usage:"events one agent may send at once"`
	ByteRate   int64 `yaml:"byteRate" flag:"agent-byte-rate" usage:"event bytes per second one agent may send on average"`
	ByteBurst  int64 `yaml:"byteBurst" flag:"agent-byte-burst" usage:"event bytes one agent may send at once"`
	// StreamEvents is how many events of one agent the events stream keeps; a newer one pushes
	// out the agent's oldest.
	StreamEvents int64 `yaml:"streamEvents" flag:"agent-stream-events" usage:"events of one agent the events stream keeps (its oldest are dropped first)"`
}

// TLS configures the hub's certificates (HTTP and the embedded NATS server).
type TLS struct {
	// Mode is auto (TLS whenever an address is not loopback, or a certificate is given) or always.
	Mode string `yaml:"mode" flag:"tls-mode" usage:"auto (TLS unless every address is loopback) or always"`
	// Cert and Key are a certificate (chain) and its key to use instead of the generated ones.
	Cert string `yaml:"cert" flag:"tls-cert" usage:"server certificate (PEM, chain) instead of the one the hub generates"`
	Key  string `yaml:"key" flag:"tls-key" usage:"private key (PEM) of --tls-cert"`
	// CA is the certificate authority that signed Cert; enrollment tokens pin its fingerprint.
	CA string `yaml:"ca" flag:"tls-ca" usage:"CA certificate (PEM) that signed --tls-cert; enrollment tokens pin it"`
	// SANs are extra names and addresses for the generated server certificate.
	SANs []string `yaml:"sans" flag:"tls-san" usage:"extra DNS name or IP for the generated certificate (repeatable)"`
}

// NATS configures the message bus.
type NATS struct {
	// URL of an external NATS cluster (comma-separated); empty runs the embedded server.
	URL string `yaml:"url" flag:"nats" usage:"external NATS URLs (comma-separated); empty runs the embedded server"`
	// Listen is the embedded server's client address.
	Listen string `yaml:"listen" flag:"nats-listen" usage:"embedded NATS client address"`
	// Advertise lists the NATS URLs handed to agents at enrollment; default: the bound address.
	Advertise []string `yaml:"advertise" flag:"nats-advertise" usage:"NATS URLs handed to agents (default: the bound address)"`
	// Replicas for streams and buckets: 1 embedded, 3 on an external cluster.
	Replicas int `yaml:"replicas" flag:"nats-replicas" usage:"replicas for streams and buckets (1 embedded, 3 on a cluster)"`
	// System is the external cluster's system-account URL, with the godwit-sys credentials: the
	// hub closes revoked agents' connections through it.
	System string `yaml:"system" flag:"nats-system" usage:"external NATS system-account URL (nats://godwit-sys:PASSWORD@host:port), to close revoked agents' connections"`
	// CA is the external cluster's TLS CA (PEM file): the hub trusts it and hands it to agents.
	CA string `yaml:"ca" flag:"nats-ca" usage:"CA certificate (PEM) of the external NATS cluster; trusted by the hub and handed to agents"`
	// Cluster clusters the embedded server with the other replicas' embedded servers.
	Cluster Cluster `yaml:"cluster"`
	// Adopt records this hub's NATS cluster as the database's after the old one was lost; the
	// leadership epochs count afresh (docs/ha.md).
	Adopt bool `yaml:"adopt" flag:"nats-adopt" usage:"record this hub's NATS as the database's NATS cluster, replacing one that was lost (docs/ha.md)"`
}

// Cluster joins the embedded NATS server to the embedded servers of the other hub replicas:
// one JetStream cluster with no other service (docs/ha.md).
type Cluster struct {
	// Listen is the address the embedded server takes routes from the other replicas' servers
	// on; empty runs a one-server NATS.
	Listen string `yaml:"listen" flag:"nats-cluster-listen" usage:"embedded NATS cluster (route) address; empty runs a one-server NATS"`
	// Routes are the other replicas' cluster addresses (nats://host:port).
	Routes []string `yaml:"routes" flag:"nats-route" usage:"another hub replica's embedded NATS cluster address, nats://host:port (repeatable)"`
	// Name is the JetStream cluster's name; every replica must give the same.
	Name string `yaml:"name" flag:"nats-cluster-name" usage:"name of the embedded NATS cluster (the same on every replica)"`
	// ServerName names this replica's server in the cluster; default: the replica's cluster
	// address.
	ServerName string `yaml:"serverName" flag:"nats-server-name" usage:"this replica's NATS server name in the cluster (default: derived from the cluster address)"`
}

// Lease is the timing of the hub's leadership lease; lease.Timing explains each field and
// docs/ha.md the rule between them.
type Lease struct {
	TTL           Duration `yaml:"ttl" flag:"lease-ttl" usage:"how long a dead leader's lease must look unchanged before another replica leads"`
	RenewInterval Duration `yaml:"renewInterval" flag:"lease-renew-interval" usage:"time between the leader's lease renewals (and the followers' reads)"`
	CallTimeout   Duration `yaml:"callTimeout" flag:"lease-call-timeout" usage:"deadline of every lease call to NATS; a later answer is a failure"`
	Margin        Duration `yaml:"margin" flag:"lease-margin" usage:"how long before the ttl the leader stops its work"`
	RecoverAfter  int      `yaml:"recoverAfter" flag:"lease-recover-after" usage:"lease calls in a row that must succeed before a failing replica may lead again"`
}

// Liveness configures heartbeats and how the hub judges them.
type Liveness struct {
	HeartbeatInterval Duration `yaml:"heartbeatInterval" flag:"heartbeat-interval" usage:"how often agents heartbeat"`
	// Grace is how long after its last heartbeat (in store time) an agent is still online.
	Grace Duration `yaml:"grace" flag:"liveness-grace" usage:"time after the last heartbeat (store time) before an agent is offline"`
	// Settle is how long after a hub start or a NATS outage the migration controller waits for
	// agents to reconnect and report before it starts new work or judges their deadlines, and
	// liveness before it judges offline an agent not heard from since.
	Settle Duration `yaml:"settle" flag:"settle" usage:"after a start or a NATS outage, how long agents get to reconnect and report before deadlines are judged"`
	// LastSeenEvery bounds how often an agent that keeps heartbeating has its last-seen time
	// written to the database (changes of status are written at once).
	LastSeenEvery Duration `yaml:"lastSeenEvery" flag:"last-seen-every" usage:"write an agent's last-seen time to the database at most this often (status changes are written at once)"`
}

// Retention says how long JetStream keeps what an outage must not lose.
type Retention struct {
	Events      Duration `yaml:"events" flag:"event-retention" usage:"how long undelivered events wait in the stream for the ingest"`
	DeadLetters Duration `yaml:"deadLetters" flag:"dead-letter-retention" usage:"how long dead letters are kept for inspection and replay"`
	Heartbeats  Duration `yaml:"heartbeats" flag:"heartbeat-retention" usage:"how long an agent's last heartbeat is kept"`
	// EventsMaxBytes and DeadLettersMaxBytes bound the two streams on disk; past them the oldest
	// messages go.
	EventsMaxBytes      int64 `yaml:"eventsMaxBytes" flag:"event-retention-bytes" usage:"largest size of the events stream (bytes); the oldest events go first"`
	DeadLettersMaxBytes int64 `yaml:"deadLettersMaxBytes" flag:"dead-letter-retention-bytes" usage:"largest size of the dead-letter stream (bytes); the oldest go first"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level" flag:"log-level" usage:"debug, info, warn or error"`
	Format string `yaml:"format" flag:"log-format" usage:"auto (text on a terminal, else JSON), json or text"`
}

// DefaultHubDataDir is ~/.godwit/hub (./godwit-hub if there is no home directory).
func DefaultHubDataDir() string { return defaultDir("hub") }

// DefaultAgentStateDir is ~/.godwit/agent.
func DefaultAgentStateDir() string { return defaultDir("agent") }

func defaultDir(kind string) string {
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".godwit", kind)
	}
	return "godwit-" + kind
}

// DefaultHub returns the hub defaults.
func DefaultHub() *Hub {
	return &Hub{
		DataDir: DefaultHubDataDir(),
		Listen:  fmt.Sprintf("127.0.0.1:%d", DefaultHTTPPort),
		NATS:    NATS{Listen: fmt.Sprintf("127.0.0.1:%d", DefaultNATSPort), Replicas: 1},
		Liveness: Liveness{HeartbeatInterval: Duration(5 * time.Second), Grace: Duration(20 * time.Second), Settle: Duration(45 * time.Second),
			LastSeenEvery: Duration(30 * time.Second)},
		Lease: Lease{TTL: Duration(10 * time.Second), RenewInterval: Duration(2 * time.Second), CallTimeout: Duration(2 * time.Second),
			Margin: Duration(2 * time.Second), RecoverAfter: 3},
		ShutdownTimeout: Duration(15 * time.Second),
		MaxOutage:       Duration(7 * 24 * time.Hour),
		Retention: Retention{Events: Duration(14 * 24 * time.Hour), DeadLetters: Duration(30 * 24 * time.Hour),
			Heartbeats: Duration(14 * 24 * time.Hour), EventsMaxBytes: 1 << 30, DeadLettersMaxBytes: 256 << 20},
		MaxBodyBytes: 1 << 20,
		TLS:          TLS{Mode: TLSAuto},
		Auth:         Auth{FailureBurst: 10, FailureInterval: Duration(6 * time.Second)},
		// The bursts are an agent's full outbox (100,000 events, 256 MiB): a node cut off for
		// days delivers its backlog whole; the rates bound what one agent sends day after day.
		AgentLimits: AgentLimits{ClockSkew: Duration(5 * time.Minute), EventRate: 50, EventBurst: 100000,
			ByteRate: 1 << 20, ByteBurst: 256 << 20, StreamEvents: 100000},
		Log: Log{Level: "info", Format: "auto"},
	}
}

// Validate checks every setting and returns the first problem, naming the setting.
func (c *Hub) Validate() error {
	if c.DataDir == "" {
		return fault.Invalid(Describe(c, "dataDir"), "must not be empty")
	}
	if err := checkHostPort(c.Listen); err != nil {
		return fault.Invalid(Describe(c, "listen"), "%v", err)
	}
	if c.Database != "" {
		u, err := url.Parse(c.Database)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return fault.Invalid(Describe(c, "database"), "must be empty (SQLite in the data dir) or a postgres:// URL")
		}
	}
	if c.NATS.URL == "" {
		if err := checkHostPort(c.NATS.Listen); err != nil {
			return fault.Invalid(Describe(c, "nats.listen"), "%v", err)
		}
		if err := c.validateCluster(); err != nil {
			return err
		}
		if c.NATS.System != "" || c.NATS.CA != "" {
			return fault.Invalid(Describe(c, "nats.system"), "nats.system and nats.ca are for an external cluster (nats.url)")
		}
	} else {
		for _, s := range strings.Split(c.NATS.URL, ",") {
			if err := checkNATSURL(strings.TrimSpace(s)); err != nil {
				return fault.Invalid(Describe(c, "nats.url"), "%v", err)
			}
		}
		if c.NATS.System == "" {
			return fault.Invalid(Describe(c, "nats.system"), "is required with an external cluster: the hub closes revoked agents' connections through the cluster's system account (see docs/security.md)")
		}
		if err := checkNATSURL(c.NATS.System); err != nil {
			return fault.Invalid(Describe(c, "nats.system"), "%v", err)
		}
		if c.NATS.CA != "" {
			if err := checkFile(c.NATS.CA); err != nil {
				return fault.Invalid(Describe(c, "nats.ca"), "%v", err)
			}
		}
	}
	for _, s := range c.NATS.Advertise {
		if err := checkNATSURL(s); err != nil {
			return fault.Invalid(Describe(c, "nats.advertise"), "%v", err)
		}
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		return fault.Invalid(Describe(c, "nats.replicas"), "must be between 1 and 5 (got %d)", c.NATS.Replicas)
	}
	if err := c.LeaseTiming().ValidateNamed(func(f string) string { return Describe(c, "lease."+f) }); err != nil {
		return err
	}
	hb, grace := c.Liveness.HeartbeatInterval.D(), c.Liveness.Grace.D()
	if hb < 100*time.Millisecond {
		return fault.Invalid(Describe(c, "liveness.heartbeatInterval"), "must be at least 100ms (got %s)", hb)
	}
	if grace < 2*hb {
		return fault.Invalid(Describe(c, "liveness.grace"), "must be at least twice liveness.heartbeatInterval (%s), got %s: one late heartbeat must not mark an agent offline", hb, grace)
	}
	if c.Liveness.LastSeenEvery.D() <= 0 {
		return fault.Invalid(Describe(c, "liveness.lastSeenEvery"), "must be positive, got %s", c.Liveness.LastSeenEvery)
	}
	if c.Liveness.Settle.D() < grace {
		return fault.Invalid(Describe(c, "liveness.settle"), "must be at least liveness.grace (%s), got %s: agents need that long to be heard from again", grace, c.Liveness.Settle)
	}
	if c.ShutdownTimeout.D() <= 0 {
		return fault.Invalid(Describe(c, "shutdownTimeout"), "must be positive (got %s)", c.ShutdownTimeout)
	}
	if c.MaxOutage.D() < time.Hour {
		return fault.Invalid(Describe(c, "maxOutage"), "must be at least 1h (got %s)", c.MaxOutage)
	}
	for _, r := range []struct {
		path string
		d    Duration
	}{{"retention.events", c.Retention.Events}, {"retention.deadLetters", c.Retention.DeadLetters}, {"retention.heartbeats", c.Retention.Heartbeats}} {
		if r.d.D() <= c.MaxOutage.D() {
			return fault.Invalid(Describe(c, r.path), "must be longer than maxOutage (%s), got %s: what an outage leaves behind would expire before the outage ends", c.MaxOutage, r.d)
		}
	}
	if c.MaxBodyBytes < 1024 {
		return fault.Invalid(Describe(c, "maxBodyBytes"), "must be at least 1024 (got %d)", c.MaxBodyBytes)
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	if err := c.validateAccess(); err != nil {
		return err
	}
	return c.Log.validate(c)
}

// Smallest stream sizes: a few hundred of the largest messages each stream takes.
const (
	minEventsMaxBytes      = 64 << 20
	minDeadLettersMaxBytes = 16 << 20
)

// validateAccess checks the settings of items that protect the hub from its callers and agents.
func (c *Hub) validateAccess() error {
	a, l := c.Auth, c.AgentLimits
	switch {
	case a.FailureBurst < 1 || a.FailureBurst > 1_000_000:
		return fault.Invalid(Describe(c, "auth.failureBurst"), "must be between 1 and 1000000 (got %d)", a.FailureBurst)
	case a.FailureInterval.D() < 10*time.Millisecond || a.FailureInterval.D() > time.Hour:
		return fault.Invalid(Describe(c, "auth.failureInterval"), "must be between 10ms and 1h (got %s)", a.FailureInterval)
	}
	if _, err := c.TrustedProxyPrefixes(); err != nil {
		return err
	}
	switch {
	case l.ClockSkew.D() < time.Second || l.ClockSkew.D() > 24*time.Hour:
		return fault.Invalid(Describe(c, "agentLimits.clockSkew"), "must be between 1s and 24h (got %s)", l.ClockSkew)
	case l.EventRate < 1:
		return fault.Invalid(Describe(c, "agentLimits.eventRate"), "must be at least 1 (got %d)", l.EventRate)
	case l.EventBurst < l.EventRate:
		return fault.Invalid(Describe(c, "agentLimits.eventBurst"), "must be at least agentLimits.eventRate (%d), got %d", l.EventRate, l.EventBurst)
	case l.ByteRate < wire.MaxEventBytes:
		return fault.Invalid(Describe(c, "agentLimits.byteRate"), "must be at least %d (the largest event) a second, got %d", wire.MaxEventBytes, l.ByteRate)
	case l.ByteBurst < l.ByteRate:
		return fault.Invalid(Describe(c, "agentLimits.byteBurst"), "must be at least agentLimits.byteRate (%d), got %d", l.ByteRate, l.ByteBurst)
	case l.StreamEvents < 1000:
		return fault.Invalid(Describe(c, "agentLimits.streamEvents"), "must be at least 1000 (got %d)", l.StreamEvents)
	case c.Retention.EventsMaxBytes < minEventsMaxBytes:
		return fault.Invalid(Describe(c, "retention.eventsMaxBytes"), "must be at least %d (64 MiB), got %d", minEventsMaxBytes, c.Retention.EventsMaxBytes)
	case c.Retention.DeadLettersMaxBytes < minDeadLettersMaxBytes:
		return fault.Invalid(Describe(c, "retention.deadLettersMaxBytes"), "must be at least %d (16 MiB), got %d", minDeadLettersMaxBytes, c.Retention.DeadLettersMaxBytes)
	}
	return nil
}

// TrustedProxyPrefixes parses auth.trustedProxies: CIDRs, or single addresses.
func (c *Hub) TrustedProxyPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.Auth.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fault.Invalid(Describe(c, "auth.trustedProxies"), "%q is neither an address nor a CIDR", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// TLS modes.
const (
	TLSAuto   = "auto"
	TLSAlways = "always"
)

func (c *Hub) validateTLS() error {
	t := c.TLS
	switch t.Mode {
	case TLSAuto, TLSAlways:
	default:
		return fault.Invalid(Describe(c, "tls.mode"), "must be auto or always (got %q)", t.Mode)
	}
	if (t.Cert == "") != (t.Key == "") {
		return fault.Invalid(Describe(c, "tls.cert"), "tls.cert and tls.key go together")
	}
	if t.CA != "" && t.Cert == "" {
		return fault.Invalid(Describe(c, "tls.ca"), "names the CA of tls.cert, which is not set")
	}
	for _, f := range []struct{ path, file string }{{"tls.cert", t.Cert}, {"tls.key", t.Key}, {"tls.ca", t.CA}} {
		if f.file == "" {
			continue
		}
		if err := checkFile(f.file); err != nil {
			return fault.Invalid(Describe(c, f.path), "%v", err)
		}
	}
	for _, san := range t.SANs {
		if san == "" || strings.ContainsAny(san, " /:@") && net.ParseIP(san) == nil {
			return fault.Invalid(Describe(c, "tls.sans"), "%q is not a DNS name or IP address", san)
		}
	}
	if c.InsecurePlaintext && (t.Mode == TLSAlways || t.Cert != "") {
		return fault.Invalid(Describe(c, "insecurePlaintext"), "contradicts tls.mode always or tls.cert")
	}
	return nil
}

// TLSEnabled reports whether the hub serves HTTP and the embedded NATS server over TLS: always
// with a certificate or tls.mode always; otherwise whenever one of its addresses is not loopback,
// unless insecurePlaintext.
func (c *Hub) TLSEnabled() bool {
	if c.TLS.Mode == TLSAlways || c.TLS.Cert != "" {
		return true
	}
	return !c.InsecurePlaintext && len(c.PublicAddresses()) > 0
}

// PublicAddresses lists the hub's listen and advertise addresses that are not loopback.
func (c *Hub) PublicAddresses() []string {
	var out []string
	addrs := []string{c.Listen}
	if c.NATS.URL == "" {
		addrs = append(addrs, c.NATS.Listen)
	}
	for _, a := range addrs {
		if host, _, err := net.SplitHostPort(a); err == nil && !IsLoopback(host) {
			out = append(out, a)
		}
	}
	for _, u := range c.NATS.Advertise {
		if p, err := url.Parse(u); err == nil && !IsLoopback(p.Hostname()) {
			out = append(out, p.Host)
		}
	}
	return out
}

// IsLoopback reports whether host (a name or an address, without port) is this machine only:
// localhost, 127.0.0.0/8 or ::1. An empty or unspecified host (0.0.0.0, ::) listens everywhere and
// is not loopback.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func checkFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	return nil
}

func (l Log) validate(cfg any) error {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		return fault.Invalid(Describe(cfg, "log.level"), "must be debug, info, warn or error (got %q)", l.Level)
	}
	switch l.Format {
	case "auto", "json", "text":
	default:
		return fault.Invalid(Describe(cfg, "log.format"), "must be auto, json or text (got %q)", l.Format)
	}
	return nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("%q: host must be an IP address or localhost", s)
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: bad port", s)
	}
	return nil
}

func checkNATSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" {
		return fmt.Errorf("%q is not a nats:// URL", credential.RedactURL(s))
	}
	return nil
}

// LeaseTiming is the lease's timing from the configuration.
func (c *Hub) LeaseTiming() lease.Timing {
	return lease.Timing{TTL: c.Lease.TTL.D(), RenewInterval: c.Lease.RenewInterval.D(), CallTimeout: c.Lease.CallTimeout.D(),
		Margin: c.Lease.Margin.D(), RecoverAfter: c.Lease.RecoverAfter}
}

// Clustered reports whether the embedded NATS server joins a cluster of replicas.
func (c *Hub) Clustered() bool { return c.NATS.URL == "" && c.NATS.Cluster.Listen != "" }

// validateCluster checks the embedded server's cluster settings and that the replica count fits
// the servers there are: R3 on a one-server NATS cannot be placed.
func (c *Hub) validateCluster() error {
	cl := c.NATS.Cluster
	if cl.Listen == "" {
		if len(cl.Routes) > 0 || cl.Name != "" {
			return fault.Invalid(Describe(c, "nats.cluster.listen"), "is required with nats.cluster.routes or nats.cluster.name: the embedded server needs an address the other replicas' servers route to")
		}
		if c.NATS.Replicas != 1 {
			return fault.Invalid(Describe(c, "nats.replicas"), "must be 1 with a one-server embedded NATS (got %d): %d replicas need a cluster of at least %d servers (nats.cluster.listen and nats.cluster.routes, or an external nats.url)",
				c.NATS.Replicas, c.NATS.Replicas, c.NATS.Replicas)
		}
		return nil
	}
	if err := checkHostPort(cl.Listen); err != nil {
		return fault.Invalid(Describe(c, "nats.cluster.listen"), "%v", err)
	}
	if len(cl.Routes) == 0 {
		return fault.Invalid(Describe(c, "nats.cluster.routes"), "must name the other replicas' cluster addresses (nats://host:port) when nats.cluster.listen is set")
	}
	for _, r := range cl.Routes {
		if err := checkNATSURL(r); err != nil {
			return fault.Invalid(Describe(c, "nats.cluster.routes"), "%v", err)
		}
	}
	if servers := len(cl.Routes) + 1; c.NATS.Replicas > servers {
		return fault.Invalid(Describe(c, "nats.replicas"), "is %d, but the embedded cluster has %d servers (this one and %d in nats.cluster.routes)",
			c.NATS.Replicas, servers, len(cl.Routes))
	}
	if c.Database == "" {
		return fault.Invalid(Describe(c, "database"), "must be a postgres:// URL with a clustered NATS: hub replicas share one PostgreSQL database (SQLite is a one-hub store)")
	}
	return nil
}
