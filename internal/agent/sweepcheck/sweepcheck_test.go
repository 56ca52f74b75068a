package sweepcheck

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"godwit.dev/godwit/internal/agent/policy"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/wire"
)

type oneAgent struct{ id, hash string }

func (a oneAgent) AgentCredential(_ context.Context, id string) (string, bool, error) {
	if id != a.id {
		return "", false, fault.ErrNotFound
	}
	return a.hash, false, nil
}

// The executor acts on the newest request document only: a document with an older epoch (a
// deposed leader's late write) is ignored, and each run's check runs once.
func TestExecutorFollowsRequests(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	id, pw := "0196a000-0000-7000-8000-000000000001", credential.New(credential.PrefixAgent)
	srv, err := bus.StartServer(bus.ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: oneAgent{id, credential.Hash(pw)}, Logger: logging.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	hub, err := srv.ConnectHub("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	js, _ := jetstream.New(hub)
	bk, err := bus.EnsureBuckets(ctx, js, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := bus.ConnectAgent([]string{srv.ClientURL()}, id, pw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	dir := t.TempDir()
	stop := Start(ctx, Config{Conn: nc, AgentID: id, WorkDir: dir, Resync: 20 * time.Millisecond, Logger: logging.Discard()})
	t.Cleanup(stop)

	ask := func(epoch int64, runs ...string) {
		doc := wire.SweepRequests{AgentID: id, Epoch: epoch}
		for _, r := range runs {
			doc.Checks = append(doc.Checks, wire.SweepCheckRequest{Sweep: "s", RunID: r, Command: `echo "$GODWIT_SWEEP_RUN" >> ran; test "$GODWIT_SWEEP_RUN" != drifted`, TimeoutMS: 10_000})
		}
		b, _ := json.Marshal(doc)
		if _, err := bk.Sweep.Put(ctx, id, b); err != nil {
			t.Fatal(err)
		}
	}
	answers := func() map[string]string {
		e, err := bk.SweepResults.Get(ctx, id)
		if err != nil {
			return nil
		}
		var doc wire.SweepResults
		if err := json.Unmarshal(e.Value(), &doc); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, r := range doc.Results {
			out[r.RunID] = r.State
		}
		return out
	}
	waitFor := func(what string, cond func(map[string]string) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond(answers()) {
			if time.Now().After(deadline) {
				t.Fatalf("not within 10s: %s (answers %v)", what, answers())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ran := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "ran"))
		return strings.TrimSpace(string(b))
	}

	ask(5, "r1", "drifted")
	waitFor("r1 clean and drifted drifted", func(a map[string]string) bool { return a["r1"] == wire.CheckClean && a["drifted"] == wire.CheckDrifted })
	ask(4, "r1", "drifted", "stale") // an older leader's write, left in place for 15 resyncs
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if _, ok := answers()["stale"]; ok || strings.Contains(ran(), "stale") {
			t.Fatal("the executor acted on a document with an older epoch")
		}
	}
	ask(5, "r1") // the hub took "drifted": it is dropped from the answers
	waitFor("drifted dropped", func(a map[string]string) bool { _, ok := a["drifted"]; return !ok && a["r1"] == wire.CheckClean })
	ask(6, "r1", "r2")
	waitFor("r2 answered", func(a map[string]string) bool { return a["r2"] == wire.CheckClean })
	lines := strings.Fields(ran())
	if strings.Count(ran(), "r1") != 1 || strings.Contains(ran(), "stale") || len(lines) != 3 {
		t.Fatalf("checks run: %q; want r1, drifted and r2 once each, never the stale one", ran())
	}
}

// A check the agent policy refuses is answered as an error naming the rule, and never runs.
func TestPolicyRefusesCheck(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	id, pw := "0196a000-0000-7000-8000-000000000002", credential.New(credential.PrefixAgent)
	srv, err := bus.StartServer(bus.ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: oneAgent{id, credential.Hash(pw)}, Logger: logging.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	hub, err := srv.ConnectHub("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	js, _ := jetstream.New(hub)
	bk, err := bus.EnsureBuckets(ctx, js, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := bus.ConnectAgent([]string{srv.ClientURL()}, id, pw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	dir := t.TempDir()
	pf := filepath.Join(dir, "policy.yaml")
	_ = os.WriteFile(pf, []byte("apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  commands:\n    check: [{exact: 'echo a >> ran'}]\n"), 0o600)
	p, err := policy.Load(pf)
	if err != nil {
		t.Fatal(err)
	}
	stop := Start(ctx, Config{Conn: nc, AgentID: id, WorkDir: dir, Resync: 20 * time.Millisecond, Logger: logging.Discard(), Policy: p})
	t.Cleanup(stop)
	doc, _ := json.Marshal(wire.SweepRequests{AgentID: id, Epoch: 1, Checks: []wire.SweepCheckRequest{
		{Sweep: "s", RunID: "a", Command: "echo a >> ran", TimeoutMS: 10_000},
		{Sweep: "s", RunID: "b", Command: "echo b >> ran", TimeoutMS: 10_000}}})
	if _, err := bk.Sweep.Put(ctx, id, doc); err != nil {
		t.Fatal(err)
	}
	var got map[string]wire.SweepCheckResult
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = map[string]wire.SweepCheckResult{}
		if e, err := bk.SweepResults.Get(ctx, id); err == nil {
			var res wire.SweepResults
			_ = json.Unmarshal(e.Value(), &res)
			for _, r := range res.Results {
				got[r.RunID] = r
			}
		}
		if got["a"].State == wire.CheckClean && got["b"].State == wire.CheckError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("answers %+v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(got["b"].Error, "rule spec.commands.check") {
		t.Fatalf("the refused check's error: %q", got["b"].Error)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "ran")); string(b) != "a\n" {
		t.Fatalf("checks run: %q, want only a", b)
	}
}
