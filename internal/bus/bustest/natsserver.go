package bustest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/syncbuf"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// NATSServerBinary builds the nats-server of go.mod (github.com/nats-io/nats-server/v2) once per
// test process and returns its path. The machine's own nats-server may be too old for the auth
// callout; this one is the version the hub is tested with. The directory is removed by
// RemoveNATSServerBinary (call it from TestMain).
func NATSServerBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "godwit-nats-server-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "nats-server")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/nats-io/nats-server/v2")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// RemoveNATSServerBinary removes what NATSServerBinary built.
func RemoveNATSServerBinary() {
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
}

// NATSServer is a nats-server process started from a configuration file.
type NATSServer struct {
	t    testing.TB
	Name string // its server_name
	Dir  string // holds the configuration file, the JetStream store and the log
	URL  string // nats://127.0.0.1:<port>
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncbuf.Buffer
}

// StartNATSServer starts nats-server with the configuration conf, to which it adds a random
// loopback port and a JetStream store under dir (kept across restarts of the same dir). It is
// stopped at the end of the test.
func StartNATSServer(t testing.TB, dir, conf string) *NATSServer {
	t.Helper()
	return StartNamedNATSServer(t, dir, "godwit-test", conf)
}

// StartNamedNATSServer is StartNATSServer under the server_name name: one server of a cluster,
// whose conf holds its cluster block.
func StartNamedNATSServer(t testing.TB, dir, name, conf string) *NATSServer {
	t.Helper()
	s := &NATSServer{t: t, Name: name, Dir: dir, log: &syncbuf.Buffer{}, done: make(chan struct{})}
	full := fmt.Sprintf("listen: \"127.0.0.1:-1\"\nserver_name: %q\njetstream {\n  store_dir: %q\n}\n\n%s",
		name, filepath.Join(dir, "jetstream"), conf)
	cfgPath := filepath.Join(dir, "nats-server.conf")
	if err := os.WriteFile(cfgPath, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	portsDir := filepath.Join(dir, "ports")
	_ = os.RemoveAll(portsDir)
	if err := os.MkdirAll(portsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(NATSServerBinary(t), "-c", cfgPath, "--ports_file_dir", portsDir)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("nats-server %s log:\n%s", s.Name, s.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for s.URL == "" {
		select {
		case <-s.done:
			t.Fatalf("nats-server exited at start:\n%s", s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not write its ports file:\n%s", s.log.String())
		}
		entries, _ := os.ReadDir(portsDir)
		for _, e := range entries {
			raw, err := os.ReadFile(filepath.Join(portsDir, e.Name()))
			if err != nil {
				continue
			}
			var ports struct {
				Nats []string `json:"nats"`
			}
			if json.Unmarshal(raw, &ports) == nil && len(ports.Nats) > 0 {
				s.URL = ports.Nats[0]
			}
		}
		if s.URL == "" {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return s
}

// Log is what the server printed so far.
func (s *NATSServer) Log() string { return s.log.String() }

// Stop ends the server (SIGTERM, then SIGKILL after 10s) and waits for it. Safe to call twice.
func (s *NATSServer) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Kill ends the server at once (SIGKILL), as a crash would, and waits for it.
func (s *NATSServer) Kill() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// docsMarker precedes the cluster configuration block in docs/security.md.
const docsMarker = "<!-- cluster-config -->"

// DocsClusterConfig returns the cluster configuration block of docs/security.md, exactly as an
// operator would copy it, with the placeholders replaced by p.
func DocsClusterConfig(t testing.TB, p bus.ClusterParams) string {
	t.Helper()
	block, err := docsBlock()
	if err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer(
		bus.ClusterPlaceholders.Issuer, p.Issuer,
		bus.ClusterPlaceholders.XKey, p.XKey,
		bus.ClusterPlaceholders.HubPassword, p.HubPassword,
		bus.ClusterPlaceholders.SystemPassword, p.SystemPassword,
	)
	return r.Replace(block)
}

// DocsClusterConfigRaw is the block of docs/security.md with its placeholders.
func DocsClusterConfigRaw(t testing.TB) string {
	t.Helper()
	block, err := docsBlock()
	if err != nil {
		t.Fatal(err)
	}
	return block
}

func docsBlock() (string, error) {
	path, err := findUp(filepath.Join("docs", "security.md"))
	if err != nil {
		return "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var out strings.Builder
	state := 0 // 0: before the marker, 1: before the fence, 2: in the block
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case state == 0 && strings.TrimSpace(line) == docsMarker:
			state = 1
		case state == 1 && strings.HasPrefix(line, "```"):
			state = 2
		case state == 2 && strings.HasPrefix(line, "```"):
			return out.String(), nil
		case state == 2:
			out.WriteString(line + "\n")
		}
	}
	return "", fmt.Errorf("%s: no fenced block after %s", path, docsMarker)
}

// findUp finds rel in the working directory or one of its parents (the module root).
func findUp(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New(rel + " not found above the working directory")
		}
		dir = parent
	}
}
