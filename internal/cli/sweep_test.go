package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/lease/leasetest"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/sweep"
	"godwit.dev/godwit/internal/wire"
)

// The sweep commands against a hub API with a leading sweep service (no agents: a run
// completes on the leader's first pass).
func TestSweepCommands(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	admin := credential.New(credential.PrefixAdmin)
	if _, err := st.InitAdminToken(ctx, credential.Hash(admin), time.Now()); err != nil {
		t.Fatal(err)
	}
	srv, err := bus.StartServer(bus.ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: st, Logger: logging.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	nc, err := srv.ConnectHub("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	bk, err := bus.EnsureBuckets(ctx, js, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc := sweep.New(sweep.Config{Store: st, Requests: bk.Sweep, Results: bk.SweepResults, Leader: leasetest.StoreEpoch{Name: sweep.LeadershipName, Store: st, Holder: "test"},
		HubID: "test", Logger: logging.Discard(), Interval: 20 * time.Millisecond})
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	hs := httptest.NewServer(api.New(api.Config{Store: st, Logger: logging.Discard(), Registry: prometheus.NewRegistry(), Sweeps: svc}))
	t.Cleanup(hs.Close)

	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := Main(ctx, append(args, "--hub-url", hs.URL, "--token", admin), IO{In: strings.NewReader(""), Out: &out, Err: &errb}, nil)
		return out.String(), errb.String(), code
	}
	spec := filepath.Join(t.TempDir(), "sweep.yaml")
	if err := os.WriteFile(spec, []byte(`apiVersion: godwit.dev/v1
kind: Sweep
metadata: {name: drift}
spec:
  schedule: "0 3 * * *"
  timezone: Europe/Berlin
  check: {command: "true"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errs, code := run("apply", "-f", spec, "--dry-run"); code != 0 || !strings.Contains(out, "sweep drift (dry run): valid") {
		t.Fatalf("apply --dry-run: %d %q %q", code, out, errs)
	}
	if out, errs, code := run("apply", "-f", spec); code != 0 || !strings.Contains(out, "sweep drift created") || !strings.Contains(out, "next firings:") ||
		!strings.Contains(errs, "selector is empty") {
		t.Fatalf("apply: %d %q %q", code, out, errs)
	}
	if out, _, code := run("apply", "-f", spec); code != 0 || !strings.Contains(out, "sweep drift unchanged") {
		t.Fatalf("apply again: %d %q", code, out)
	}
	if _, errs, code := run("apply", "-f", spec, "--wait"); code != ExitUsage || !strings.Contains(errs, "sweep run") {
		t.Fatalf("apply --wait of a sweep: %d %q", code, errs)
	}
	if out, _, code := run("get", "sweeps"); code != 0 || !strings.Contains(out, "drift") || !strings.Contains(out, "0 3 * * *") || !strings.Contains(out, "Europe/Berlin") {
		t.Fatalf("get sweeps: %d %q", code, out)
	}
	out, errs, code := run("sweep", "run", "drift", "--max-seconds", "300", "--wait")
	if code != 0 || !strings.Contains(out, "completed: 0/0 settled") || !strings.Contains(out, "Trigger:   cli by ") {
		t.Fatalf("sweep run --wait: %d %q %q", code, out, errs)
	}
	if _, errs, code := run("sweep", "run", "drift", "--max-seconds", "0"); code != ExitUsage {
		t.Fatalf("sweep run --max-seconds 0: %d %q", code, errs)
	}
	if _, errs, code := run("sweep", "run", "ghost"); code != ExitError || !strings.Contains(errs, "not found") && !strings.Contains(errs, "ghost") {
		t.Fatalf("sweep run ghost: %d %q", code, errs)
	}
	out, _, code = run("get", "runs", "--sweep", "drift", "-o", "json")
	var runs []wire.SweepRun
	if code != 0 || json.Unmarshal([]byte(out), &runs) != nil || len(runs) != 1 || runs[0].Trigger != wire.TriggerCLI || runs[0].MaxSeconds != 300 ||
		runs[0].Status != wire.SweepRunCompleted || runs[0].ExitCode == nil || *runs[0].ExitCode != 0 {
		t.Fatalf("get runs -o json: %d %q", code, out)
	}
	if out, _, code := run("get", "runs", "--sweep", "drift"); code != 0 || !strings.Contains(out, runs[0].ID) || !strings.Contains(out, "completed") {
		t.Fatalf("get runs: %d %q", code, out)
	}
	if _, _, code := run("get", "runs"); code != ExitUsage {
		t.Fatalf("get runs without --sweep: %d", code)
	}
	if out, _, code := run("describe", "sweep", "drift"); code != 0 || !strings.Contains(out, "Recent runs:") || !strings.Contains(out, "kind: Sweep") {
		t.Fatalf("describe sweep: %d %q", code, out)
	}
	if out, _, code := run("describe", "run", runs[0].ID, "--sweep", "drift"); code != 0 || !strings.Contains(out, runs[0].ID) {
		t.Fatalf("describe run: %d %q", code, out)
	}
	// Suspend and resume: the state and why show in get and describe.
	if out, errs, code := run("sweep", "suspend", "drift", "--reason", "canary first"); code != 0 ||
		!strings.Contains(out, "sweep drift suspended: no scheduled run fires until it is resumed") {
		t.Fatalf("sweep suspend: %d %q %q", code, out, errs)
	}
	if out, _, code := run("sweep", "suspend", "drift"); code != 0 || !strings.Contains(out, "sweep drift is already suspended since ") ||
		!strings.Contains(out, " via cli: canary first") {
		t.Fatalf("sweep suspend again: %d %q", code, out)
	}
	if out, _, code := run("get", "sweeps"); code != 0 || !strings.Contains(out, "suspended (0 held)") {
		t.Fatalf("get sweeps of a suspended sweep: %d %q", code, out)
	}
	if out, _, code := run("describe", "sweep", "drift"); code != 0 || !strings.Contains(out, "Suspended: yes since ") ||
		!strings.Contains(out, "canary first") || !strings.Contains(out, "on resume: not run (resumePolicy: skip)") || strings.Contains(out, "Next:") {
		t.Fatalf("describe a suspended sweep: %d %q", code, out)
	}
	// The canary runs while it is suspended, recorded as a cli run.
	if out, errs, code := run("sweep", "run", "drift", "--wait"); code != 0 || !strings.Contains(out, "Trigger:   cli by ") {
		t.Fatalf("sweep run while suspended: %d %q %q", code, out, errs)
	}
	out, _, code = run("sweep", "resume", "drift", "-o", "json")
	var res wire.SweepSuspendResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Outcome != "resumed" || res.Suspended || len(res.NextFirings) != 3 {
		t.Fatalf("sweep resume -o json: %d %q", code, out)
	}
	if out, _, code := run("sweep", "resume", "drift"); code != 0 || !strings.Contains(out, "sweep drift is not suspended") {
		t.Fatalf("sweep resume again: %d %q", code, out)
	}
	if out, _, code := run("describe", "sweep", "drift"); code != 0 || !strings.Contains(out, "Suspended: no") || !strings.Contains(out, "Next:") {
		t.Fatalf("describe after resume: %d %q", code, out)
	}
	if _, errs, code := run("sweep", "suspend", "ghost"); code != ExitError || !strings.Contains(errs, "ghost") {
		t.Fatalf("sweep suspend ghost: %d %q", code, errs)
	}

	// Runs a page at a time: the cursor of the next page goes to stderr; --all follows them.
	for range 3 {
		if _, errs, code := run("sweep", "run", "drift", "--wait"); code != 0 {
			t.Fatalf("sweep run: %d %q", code, errs)
		}
	}
	var all []wire.SweepRun
	out, errs, code = run("sweep", "runs", "drift", "--all", "--limit", "2", "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &all) != nil || len(all) != 5 || errs != "" {
		t.Fatalf("sweep runs --all: %d %q %q", code, out, errs)
	}
	var seen []string
	cursor := ""
	for range 10 {
		args := []string{"sweep", "runs", "drift", "--limit", "2", "-o", "json"}
		if cursor != "" {
			args = append(args, "--cursor", cursor)
		}
		out, errs, code := run(args...)
		var page []wire.SweepRun
		if code != 0 || json.Unmarshal([]byte(out), &page) != nil {
			t.Fatalf("sweep runs %v: %d %q %q", args, code, out, errs)
		}
		for _, r := range page {
			seen = append(seen, r.ID)
		}
		m := regexp.MustCompile(`older runs: --cursor (\S+) \(or --all\)`).FindStringSubmatch(errs)
		if m == nil {
			break
		}
		cursor = m[1]
	}
	if len(seen) != len(all) {
		t.Fatalf("paging by --cursor saw %d runs, --all %d", len(seen), len(all))
	}
	for i := range all {
		if seen[i] != all[i].ID || (i > 0 && all[i].FiredAt.After(all[i-1].FiredAt)) {
			t.Fatalf("paging by --cursor saw %v; --all gave %+v", seen, all)
		}
	}
	if out, _, code := run("get", "runs", "--sweep", "drift", "--limit", "1"); code != 0 || strings.Count(out, "\n") != 2 {
		t.Fatalf("get runs --limit 1: %d %q", code, out)
	}
	if _, _, code := run("sweep", "runs", "drift", "--limit", "0"); code != ExitUsage {
		t.Fatalf("sweep runs --limit 0: %d", code)
	}
	if _, errs, code := run("sweep", "runs", "drift", "--cursor", "bogus"); code != ExitError || !strings.Contains(errs, "cursor") {
		t.Fatalf("sweep runs --cursor bogus: %d %q", code, errs)
	}

	if out, _, code := run("sweep", "delete", "drift"); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("sweep delete: %d %q", code, out)
	}
}
