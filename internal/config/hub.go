package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"godwit.dev/godwit/internal/fault"
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
	// ShutdownTimeout bounds the drain on SIGTERM.
	ShutdownTimeout Duration `yaml:"shutdownTimeout" flag:"shutdown-timeout" usage:"drain budget on SIGTERM/SIGINT"`
	// MaxOutage is the longest outage (of the hub, NATS, the database or an agent) the hub must
	// ride out without losing anything; every retention must outlive it.
	MaxOutage Duration  `yaml:"maxOutage" flag:"max-outage" usage:"longest outage to ride out without losing anything; retentions must outlive it"`
	Retention Retention `yaml:"retention"`
	// MaxBodyBytes bounds request bodies; larger ones get 413.
	MaxBodyBytes int64 `yaml:"maxBodyBytes" flag:"max-body-bytes" usage:"largest accepted request body (bytes)"`
	Log          Log   `yaml:"log"`
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
}

// Liveness configures heartbeats and how the hub judges them.
type Liveness struct {
	HeartbeatInterval Duration `yaml:"heartbeatInterval" flag:"heartbeat-interval" usage:"how often agents heartbeat"`
	// Grace is how long after its last heartbeat (in store time) an agent is still online.
	Grace Duration `yaml:"grace" flag:"liveness-grace" usage:"time after the last heartbeat (store time) before an agent is offline"`
	// Settle is how long after a hub start or a NATS outage the migration controller waits for
	// agents to reconnect and report before it starts new work or judges their deadlines.
	Settle Duration `yaml:"settle" flag:"settle" usage:"after a start or a NATS outage, how long agents get to reconnect and report before deadlines are judged"`
}

// Retention says how long JetStream keeps what an outage must not lose.
type Retention struct {
	Events      Duration `yaml:"events" flag:"event-retention" usage:"how long undelivered events wait in the stream for the ingest"`
	DeadLetters Duration `yaml:"deadLetters" flag:"dead-letter-retention" usage:"how long dead letters are kept for inspection and replay"`
	Heartbeats  Duration `yaml:"heartbeats" flag:"heartbeat-retention" usage:"how long an agent's last heartbeat is kept"`
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
		DataDir:         DefaultHubDataDir(),
		Listen:          fmt.Sprintf("127.0.0.1:%d", DefaultHTTPPort),
		NATS:            NATS{Listen: fmt.Sprintf("127.0.0.1:%d", DefaultNATSPort), Replicas: 1},
		Liveness:        Liveness{HeartbeatInterval: Duration(5 * time.Second), Grace: Duration(20 * time.Second), Settle: Duration(45 * time.Second)},
		ShutdownTimeout: Duration(15 * time.Second),
		MaxOutage:       Duration(7 * 24 * time.Hour),
		Retention: Retention{Events: Duration(14 * 24 * time.Hour), DeadLetters: Duration(30 * 24 * time.Hour),
			Heartbeats: Duration(14 * 24 * time.Hour)},
		MaxBodyBytes: 1 << 20,
		Log:          Log{Level: "info", Format: "auto"},
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
		if c.NATS.Replicas != 1 {
			return fault.Invalid(Describe(c, "nats.replicas"), "must be 1 with the embedded NATS server (got %d)", c.NATS.Replicas)
		}
	} else {
		for _, s := range strings.Split(c.NATS.URL, ",") {
			if err := checkNATSURL(strings.TrimSpace(s)); err != nil {
				return fault.Invalid(Describe(c, "nats.url"), "%v", err)
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
	hb, grace := c.Liveness.HeartbeatInterval.D(), c.Liveness.Grace.D()
	if hb < 100*time.Millisecond {
		return fault.Invalid(Describe(c, "liveness.heartbeatInterval"), "must be at least 100ms (got %s)", hb)
	}
	if grace < 2*hb {
		return fault.Invalid(Describe(c, "liveness.grace"), "must be at least twice liveness.heartbeatInterval (%s), got %s: one late heartbeat must not mark an agent offline", hb, grace)
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
	return c.Log.validate(c)
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
		return fmt.Errorf("%q is not a nats:// URL", s)
	}
	return nil
}
