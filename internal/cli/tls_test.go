package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/hub"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/wire"
)

// The CLI talks to a TLS hub: on the hub's machine it finds the CA through the data dir's
// endpoint file; elsewhere --hub-ca names it; without either, the hub's own CA is not trusted.
// Not parallel: it sets the environment.
func TestClientAgainstTLSHub(t *testing.T) {
	dir := t.TempDir()
	cfg := config.DefaultHub()
	cfg.DataDir = filepath.Join(dir, "hub")
	cfg.Listen, cfg.NATS.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLS.Mode = config.TLSAlways
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := hub.New(cfg, logging.Discard(), &bytes.Buffer{})
	if err := h.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = h.Stop(ctx)
	})
	ep := h.Endpoint()
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, wire.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", dir) // no ~/.godwit/config.yaml
	t.Setenv("GODWIT_HUB", "")
	t.Setenv("GODWIT_TOKEN", "")
	t.Setenv("GODWIT_HUB_CA", "")
	run := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := Main(t.Context(), args, IO{In: strings.NewReader(""), Out: &out, Err: &errb}, nil)
		return out.String() + errb.String(), code
	}

	t.Setenv("GODWIT_DATA_DIR", cfg.DataDir)
	if out, code := run("get", "agents"); code != 0 {
		t.Fatalf("godwit get agents on the hub's machine: exit %d: %s", code, out)
	}

	t.Setenv("GODWIT_DATA_DIR", filepath.Join(dir, "elsewhere"))
	remote := []string{"get", "agents", "--hub-url", ep.API, "--token", strings.TrimSpace(string(tok))}
	if out, code := run(remote...); code == 0 || !strings.Contains(out, "certificate") {
		t.Fatalf("without the hub's CA: exit %d: %s; want a certificate error", code, out)
	}
	if out, code := run(append(remote, "--hub-ca", ep.CA)...); code != 0 {
		t.Fatalf("with --hub-ca: exit %d: %s", code, out)
	}
	t.Setenv("GODWIT_HUB_CA", ep.CA)
	if out, code := run(remote...); code != 0 {
		t.Fatalf("with GODWIT_HUB_CA: exit %d: %s", code, out)
	}
	t.Setenv("GODWIT_HUB_CA", "")
	if err := os.MkdirAll(filepath.Join(dir, ".godwit"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := "hub: " + ep.API + "\ntoken: " + strings.TrimSpace(string(tok)) + "\nca: " + ep.CA + "\n"
	if err := os.WriteFile(filepath.Join(dir, ".godwit", "config.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := run("get", "agents"); code != 0 {
		t.Fatalf("with ca: in ~/.godwit/config.yaml: exit %d: %s", code, out)
	}
}
