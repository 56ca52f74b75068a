package hub

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/pki"
)

// publicIP returns an IPv4 address of this machine that is not loopback. The tests that need one
// say so when there is none, rather than pass without running.
func publicIP(t *testing.T) string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String()
			}
		}
	}
	t.Skip("SKIPPED: this machine has no IPv4 address other than loopback to listen on")
	return ""
}

// natsInfo reads the INFO line a NATS server sends on connect.
func natsInfo(t *testing.T, url string) map[string]any {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "nats://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "INFO ")), &info); err != nil {
		t.Fatalf("INFO %q: %v", line, err)
	}
	return info
}

func caClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pool, err := pki.Pool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = pki.ClientConfig(pool)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// On an address that is not loopback the hub serves HTTP and NATS over TLS only, with a CA it
// made and that enrollment tokens pin; an agent enrolls with such a token and runs over TLS.
// Plaintext there needs --insecure-plaintext, and is logged as a warning.
func TestTLSBeyondLoopback(t *testing.T) {
	t.Parallel()
	ip := publicIP(t)
	t.Run("default", func(t *testing.T) {
		t.Parallel()
		cfg := testHubConfig(t, t.TempDir())
		cfg.Listen, cfg.NATS.Listen = net.JoinHostPort(ip, "0"), net.JoinHostPort(ip, "0")
		f, err := startFleet(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ep := f.h.Endpoint()
		if !strings.HasPrefix(ep.API, "https://") || ep.CA != filepath.Join(cfg.DataDir, pki.Dir, pki.CACertFile) {
			t.Fatalf("endpoint %+v: want https and the CA file", ep)
		}
		plain := strings.Replace(ep.API, "https://", "http://", 1)
		if resp, err := http.Get(plain + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatal("plaintext HTTP answered 200 on a TLS hub")
			}
		}
		c := caClient(t, ep.CA)
		resp, err := c.Get(ep.API + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("https with the hub's CA: %v %v", resp, err)
		}
		resp.Body.Close()
		if info := natsInfo(t, ep.NATS[0]); info["tls_required"] != true {
			t.Fatalf("NATS INFO %v: want tls_required", info)
		}
		// The token pins the CA, and an agent enrolls with it and runs over TLS.
		var tr struct {
			Token string `json:"token"`
		}
		if code := apiCall(t, ep.API, c, f.admin, "POST", "/api/v1/tokens", `{"uses":1,"ttl":"10m"}`, &tr); code != http.StatusCreated {
			t.Fatalf("create token: HTTP %d", code)
		}
		_, pin, err := credential.ParseEnrollToken(tr.Token)
		if err != nil || pin != f.h.tls.Fingerprint() || pin == "" {
			t.Fatalf("token %q: pin %q, %v; want the CA fingerprint %s", tr.Token, pin, err, f.h.tls.Fingerprint())
		}
		ra := f.startAgent("tls-agent", ep.API, tr.Token, nil)
		f.waitOnline("tls-agent")
		saved, err := os.ReadFile(filepath.Join(ra.dir, "hub-ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		ca, _ := os.ReadFile(ep.CA)
		if string(saved) != string(ca) {
			t.Fatal("the agent kept another CA than the hub's")
		}
	})
	t.Run("insecure-plaintext", func(t *testing.T) {
		t.Parallel()
		cfg := testHubConfig(t, t.TempDir())
		cfg.Listen, cfg.NATS.Listen = net.JoinHostPort(ip, "0"), net.JoinHostPort(ip, "0")
		cfg.InsecurePlaintext = true
		f, err := startFleet(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ep := f.h.Endpoint()
		resp, err := http.Get(ep.API + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(ep.API, "http://") {
			t.Fatalf("plaintext HTTP with --insecure-plaintext: %v %v (%s)", resp, err, ep.API)
		}
		resp.Body.Close()
		if info := natsInfo(t, ep.NATS[0]); info["tls_required"] == true {
			t.Fatalf("NATS INFO %v: TLS required despite --insecure-plaintext", info)
		}
		if log := f.hubLog.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "WITHOUT TLS") {
			t.Fatal("no warning about plaintext beyond loopback")
		}
		// An agent refuses plaintext to that hub unless told otherwise.
		acfg := config.DefaultAgent()
		acfg.Hub, acfg.StateDir = ep.API, t.TempDir()
		if err := acfg.Validate(); err == nil || !strings.Contains(err.Error(), "--insecure-plaintext") {
			t.Fatalf("agent config with a plaintext non-loopback hub: %v", err)
		}
		acfg.InsecurePlaintext = true
		if err := acfg.Validate(); err != nil {
			t.Fatal(err)
		}
	})
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// An agent holding a token that pins hub 1's CA refuses hub 2 before sending it anything; after
// enrolling with hub 1 it refuses hub 1 itself once hub 1 presents a certificate of another CA.
func TestPinnedCA(t *testing.T) {
	t.Parallel()
	tlsHub := func(dir, httpPort, natsPort string) *fleet {
		cfg := testHubConfig(t, dir)
		cfg.TLS.Mode = config.TLSAlways
		cfg.Listen, cfg.NATS.Listen = "127.0.0.1:"+httpPort, "127.0.0.1:"+natsPort
		f, err := startFleet(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	dir1 := t.TempDir()
	http1, nats1 := freePort(t), freePort(t)
	hub1, hub2 := tlsHub(dir1, http1, nats1), tlsHub(t.TempDir(), "0", "0")
	c1 := caClient(t, hub1.h.Endpoint().CA)
	var tr struct {
		Token string `json:"token"`
	}
	if code := apiCall(t, hub1.h.Endpoint().API, c1, hub1.admin, "POST", "/api/v1/tokens", `{"uses":2,"ttl":"10m"}`, &tr); code != http.StatusCreated {
		t.Fatalf("create token: HTTP %d", code)
	}

	// Hub 2's certificate is valid for 127.0.0.1, but not of the pinned CA.
	impostor := hub2.startAgent("to-impostor", hub2.h.Endpoint().API, tr.Token, nil)
	select {
	case err := <-impostor.done:
		if err == nil || !strings.Contains(err.Error(), "fingerprint") {
			t.Fatalf("agent against another hub: %v; want a refusal naming the fingerprint", err)
		}
		impostor.done <- err
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not give up on a hub with another certificate")
	}
	if as, err := hub2.h.Store().ListAgents(t.Context()); err != nil || len(as) != 0 {
		t.Fatalf("hub 2 has agents %v, %v: the token reached it", as, err)
	}
	if _, err := os.Stat(filepath.Join(impostor.dir, "identity.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("identity after a refused enrollment: %v", err)
	}

	ra := hub1.startAgent("pinned", hub1.h.Endpoint().API, tr.Token, nil)
	hub1.waitOnline("pinned")
	ra.stop()
	if err := <-ra.done; err != nil {
		t.Fatalf("agent stop: %v", err)
	}
	ra.done <- nil

	// Hub 1 again, same addresses, but a new CA: the enrolled agent must not talk to it.
	if err := hub1.h.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir1, pki.Dir)); err != nil {
		t.Fatal(err)
	}
	hub1b := tlsHub(dir1, http1, nats1)
	if hub1b.h.tls.Fingerprint() == hub1.h.tls.Fingerprint() {
		t.Fatal("the hub kept its CA")
	}
	again := hub1b.restartAgent(ra)
	eventually(t, 30*time.Second, "a certificate error in the agent's log", func() error {
		if log := again.log.String(); !strings.Contains(log, "certificate signed by unknown authority") {
			return errors.New("not yet")
		}
		return nil
	})
	if strings.Contains(again.log.String(), "connected to hub") {
		t.Fatal("the agent connected to a hub whose certificate its CA did not sign")
	}
}

// restartAgent starts an agent again on its state dir (no token: it is enrolled).
func (f *fleet) restartAgent(old *runningAgent) *runningAgent {
	f.t.Helper()
	ra := f.startAgent(old.name+"-again", "", "", func(c *config.Agent) { c.StateDir = old.dir })
	ra.dir = old.dir
	return ra
}
