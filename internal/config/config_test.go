package config

import (
	"errors"
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
		{"shutdown", func(c *Hub) { c.ShutdownTimeout = 0 }, "shutdownTimeout"},
		{"body", func(c *Hub) { c.MaxBodyBytes = 10 }, "maxBodyBytes"},
		{"max outage", func(c *Hub) { c.MaxOutage = Duration(time.Minute) }, "maxOutage"},
		{"event retention", func(c *Hub) { c.Retention.Events = c.MaxOutage }, "retention.events (--event-retention, GODWIT_EVENT_RETENTION)"},
		{"outage outlives dead letters", func(c *Hub) { c.MaxOutage = Duration(60 * 24 * time.Hour) }, "retention.events"},
		{"heartbeat retention", func(c *Hub) { c.Retention.Heartbeats = Duration(time.Hour) }, "retention.heartbeats"},
		{"log level", func(c *Hub) { c.Log.Level = "loud" }, "log.level"},
		{"log format", func(c *Hub) { c.Log.Format = "xml" }, "log.format"},
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
	c.Labels = []string{"site=a", "role=db=primary"}
	m, err := c.LabelMap()
	if err != nil || m["site"] != "a" || m["role"] != "db=primary" {
		t.Fatalf("LabelMap() = %v, %v", m, err)
	}
	c.Labels = []string{"no-equals"}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "labels") {
		t.Fatalf("bad label accepted: %v", err)
	}
	c.Labels = nil
	if err := c.NeedEnrollment(); err == nil || !strings.Contains(err.Error(), "hub") {
		t.Fatalf("enrollment without hub accepted: %v", err)
	}
}
