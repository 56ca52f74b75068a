package hubcmd

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"godwit.dev/godwit/internal/cli"
	"godwit.dev/godwit/internal/wire"
)

// A member started before its NATS server waits for it and then takes its role, rather than
// exiting on the first failed connection.
func TestFailoverMemberWaitsForNATS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	dir := t.TempDir()
	spec := filepath.Join(dir, "group.yaml")
	const self = "00000000-0000-4000-8000-000000000001"
	doc := "apiVersion: godwit.dev/v1\nkind: FailoverGroup\nmetadata: {name: wait}\nspec:\n  members:\n" +
		"    - {agent: " + self + "}\n    - {agent: 00000000-0000-4000-8000-000000000002}\n" +
		"  hooks:\n    onPromote: {command: 'true', timeout: 2s}\n    onFence: {command: 'true', timeout: 2s}\n"
	if err := os.WriteFile(spec, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}

	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := newFailoverMemberCmd(cli.IO{Out: pw, Err: io.Discard})
	cmd.SetArgs([]string{"--nats", "nats://127.0.0.1:" + strconv.Itoa(port), "-f", spec, "--member", self})
	exited := make(chan error, 1)
	stopped := make(chan struct{})
	go func() { exited <- cmd.ExecuteContext(ctx); pw.Close(); close(stopped) }()
	defer func() {
		cancel()
		go io.Copy(io.Discard, pr)
		<-stopped
	}()

	// Still running after its first connection failed: it has not returned.
	select {
	case err := <-exited:
		t.Fatalf("the member exited before NATS was up: %v", err)
	case <-time.After(500 * time.Millisecond):
	}

	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: filepath.Join(dir, "nats"), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()

	transitions := make(chan wire.FailoverTransition, 64)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var tr wire.FailoverTransition
			if json.Unmarshal(sc.Bytes(), &tr) == nil {
				transitions <- tr
			}
		}
	}()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case tr := <-transitions:
			t.Logf("transition %+v", tr)
			if tr.Member == self && tr.Hook == "" && tr.To != "" {
				t.Logf("after NATS came up: %s/%s at epoch %d", tr.Role, tr.To, tr.Epoch)
				return
			}
		case err := <-exited:
			t.Fatalf("the member exited: %v", err)
		case <-deadline:
			t.Fatal("no transition within 60s of NATS starting")
		}
	}
}
