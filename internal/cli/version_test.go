package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/buildinfo"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store/sqlite"
)

func runCLI(ctx context.Context, args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = Main(ctx, args, IO{In: strings.NewReader(""), Out: &out, Err: &errb}, nil)
	return out.String(), errb.String(), code
}

// A hub API with an admin token, for client commands.
func testHub(t *testing.T) (url, admin string) {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	admin = credential.New(credential.PrefixAdmin)
	if _, err := st.InitAdminToken(ctx, credential.Hash(admin), time.Now()); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(api.New(api.Config{Store: st, Logger: logging.Discard(), Registry: prometheus.NewRegistry()}))
	t.Cleanup(hs.Close)
	return hs.URL, admin
}

// A URL nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestVersion(t *testing.T) {
	// The stamped variables are what a release build sets; the hub here is in this process, so
	// both sides must report them.
	old := [2]string{buildinfo.Version, buildinfo.BuildDate}
	buildinfo.Version, buildinfo.BuildDate = "v9.8.7-test", "2026-03-02T08:00:00Z"
	t.Cleanup(func() { buildinfo.Version, buildinfo.BuildDate = old[0], old[1] })
	t.Setenv("HOME", t.TempDir()) // no client config file, no local hub data dir
	t.Setenv("GODWIT_HUB", "")
	t.Setenv("GODWIT_TOKEN", "")
	t.Setenv("GODWIT_DATA_DIR", t.TempDir())
	ctx := t.Context()
	hubURL, admin := testHub(t)

	t.Run("both sides", func(t *testing.T) {
		out, errs, code := runCLI(ctx, "version", "--hub-url", hubURL, "--token", admin)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		client, hub, ok := strings.Cut(out, "Hub ("+hubURL+"):")
		if !ok || !strings.HasPrefix(client, "Client:\n") {
			t.Fatalf("output has no client and hub sections:\n%s", out)
		}
		for _, section := range []string{client, hub} {
			for _, want := range []string{"Version:       v9.8.7-test", "Built:         2026-03-02T08:00:00Z", "Go version:", "Platform:"} {
				if !strings.Contains(section, want) {
					t.Errorf("section lacks %q:\n%s", want, section)
				}
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		out, errs, code := runCLI(ctx, "version", "-o", "json", "--hub-url", hubURL, "--token", admin)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		var v versionOutput
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if v.Hub == nil || *v.Hub != buildinfo.Get() || v.Client != buildinfo.Get() || v.HubURL != hubURL || v.HubError != "" {
			t.Fatalf("json = %+v", v)
		}
	})

	t.Run("hub unreachable: the client part, then exit 1 naming the hub", func(t *testing.T) {
		url := deadURL(t)
		out, errs, code := runCLI(ctx, "version", "--hub-url", url, "--token", admin)
		if code != ExitError || !strings.Contains(out, "Version:       v9.8.7-test") || strings.Contains(out, "Hub") ||
			!strings.Contains(errs, url) || !strings.Contains(errs, "unreachable") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
		out, _, code = runCLI(ctx, "version", "-o", "json", "--hub-url", url, "--token", admin)
		var v versionOutput
		if err := json.Unmarshal([]byte(out), &v); err != nil || code != ExitError || v.Hub != nil || !strings.Contains(v.HubError, "unreachable") {
			t.Fatalf("json when unreachable: exit %d, %+v, %v", code, v, err)
		}
	})

	t.Run("a hub but no token: exit 1, not a usage error", func(t *testing.T) {
		_, errs, code := runCLI(ctx, "version", "--hub-url", hubURL)
		if code != ExitError || !strings.Contains(errs, "no token") {
			t.Fatalf("exit %d: %s", code, errs)
		}
	})

	t.Run("wrong token: exit 1 saying so", func(t *testing.T) {
		_, errs, code := runCLI(ctx, "version", "--hub-url", hubURL, "--token", "gwa_wrong")
		if code != ExitError || !strings.Contains(errs, "invalid token") {
			t.Fatalf("exit %d: %s", code, errs)
		}
	})

	t.Run("no hub configured: the client part, exit 0 with a note", func(t *testing.T) {
		out, errs, code := runCLI(ctx, "version")
		if code != 0 || !strings.HasPrefix(out, "Client:") || strings.Contains(out, "Hub") || !strings.Contains(errs, "no hub configured") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
	})

	t.Run("--client never contacts a hub", func(t *testing.T) {
		out, errs, code := runCLI(ctx, "version", "--client", "--hub-url", deadURL(t), "--token", admin)
		if code != 0 || errs != "" || !strings.HasPrefix(out, "Client:") || strings.Contains(out, "Hub") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
	})

	t.Run("bad output format is a usage error", func(t *testing.T) {
		if _, errs, code := runCLI(ctx, "version", "--client", "-o", "xml"); code != ExitUsage || !strings.Contains(errs, "xml") {
			t.Fatalf("exit %d: %s", code, errs)
		}
	})
}
