package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"godwit.dev/godwit/internal/fault"
)

// Later sources win: defaults < file < env < flags.
func TestLoadPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:1001\nliveness:\n  grace: 40s\n  heartbeatInterval: 4s\n  settle: 90s\nnats:\n  advertise: [nats://a:1]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GODWIT_LIVENESS_GRACE", "50s")
	t.Setenv("GODWIT_HEARTBEAT_INTERVAL", "6s")
	cfg := DefaultHub()
	fs := pflag.NewFlagSet("hub", pflag.ContinueOnError)
	RegisterFlags(fs, cfg)
	if err := fs.Parse([]string{"--heartbeat-interval", "7s", "--nats-advertise", "nats://b:2", "--nats-advertise", "nats://c:3"}); err != nil {
		t.Fatal(err)
	}
	if err := Load(cfg, file, fs); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:1001" {
		t.Errorf("listen = %q, want the file's", cfg.Listen)
	}
	if cfg.Liveness.Grace.D() != 50*time.Second {
		t.Errorf("grace = %s, want env's 50s", cfg.Liveness.Grace)
	}
	if cfg.Liveness.HeartbeatInterval.D() != 7*time.Second {
		t.Errorf("heartbeat = %s, want flag's 7s", cfg.Liveness.HeartbeatInterval)
	}
	if strings.Join(cfg.NATS.Advertise, " ") != "nats://b:2 nats://c:3" {
		t.Errorf("advertise = %v, want the flags'", cfg.NATS.Advertise)
	}
	if cfg.ShutdownTimeout != DefaultHub().ShutdownTimeout {
		t.Errorf("untouched setting changed: %s", cfg.ShutdownTimeout)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesTheSetting(t *testing.T) {
	cases := []struct {
		name  string
		tweak func(*Hub)
		want  string
	}{
		{"empty data dir", func(c *Hub) { c.DataDir = "" }, "dataDir"},
		{"listen", func(c *Hub) { c.Listen = "x" }, "listen (--listen, GODWIT_LISTEN)"},
		{"database", func(c *Hub) { c.Database = "sqlite://x" }, "database"},
		{"nats url", func(c *Hub) { c.NATS.URL = "http://x" }, "nats.url"},
		{"replicas embedded", func(c *Hub) { c.NATS.Replicas = 3 }, "nats.replicas"},
		{"heartbeat", func(c *Hub) { c.Liveness.HeartbeatInterval = Duration(time.Millisecond) }, "liveness.heartbeatInterval"},
		{"grace", func(c *Hub) { c.Liveness.Grace = c.Liveness.HeartbeatInterval }, "liveness.grace"},
		{"last seen", func(c *Hub) { c.Liveness.LastSeenEvery = 0 }, "liveness.lastSeenEvery (--last-seen-every, GODWIT_LAST_SEEN_EVERY)"},
		{"shutdown", func(c *Hub) { c.ShutdownTimeout = 0 }, "shutdownTimeout"},
		{"body", func(c *Hub) { c.MaxBodyBytes = 10 }, "maxBodyBytes"},
		{"max outage", func(c *Hub) { c.MaxOutage = Duration(time.Minute) }, "maxOutage"},
		{"event retention", func(c *Hub) { c.Retention.Events = c.MaxOutage }, "retention.events (--event-retention, GODWIT_EVENT_RETENTION)"},
		{"outage outlives dead letters", func(c *Hub) { c.MaxOutage = Duration(60 * 24 * time.Hour) }, "retention.events"},
		{"heartbeat retention", func(c *Hub) { c.Retention.Heartbeats = Duration(time.Hour) }, "retention.heartbeats"},
		{"log level", func(c *Hub) { c.Log.Level = "loud" }, "log.level"},
		{"log format", func(c *Hub) { c.Log.Format = "xml" }, "log.format"},
		{"external without system", func(c *Hub) { c.NATS.URL = "nats://n1:4222" }, "nats.system (--nats-system, GODWIT_NATS_SYSTEM): is required"},
		{"system without external", func(c *Hub) { c.NATS.System = "nats://n1:4222" }, "nats.system"},
		{"bad system url", func(c *Hub) { c.NATS.URL, c.NATS.System = "nats://n1:4222", "http://x" }, "nats.system"},
		{"missing nats ca", func(c *Hub) { c.NATS.URL, c.NATS.System, c.NATS.CA = "nats://n1", "nats://n1", "/nonexistent/ca.pem" }, "nats.ca"},
		{"tls mode", func(c *Hub) { c.TLS.Mode = "sometimes" }, "tls.mode (--tls-mode, GODWIT_TLS_MODE)"},
		{"cert without key", func(c *Hub) { c.TLS.Cert = "/etc/hosts" }, "tls.cert"},
		{"ca without cert", func(c *Hub) { c.TLS.CA = "/etc/hosts" }, "tls.ca"},
		{"missing cert file", func(c *Hub) { c.TLS.Cert, c.TLS.Key = "/nonexistent/c.pem", "/etc/hosts" }, "tls.cert"},
		{"bad san", func(c *Hub) { c.TLS.SANs = []string{"a b"} }, "tls.sans"},
		{"plaintext and always", func(c *Hub) { c.TLS.Mode, c.InsecurePlaintext = TLSAlways, true }, "insecurePlaintext (--insecure-plaintext, GODWIT_INSECURE_PLAINTEXT)"},
		{"failure burst", func(c *Hub) { c.Auth.FailureBurst = 0 }, "auth.failureBurst (--auth-failure-burst, GODWIT_AUTH_FAILURE_BURST)"},
		{"failure interval", func(c *Hub) { c.Auth.FailureInterval = Duration(2 * time.Hour) }, "auth.failureInterval"},
		{"trusted proxy", func(c *Hub) { c.Auth.TrustedProxies = []string{"10.0.0.0/8", "proxy.example"} }, "auth.trustedProxies (--trusted-proxy"},
		{"clock skew", func(c *Hub) { c.AgentLimits.ClockSkew = 0 }, "agentLimits.clockSkew (--agent-clock-skew, GODWIT_AGENT_CLOCK_SKEW)"},
		{"clock skew huge", func(c *Hub) { c.AgentLimits.ClockSkew = Duration(48 * time.Hour) }, "agentLimits.clockSkew"},
		{"event rate", func(c *Hub) { c.AgentLimits.EventRate = 0 }, "agentLimits.eventRate"},
		{"event burst", func(c *Hub) { c.AgentLimits.EventBurst = c.AgentLimits.EventRate - 1 }, "agentLimits.eventBurst"},
		{"byte rate", func(c *Hub) { c.AgentLimits.ByteRate = 1000 }, "agentLimits.byteRate"},
		{"byte burst", func(c *Hub) { c.AgentLimits.ByteBurst = c.AgentLimits.ByteRate - 1 }, "agentLimits.byteBurst"},
		{"stream events", func(c *Hub) { c.AgentLimits.StreamEvents = 10 }, "agentLimits.streamEvents (--agent-stream-events"},
		{"events max bytes", func(c *Hub) { c.Retention.EventsMaxBytes = 1 << 20 }, "retention.eventsMaxBytes (--event-retention-bytes"},
		{"dead letters max bytes", func(c *Hub) { c.Retention.DeadLettersMaxBytes = -1 }, "retention.deadLettersMaxBytes"},
		{"lease ttl below the rule", func(c *Hub) { c.Lease.TTL = Duration(7 * time.Second) },
			"lease.ttl (--lease-ttl, GODWIT_LEASE_TTL): must be at least 2×lease.renewInterval (--lease-renew-interval"},
		{"lease call timeout", func(c *Hub) { c.Lease.CallTimeout = Duration(3 * time.Second) }, "lease.callTimeout (--lease-call-timeout"},
		{"lease margin", func(c *Hub) { c.Lease.Margin = Duration(time.Millisecond) }, "lease.margin (--lease-margin"},
		{"lease recover", func(c *Hub) { c.Lease.RecoverAfter = 0 }, "lease.recoverAfter (--lease-recover-after"},
		{"r3 on one server", func(c *Hub) { c.NATS.Replicas = 3 }, "nats.replicas (--nats-replicas, GODWIT_NATS_REPLICAS): must be 1 with a one-server embedded NATS (got 3): 3 replicas need a cluster of at least 3 servers"},
		{"routes without listen", func(c *Hub) { c.NATS.Cluster.Routes = []string{"nats://127.0.0.1:7760"} }, "nats.cluster.listen (--nats-cluster-listen"},
		{"cluster without routes", func(c *Hub) { c.NATS.Cluster.Listen = "127.0.0.1:7760" }, "nats.cluster.routes"},
		{"bad route", func(c *Hub) {
			c.NATS.Cluster.Listen, c.NATS.Cluster.Routes = "127.0.0.1:7760", []string{"http://x"}
		}, "nats.cluster.routes"},
		{"r3 on two servers", func(c *Hub) {
			c.NATS.Cluster.Listen, c.NATS.Cluster.Routes, c.NATS.Replicas = "127.0.0.1:7760", []string{"nats://127.0.0.1:7761"}, 3
			c.Database = "postgres://localhost/x"
		}, "nats.replicas (--nats-replicas, GODWIT_NATS_REPLICAS): is 3, but the embedded cluster has 2 servers"},
		{"cluster on sqlite", func(c *Hub) {
			c.NATS.Cluster.Listen, c.NATS.Cluster.Routes = "127.0.0.1:7760", []string{"nats://127.0.0.1:7761"}
		}, "database (--database, GODWIT_DATABASE): must be a postgres:// URL with a clustered NATS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultHub()
			tc.tweak(c)
			err := c.Validate()
			if !errors.Is(err, fault.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an invalid error naming %q", err, tc.want)
			}
		})
	}
	if err := DefaultHub().Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	// Every field the lease's rule involves is named, not only the first.
	c := DefaultHub()
	c.Lease.TTL, c.Lease.Margin = Duration(5*time.Second), Duration(time.Millisecond)
	err := c.Validate()
	for _, f := range []string{"lease.ttl (--lease-ttl", "lease.margin (--lease-margin"} {
		if !strings.Contains(fmt.Sprint(err), f) {
			t.Errorf("Validate() = %v, want it to name %s", err, f)
		}
	}
	// Three replicas on a three-server embedded cluster with PostgreSQL validate.
	c = DefaultHub()
	c.NATS.Cluster.Listen, c.NATS.Cluster.Routes, c.NATS.Replicas = "127.0.0.1:7760", []string{"nats://127.0.0.1:7761", "nats://127.0.0.1:7762"}, 3
	c.Database = "postgres://localhost/x"
	if err := c.Validate(); err != nil {
		t.Fatalf("a three-server embedded cluster: %v", err)
	}
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := map[string]struct {
		path string
		want string
	}{
		"unknown key":  {write("a.yaml", "listn: x\n"), "listn"},
		"bad duration": {write("b.yaml", "shutdownTimeout: soon\n"), "soon"},
		"not yaml":     {write("c.yaml", "listen: [\n"), "c.yaml"},
		"missing file": {filepath.Join(dir, "nope.yaml"), "nope.yaml"},
	}
	for name, tc := range cases {
		if err := Load(DefaultHub(), tc.path, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Load() = %v, want error mentioning %q", name, err, tc.want)
		}
	}
	if err := Load(DefaultHub(), write("empty.yaml", ""), nil); err != nil {
		t.Errorf("empty file: %v", err)
	}
}

func TestAgentLabels(t *testing.T) {
	c := DefaultAgent()
	c.Labels = []string{"site=a", "role=db-primary", "empty="}
	m, err := c.LabelMap()
	if err != nil || m["site"] != "a" || m["role"] != "db-primary" || m["empty"] != "" || len(m) != 3 {
		t.Fatalf("LabelMap() = %v, %v", m, err)
	}
	c.Labels = []string{"no-equals"}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "labels") {
		t.Fatalf("label without '=' accepted: %v", err)
	}
	c.Labels = nil
	if err := c.NeedEnrollment(); err == nil || !strings.Contains(err.Error(), "hub") {
		t.Fatalf("enrollment without hub accepted: %v", err)
	}
	// The hub's rules (wire.CheckAgentName, wire.CheckLabels) are checked before an enrollment,
	// and only then: an agent enrolled under an older rule keeps starting.
	c.Hub, c.EnrollToken = "http://127.0.0.1:7750", "gwe_x"
	for _, bad := range []string{"role=db=primary", "example.com/role=web", "site=eu/ams", "a..b=c", "site=ams\u202e"} {
		c.Labels = []string{bad}
		if err := c.NeedEnrollment(); err == nil || !strings.Contains(err.Error(), "labels") {
			t.Fatalf("label %q accepted for an enrollment: %v", bad, err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("label %q refused for an agent already enrolled: %v", bad, err)
		}
	}
	c.Labels = nil
	for _, bad := range []string{"web/1", "..", "web\n1", "web\u202e1", "web 1"} {
		c.Name = bad
		if err := c.NeedEnrollment(); err == nil || !strings.Contains(err.Error(), "name") {
			t.Fatalf("name %q accepted for an enrollment: %v", bad, err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("name %q refused for an agent already enrolled: %v", bad, err)
		}
	}
	c.Name = "web-1.example.net"
	if err := c.NeedEnrollment(); err != nil {
		t.Fatalf("name %q refused: %v", c.Name, err)
	}
}

// A password in a NATS URL never appears in a validation error.
func TestValidateRedactsURLs(t *testing.T) {
	c := DefaultHub()
	c.NATS.URL, c.NATS.System = "nats://godwit-hub:s3cret@n1:4222", "nats//godwit-sys:0ther@n1:4222"
	err := c.Validate()
	if err == nil || strings.Contains(err.Error(), "0ther") {
		t.Fatalf("Validate() = %v, want an error without the password", err)
	}
	c.NATS.URL = "http://godwit-hub:s3cret@n1:4222"
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "xxxxx") {
		t.Fatalf("Validate() = %v, want a redacted URL", err)
	}
}

func TestTLSEnabled(t *testing.T) {
	cases := []struct {
		name  string
		tweak func(*Hub)
		want  bool
	}{
		{"defaults: loopback only", func(*Hub) {}, false},
		{"localhost", func(c *Hub) { c.Listen = "localhost:7750" }, false},
		{"ipv6 loopback", func(c *Hub) { c.Listen = "[::1]:7750" }, false},
		{"all addresses", func(c *Hub) { c.Listen = "0.0.0.0:7750" }, true},
		{"empty host", func(c *Hub) { c.NATS.Listen = ":7751" }, true},
		{"public nats", func(c *Hub) { c.NATS.Listen = "10.0.0.5:7751" }, true},
		{"public advertise", func(c *Hub) { c.NATS.Advertise = []string{"nats://hub.example:7751"} }, true},
		{"external nats listen ignored", func(c *Hub) { c.NATS.URL, c.NATS.Listen = "nats://n1:4222", "0.0.0.0:7751" }, false},
		{"plaintext asked for", func(c *Hub) { c.Listen, c.InsecurePlaintext = "0.0.0.0:7750", true }, false},
		{"always", func(c *Hub) { c.TLS.Mode = TLSAlways }, true},
		{"own certificate", func(c *Hub) { c.TLS.Cert = "c.pem" }, true},
	}
	for _, tc := range cases {
		c := DefaultHub()
		tc.tweak(c)
		if got := c.TLSEnabled(); got != tc.want {
			t.Errorf("%s: TLSEnabled() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAgentPlaintext(t *testing.T) {
	c := DefaultAgent()
	c.Hub = "http://10.0.0.5:7750"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "hub (--hub, GODWIT_HUB)") || !strings.Contains(err.Error(), "--insecure-plaintext") {
		t.Fatalf("plaintext hub beyond loopback: %v", err)
	}
	c.InsecurePlaintext = true
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Hub = "https://u:p@10.0.0.5:7750"
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "u:p") {
		t.Fatalf("hub URL with credentials: %v", err)
	}
	for _, ok := range []string{"http://127.0.0.1:7750", "http://localhost:7750", "https://hub.example:7750"} {
		c := DefaultAgent()
		c.Hub = ok
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// A boolean setting is a plain flag.
func TestBoolFlag(t *testing.T) {
	cfg := DefaultHub()
	fs := pflag.NewFlagSet("hub", pflag.ContinueOnError)
	RegisterFlags(fs, cfg)
	if err := fs.Parse([]string{"--insecure-plaintext"}); err != nil {
		t.Fatal(err)
	}
	if err := Load(cfg, "", fs); err != nil || !cfg.InsecurePlaintext {
		t.Fatalf("--insecure-plaintext: %v, %v", err, cfg.InsecurePlaintext)
	}
	t.Setenv("GODWIT_INSECURE_PLAINTEXT", "yes please")
	if err := Load(DefaultHub(), "", nil); err == nil || !strings.Contains(err.Error(), "GODWIT_INSECURE_PLAINTEXT") {
		t.Fatalf("bad boolean in the environment: %v", err)
	}
}

func TestTrustedProxyPrefixes(t *testing.T) {
	c := DefaultHub()
	c.Auth.TrustedProxies = []string{"10.1.2.3/8", "192.0.2.7", "::ffff:198.51.100.1", "2001:db8::/48"}
	got, err := c.TrustedProxyPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	if want := "10.0.0.0/8 192.0.2.7/32 198.51.100.1/32 2001:db8::/48"; strings.Join(s, " ") != want {
		t.Fatalf("TrustedProxyPrefixes = %v, want %s", s, want)
	}
}
