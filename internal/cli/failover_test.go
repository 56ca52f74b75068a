package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"net/http/httptest"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/failover/groups"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

// The failover group commands against a hub API: apply (and its refusals naming the field),
// get, describe, pause and resume, delete.
func TestFailoverCommands(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	admin := credential.New(credential.PrefixAdmin)
	now := time.Now()
	if _, err := st.InitAdminToken(ctx, credential.Hash(admin), now); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateEnrollToken(ctx, wire.EnrollToken{ID: "t", MaxUses: 5, ExpiresAt: now.Add(time.Hour), CreatedAt: now}, "h"); err != nil {
		t.Fatal(err)
	}
	ids := []string{"0f0e0d0c-0b0a-4908-8706-050403020101", "0f0e0d0c-0b0a-4908-8706-050403020102"}
	for i, id := range ids {
		if err := st.Enroll(ctx, "h", now, wire.Agent{ID: id, Name: []string{"db-a", "db-b"}[i], Labels: map[string]string{"role": "db"}, EnrolledAt: now}, "c"); err != nil {
			t.Fatal(err)
		}
	}
	hs := httptest.NewServer(api.New(api.Config{Store: st, Logger: logging.Discard(), Registry: prometheus.NewRegistry(),
		Failover: &groups.Service{Store: st}}))
	t.Cleanup(hs.Close)
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := Main(ctx, append(args, "--hub-url", hs.URL, "--token", admin), IO{In: strings.NewReader(""), Out: &out, Err: &errb}, nil)
		return out.String(), errb.String(), code
	}
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("pg.yaml", `apiVersion: godwit.dev/v1
kind: FailoverGroup
metadata: {name: pg}
spec:
  members:
    - selector: {matchLabels: {role: db}}
  failoverTimeout: 20s
  hooks:
    onPromote: {command: "pg_ctl promote", timeout: 1m}
    onFence: {command: "pg_ctl stop", timeout: 2s}
`)
	if out, errs, code := run("apply", "-f", good, "--dry-run"); code != 0 || !strings.Contains(out, "failovergroup/pg valid (2 members)") {
		t.Fatalf("apply --dry-run: %d %q %q", code, out, errs)
	}
	if out, errs, code := run("apply", "-f", good); code != 0 || !strings.Contains(out, "failovergroup/pg created (2 members)") ||
		!strings.Contains(errs, "no healthCheck hook") {
		t.Fatalf("apply: %d %q %q", code, out, errs)
	}
	timing := write("timing.yaml", strings.Replace(strings.Replace(readFile(t, good), "20s", "5s", 1), "{name: pg}", "{name: other}", 1))
	if _, errs, code := run("apply", "-f", timing); code != ExitError || !strings.Contains(errs, "spec.failoverTimeout (line 7): must be longer than heartbeatTimeout × failureThreshold + safetyMargin") {
		t.Fatalf("apply breaking the timing rule: %d %q", code, errs)
	}
	taken := write("taken.yaml", strings.Replace(readFile(t, good), "{name: pg}", "{name: other}", 1))
	if _, errs, code := run("apply", "-f", taken); code != ExitError ||
		!strings.Contains(errs, "spec.members[0].selector (line 6): agent "+ids[0]+" is already a member of failover group pg") {
		t.Fatalf("apply with another group's members: %d %q", code, errs)
	}
	if out, _, code := run("get", "failovergroups"); code != 0 || !strings.Contains(out, "pg") || !strings.Contains(out, "20s") || strings.Contains(out, "other") {
		t.Fatalf("get failovergroups: %d %q", code, out)
	}
	if out, _, code := run("failover", "pause", "pg", "--reason", "upgrade"); code != 0 || !strings.Contains(out, "paused (upgrade)") {
		t.Fatalf("pause: %d %q", code, out)
	}
	// ids[0]'s policy refused a hook; ids[1] reported a transition.
	refusal, _ := json.Marshal(map[string]string{"group": "pg", "hook": "onFence", "rule": "spec.commands.run", "policy": "db-hosts"})
	moved, _ := json.Marshal(wire.FailoverTransition{Group: "pg", Member: ids[1], Role: "replica", From: "initializing", To: "watching", Epoch: 4, Reason: "another is primary"})
	ev1 := wire.NewEvent(wire.AgentSource(ids[0]), wire.EventFailoverPolicyRefused, wire.SeverityError, wire.EventData{AgentID: ids[0], Extra: refusal})
	ev2 := wire.NewEvent(wire.AgentSource(ids[1]), wire.EventFailoverTransition, wire.SeverityInfo, wire.EventData{AgentID: ids[1], Extra: moved})
	if _, err := st.InsertEvents(ctx, []store.StoredEvent{{Event: ev1, ReceivedAt: now}, {Event: ev2, ReceivedAt: now}}, nil); err != nil {
		t.Fatal(err)
	}
	out, _, code := run("describe", "failovergroup", "pg")
	if code != 0 || !strings.Contains(out, "State:    paused (upgrade)") || !strings.Contains(out, ids[1]) || !strings.Contains(out, "kind: FailoverGroup") ||
		!strings.Contains(out, "failoverTimeout: 20s") {
		t.Fatalf("describe: %d %q", code, out)
	}
	// The settings the members run with: timing after defaults and its rule, hooks with their
	// timeouts, members through the entry that took them in; the refusal on the timeline and as
	// the member's standing.
	for _, re := range []string{
		`(?m)^  heartbeatInterval +1s$`, `(?m)^  failureThreshold +3$`,
		`(?m)^  failoverTimeout +20s +\(> heartbeatTimeout × failureThreshold \+ safetyMargin = \d+s\)$`,
		`(?m)^  maxLagOnFailover +0 \(no limit\)$`, `(?m)^  healthCheck +- +\(none\)$`, `(?m)^  onFence +2s +pg_ctl stop$`,
		`(?m)^  onPromote +1m +pg_ctl promote$`,
		`(?m)^  ` + ids[0] + ` +spec\.members\[0\]\.selector +0 +false +- +refused \(hook onFence, agent policy\)`,
		`(?m)^  ` + ids[1] + ` +spec\.members\[0\]\.selector +0 +false +replica +watching +4 `,
		`(?m)^  \S+ +` + ids[0] + ` +onFence refused +epoch 0 +refused by agent policy db-hosts, rule spec\.commands\.run`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("describe lacks %s:\n%s", re, out)
		}
	}
	if out, _, code := run("failover", "resume", "pg"); code != 0 || !strings.Contains(out, "active") {
		t.Fatalf("resume: %d %q", code, out)
	}
	if out, _, code := run("failover", "delete", "pg"); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: %d %q", code, out)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
