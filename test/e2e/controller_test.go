package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

// manySteps is the spec of the field report: a valid migration whose steps are many and small
// (20,000 steps make 838 KB, under the 1 MiB body limit).
func manySteps(name string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: godwit.dev/v1\nkind: Migration\nmetadata: {name: %s}\nspec:\n  toVersion: \"2\"\n  steps:\n", name)
	for i := range n {
		fmt.Fprintf(&b, "    - name: s%d\n      run: 'echo %d >> out'\n", i, i)
	}
	return b.String()
}

// postSpec posts a spec to the hub's API and returns the status and the error message.
func (h *hubProc) postSpec(t *testing.T, spec string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.api+"/api/v1/migrations", strings.NewReader(spec))
	req.Header.Set("Authorization", "Bearer "+h.token)
	req.Header.Set("Content-Type", "application/yaml")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body wire.ErrorBody
	raw, _ := io.ReadAll(res.Body)
	_ = json.Unmarshal(raw, &body)
	return res.StatusCode, body.Error.Message
}

// What cannot be delivered to an agent is refused when it is applied, with a 400 that names the
// limit and the size: too many steps, a command too long, and a desired document larger than
// the NATS server's max payload (here: commands of characters JSON writes six bytes wide).
// Nothing is stored.
func TestUndeliverableSpecRefusedAtApply(t *testing.T) {
	t.Parallel()
	h := startHub(t, filepath.Join(t.TempDir(), "hub"))
	steps20k := manySteps("many", 20000)
	if len(steps20k) < 800<<10 || len(steps20k) > 1<<20 {
		t.Fatalf("the 20,000-step spec is %d bytes; it should be under the body limit, as reported", len(steps20k))
	}
	bigCommand := "apiVersion: godwit.dev/v1\nkind: Migration\nmetadata: {name: long}\nspec:\n  toVersion: \"2\"\n  steps:\n" +
		"    - name: one\n      run: '" + strings.Repeat("x", 900<<10) + "'\n"
	var wide strings.Builder
	wide.WriteString("apiVersion: godwit.dev/v1\nkind: Migration\nmetadata: {name: wide}\nspec:\n  toVersion: \"2\"\n  steps:\n")
	for i := range 4 {
		fmt.Fprintf(&wide, "    - name: s%d\n      run: '%s'\n", i, strings.Repeat("&", 60<<10))
	}
	for _, tc := range []struct{ name, spec, want string }{
		{"many", steps20k, "spec.steps (line 6): has 20000 steps, the limit is 256"},
		{"long", bigCommand, "spec.steps[0].run (line 8): is 921600 bytes, the limit is 65536 bytes"},
		{"wide", wide.String(), "the NATS server's max payload is 1048576 bytes"},
	} {
		code, msg := h.postSpec(t, tc.spec)
		if code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
			t.Fatalf("apply %s: %d %q, want 400 saying %q", tc.name, code, msg, tc.want)
		}
		if tc.name == "wide" && !strings.Contains(msg, "its desired document for an agent would be 1474") {
			t.Fatalf("apply wide: %q does not give the document's size", msg)
		}
		if out, _, code := h.cliCode("describe", "migration", tc.name); code == 0 {
			t.Fatalf("refused spec %s was stored:\n%s", tc.name, out)
		}
	}
	// The command line says the same.
	if _, errOut, code := h.cliCode("apply", "-f", writeTemp(t, steps20k)); code == 0 || !strings.Contains(errOut, "has 20000 steps, the limit is 256") {
		t.Fatalf("godwit apply of the 20,000-step spec: exit %d: %s", code, errOut)
	}
}

// passes reads the hub's count of migration controller passes.
func (h *hubProc) passes(t *testing.T) int {
	t.Helper()
	res, err := http.Get(h.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	n := 0
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "godwit_migration_controller_passes_total{result="); ok {
			if _, num, ok := strings.Cut(v, "} "); ok {
				f, _ := strconv.ParseFloat(num, 64)
				n += int(f)
			}
		}
	}
	return n
}

// waitPasses waits until the controller has made n more passes.
func (h *hubProc) waitPasses(t *testing.T, n int) {
	t.Helper()
	from := h.passes(t)
	eventually(t, 60*time.Second, fmt.Sprintf("%d controller passes", n), func() error {
		if got := h.passes(t) - from; got < n {
			return fmt.Errorf("%d passes so far", got)
		}
		return nil
	})
}

func (h *hubProc) events(t *testing.T, args ...string) []wire.EventRecord {
	t.Helper()
	var es []wire.EventRecord
	if err := json.Unmarshal([]byte(h.cli(t, append([]string{"events", "-o", "json", "--limit", "1000"}, args...)...)), &es); err != nil {
		t.Fatal(err)
	}
	return es
}

// A migration that cannot be delivered — stored past apply's checks, as a hub that had none
// stored the field report's 20,000-step spec — fails on its own with an error event naming the
// reason; another migration's 5-second deadline still fires (on the hub of the report it ended
// succeeded after its 60-second step). Both can then be deleted, their events stay, and their
// names stay taken. Then an agent killed for many controller passes is one event each way, not
// one per pass.
func TestPoisonedMigrationDoesNotStopDeadlines(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	// A grace long enough that a loaded machine does not make the agent look away by itself.
	h := startHub(t, filepath.Join(root, "hub"), "--heartbeat-interval", "250ms", "--liveness-grace", "3s", "--settle", "3s")
	tok := strings.TrimSpace(h.cli(t, "token", "create", "--uses", "3", "--ttl", "10m"))
	agent := h.startAgent(t, filepath.Join(root, "agent-1"), tok, "role=db")
	eventually(t, 60*time.Second, "agent online", func() error {
		if s := statusByName(h.agents(t))["agent-1"].Status; s != wire.StatusOnline {
			return fmt.Errorf("agent-1 is %q", s)
		}
		return nil
	})
	agentID := statusByName(h.agents(t))["agent-1"].ID

	// The poisoned migration goes straight into the hub's store, beside the running hub.
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(h.dataDir, "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	big := manySteps("big", 20000)
	if err := st.CreateMigration(ctx, wire.Migration{Name: "big", Spec: big, SpecHash: "poison", State: "pending", Batches: 1, CurrentBatch: -1,
		CreatedAt: now, UpdatedAt: now}, []wire.Assignment{{Migration: "big", AgentID: agentID, Attempt: 1, State: "pending", Action: wire.ActionApply,
		CreatedAt: now, UpdatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	deadline := `apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: deadline}
spec:
  selector: {matchLabels: {role: db}}
  toVersion: "2"
  steps:
    - name: slow
      run: 'sleep 60; touch finished'
  timeouts: {assignment: 5s}
  rollout: {onFailure: abort}
`
	h.cli(t, "apply", "-f", writeTemp(t, deadline))
	var d wire.MigrationDescription
	eventually(t, 45*time.Second, "the deadline migration to fail on its 5s deadline", func() error {
		if err := json.Unmarshal([]byte(h.cli(t, "describe", "migration", "deadline", "-o", "json")), &d); err != nil {
			return err
		}
		if d.Migration.State != "failed" {
			return fmt.Errorf("deadline is %s (%s)", d.Migration.State, d.Migration.Reason)
		}
		return nil
	})
	if len(d.Assignments) != 1 || !strings.Contains(d.Assignments[0].Failure, "assignment deadline of 5s") {
		t.Fatalf("deadline's assignment: %+v", d.Assignments)
	}
	var b wire.MigrationDescription
	if err := json.Unmarshal([]byte(h.cli(t, "describe", "migration", "big", "-o", "json")), &b); err != nil {
		t.Fatal(err)
	}
	if b.Migration.State != "failed" || !strings.Contains(b.Migration.Reason, "max payload is 1048576 bytes") {
		t.Fatalf("big: %s %q, want failed naming the max payload", b.Migration.State, b.Migration.Reason)
	}
	eventually(t, 30*time.Second, "big's error event", func() error {
		for _, e := range h.events(t, "--migration", "big", "--severity", "error") {
			if e.Type == wire.EventMigrationStateChanged && strings.Contains(e.Data.Message, "→ failed") && strings.Contains(e.Data.Message, "max payload") {
				return nil
			}
		}
		return fmt.Errorf("no error event for big yet")
	})
	if out := h.output(); strings.Contains(out, "maximum payload exceeded") || strings.Contains(out, "the store is back") {
		t.Fatalf("the hub took the undeliverable migration for an outage:\n%s", out)
	}

	// Both have ended: delete them. Their events stay; their names are not used again.
	eventually(t, 30*time.Second, "deadline deletable (the agent confirmed its rollback)", func() error {
		_, errOut, code := h.cliCode("delete", "migration", "deadline")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, errOut)
		}
		return nil
	})
	if out := h.cli(t, "delete", "migration", "big"); !strings.Contains(out, "migration big deleted") {
		t.Fatalf("delete big: %q", out)
	}
	if out := h.cli(t, "get", "migrations"); strings.Contains(out, "big") || strings.Contains(out, "deadline") {
		t.Fatalf("deleted migrations are still listed:\n%s", out)
	}
	if _, errOut, code := h.cliCode("apply", "-f", writeTemp(t, deadline)); code == 0 || !strings.Contains(errOut, "deleted") {
		t.Fatalf("apply under a deleted name: exit %d: %s", code, errOut)
	}
	eventually(t, 30*time.Second, "the deletions as operator actions", func() error {
		n := 0
		for _, e := range h.events(t, "--type", wire.EventOperatorAction) {
			var x struct{ Action, Actor string }
			if json.Unmarshal(e.Data.Extra, &x) == nil && x.Action == "delete" && x.Actor == "admin" {
				n++
			}
		}
		if n != 2 {
			return fmt.Errorf("%d delete actions", n)
		}
		return nil
	})
	if len(h.events(t, "--migration", "big")) == 0 {
		t.Fatal("the deleted migration's events are gone")
	}

	// An agent away for many passes is one event when it goes and one when it is back.
	// (A short step: the copy the killed agent leaves behind ends soon after the test.)
	held := strings.NewReplacer("name: deadline", "name: held", "assignment: 5s", "assignment: 1h", "sleep 60", "sleep 8").Replace(deadline)
	h.cli(t, "apply", "-f", writeTemp(t, held))
	eventually(t, 30*time.Second, "held applying", func() error {
		if err := json.Unmarshal([]byte(h.cli(t, "describe", "migration", "held", "-o", "json")), &d); err != nil {
			return err
		}
		if len(d.Assignments) != 1 || d.Assignments[0].State != "applying" {
			return fmt.Errorf("held: %+v", d.Assignments)
		}
		return nil
	})
	agent.signal(syscall.SIGKILL)
	agent.wait(10 * time.Second)
	eventually(t, 30*time.Second, "held's assignment unreachable", func() error {
		if err := json.Unmarshal([]byte(h.cli(t, "describe", "migration", "held", "-o", "json")), &d); err != nil {
			return err
		}
		if d.Assignments[0].State != "agent_unreachable" {
			return fmt.Errorf("held's assignment is %s", d.Assignments[0].State)
		}
		return nil
	})
	h.waitPasses(t, 20)
	agent = h.startAgent(t, filepath.Join(root, "agent-1"), "")
	eventually(t, 60*time.Second, "held reachable again", func() error {
		if err := json.Unmarshal([]byte(h.cli(t, "describe", "migration", "held", "-o", "json")), &d); err != nil {
			return err
		}
		if d.Assignments[0].State == "agent_unreachable" {
			return fmt.Errorf("held's assignment is %s", d.Assignments[0].State)
		}
		return nil
	})
	h.waitPasses(t, 10)
	var got []string
	eventually(t, 30*time.Second, "the reachability events", func() error {
		got = got[:0]
		for _, e := range h.events(t, "--migration", "held", "--type", wire.EventAssignmentReconciled) {
			got = append(got, e.Data.Message)
		}
		if len(got) != 2 {
			return fmt.Errorf("%d events: %q", len(got), got)
		}
		return nil
	})
	// Newest first.
	if !strings.HasPrefix(got[1], "agent unreachable") || !strings.HasPrefix(got[0], "agent reachable again after") {
		t.Fatalf("reachability events: %q", got)
	}
	var status []string
	for _, e := range h.events(t, "--type", wire.EventAgentStatusChanged) {
		status = append(status, e.Data.Message)
	}
	if len(status) != 2 || !strings.Contains(status[1], "is offline") || !strings.Contains(status[0], "is online again after") {
		t.Fatalf("agent status events: %q", status)
	}
	_ = agent
}
