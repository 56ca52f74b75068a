package agent

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/datadir"
)

// An identity written by an older hub holds the hub's own NATS URL with its password: the agent
// drops the credentials on its next start, rewrites the file and says so, without the password.
func TestLoadIdentityDropsURLCredentials(t *testing.T) {
	t.Parallel()
	dir, err := datadir.Open(t.TempDir(), datadir.KindAgent)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	old := Identity{AgentID: "0190f6a8-0000-7000-8000-000000000001", Name: "a", Hub: "http://127.0.0.1:7750",
		NATSURLs: []string{"nats://godwit-hub:hub-secret@n1:4222", "nats://n2:4222"}, NATSUser: "0190f6a8-0000-7000-8000-000000000001", NATSPassword: "gwn_x"}
	if err := saveIdentity(dir, &old); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	id, err := loadIdentity(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(id.NATSURLs, " ") != "nats://n1:4222 nats://n2:4222" {
		t.Fatalf("URLs %v", id.NATSURLs)
	}
	raw, _ := os.ReadFile(dir.Join(identityFile))
	var stored Identity
	if err := json.Unmarshal(raw, &stored); err != nil || strings.Contains(string(raw), "hub-secret") || stored.NATSPassword != "gwn_x" {
		t.Fatalf("identity.json after the start: %s (%v)", raw, err)
	}
	if !strings.Contains(logs.String(), "removed them") || strings.Contains(logs.String(), "hub-secret") {
		t.Fatalf("log: %s", logs.String())
	}
}

func TestTrustRefusesPlaintextBeyondLoopback(t *testing.T) {
	t.Parallel()
	dir, err := datadir.Open(t.TempDir(), datadir.KindAgent)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	for _, insecure := range []bool{false, true} {
		tr, err := loadTrust(dir, &config.Agent{InsecurePlaintext: insecure})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(tr.natsOptions([]string{"nats://127.0.0.1:7751", "nats://localhost:7751"})); n != 0 {
			t.Errorf("insecure=%v: TLS forced on loopback", insecure)
		}
		if n := len(tr.natsOptions([]string{"nats://10.0.0.5:7751"})); (n == 0) != insecure {
			t.Errorf("insecure=%v: %d TLS options for a non-loopback server", insecure, n)
		}
		err = tr.checkHubURL("http://10.0.0.5:7750")
		if (err == nil) != insecure {
			t.Errorf("insecure=%v: plaintext hub beyond loopback: %v", insecure, err)
		}
		if err := tr.checkHubURL("http://127.0.0.1:7750"); err != nil {
			t.Errorf("plaintext hub on loopback refused: %v", err)
		}
		if err := tr.checkHubURL("https://10.0.0.5:7750"); err != nil {
			t.Errorf("https hub refused: %v", err)
		}
	}
}
