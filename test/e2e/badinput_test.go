package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Malformed flags and configuration exit 2 with a message naming the setting.
func TestHubRejectsBadConfiguration(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "hub.yaml")
	if err := os.WriteFile(cfgFile, []byte("liveness:\n  grace: soon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unknownKey := filepath.Join(dir, "unknown.yaml")
	if err := os.WriteFile(unknownKey, []byte("listn: 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"grace too short", nil, []string{"--heartbeat-interval", "1s", "--liveness-grace", "1s"}, "liveness.grace"},
		{"bad listen", nil, []string{"--listen", "nowhere"}, "listen"},
		{"bad duration flag", nil, []string{"--shutdown-timeout", "forever"}, "--shutdown-timeout"},
		{"bad env", []string{"GODWIT_LIVENESS_GRACE=abc"}, nil, "GODWIT_LIVENESS_GRACE"},
		{"bad database", nil, []string{"--database", "mysql://x"}, "database"},
		{"unknown flag", nil, []string{"--no-such-flag"}, "no-such-flag"},
		{"bad yaml value", nil, []string{"--config", cfgFile}, "soon"},
		{"unknown yaml key", nil, []string{"--config", unknownKey}, "listn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"hub", "--data-dir", filepath.Join(t.TempDir(), "d")}, tc.args...)
			p := start(t, "hub", tc.env, args...)
			if code := p.wait(30 * time.Second); code != 2 {
				t.Fatalf("exit code %d, want 2; output:\n%s", code, p.output())
			}
			if !strings.Contains(p.output(), tc.want) {
				t.Fatalf("error does not name %q:\n%s", tc.want, p.output())
			}
		})
	}
}

// A data dir that holds something else is refused and left exactly as it was.
func TestHubRefusesForeignDataDir(t *testing.T) {
	t.Parallel()
	cases := map[string]map[string]string{
		"foreign files":  {"notes.txt": "precious"},
		"corrupt marker": {"godwit.json": "{not json"},
		"agent dir":      {"godwit.json": `{"kind":"agent","format":1}`},
		"not sqlite":     {"godwit.json": `{"kind":"hub","format":1}`, "hub.db": "this is not a database, do not overwrite"},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for f, body := range files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			p := start(t, "hub", nil, "hub", "--data-dir", dir, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0")
			if code := p.wait(30 * time.Second); code == 0 {
				t.Fatalf("hub accepted the directory; output:\n%s", p.output())
			}
			if !strings.Contains(p.output(), dir) {
				t.Fatalf("error does not name the directory:\n%s", p.output())
			}
			for f, body := range files {
				got, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil || !bytes.Equal(got, []byte(body)) {
					t.Fatalf("%s changed: %q, %v", f, got, err)
				}
			}
		})
	}
}

// Enrollment with a bad, exhausted or missing token is refused and creates nothing.
func TestAgentEnrollmentRefused(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	h := startHub(t, filepath.Join(root, "hub"))
	bad := h.startAgent(t, filepath.Join(root, "bad"), "gwe_notarealtoken")
	if code := bad.wait(30 * time.Second); code == 0 || !strings.Contains(bad.output(), "401") {
		t.Fatalf("bad token: exit %d, output:\n%s", code, bad.output())
	}
	// Not even the shape of a token: refused before anything is sent, naming the setting.
	malformed := h.startAgent(t, filepath.Join(root, "malformed"), "gwe_not-a-real-token")
	if code := malformed.wait(30 * time.Second); code != 2 || !strings.Contains(malformed.output(), "enrollToken") {
		t.Fatalf("malformed token: exit %d, output:\n%s", code, malformed.output())
	}
	token := strings.TrimSpace(h.cli(t, "token", "create", "--uses", "1"))
	h.startAgent(t, filepath.Join(root, "first"), token)
	eventually(t, 30*time.Second, "first agent enrolled", func() error {
		_, err := os.Stat(filepath.Join(root, "first", "identity.json"))
		return err
	})
	second := h.startAgent(t, filepath.Join(root, "second"), token)
	if code := second.wait(30 * time.Second); code == 0 || !strings.Contains(second.output(), "403") {
		t.Fatalf("reused token: exit %d, output:\n%s", code, second.output())
	}
	noToken := start(t, "agent", nil, "agent", "--hub", h.api, "--state-dir", filepath.Join(root, "none"))
	if code := noToken.wait(30 * time.Second); code != 2 || !strings.Contains(noToken.output(), "enrollToken") {
		t.Fatalf("missing token: exit %d, output:\n%s", code, noToken.output())
	}
	eventually(t, 30*time.Second, "exactly one agent enrolled", func() error {
		if n := len(h.agents(t)); n != 1 {
			return errorf("%d agents", n)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(root, "second", "identity.json")); !os.IsNotExist(err) {
		t.Fatalf("refused agent wrote an identity: %v", err)
	}
}
