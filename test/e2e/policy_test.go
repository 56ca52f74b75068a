package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// policySpec is a migration of one step for the agents labelled policy=yes; a refusal fails it
// at once (maxFailures 0, onFailure abort).
func policySpec(name, run string) string {
	return fmt.Sprintf(`apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: %s}
spec:
  selector: {matchLabels: {policy: "yes"}}
  toVersion: "2"
  steps:
    - {name: write, run: '%s', timeout: 1m}
  rollout: {onFailure: abort, onAgentFailure: leave}
`, name, run)
}

// TestAgentPolicy runs a real agent under an AgentPolicy file that allows one shape of run
// command, trusts one signing key and runs commands as nobody: an allowed, signed step runs (as
// nobody); a signed step outside the allow-list, a signed spec altered after signing, and an
// unsigned spec are each refused with a migration.policy.refused event naming the rule, run
// nothing, and fail their migration by its own policy; the hub shows the policy's digest.
func TestAgentPolicy(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	h := startHub(t, filepath.Join(root, "hub"), fastLiveness...)

	// The key pair, made and used with the CLI as an operator would.
	keys := filepath.Join(root, "ops")
	h.cli(t, "sign", "keygen", "--out", keys)

	// As root the agent runs its commands as nobody, in a directory nobody may write; as any
	// other user it cannot switch, and that part is skipped.
	asRoot := os.Geteuid() == 0
	var nobody *user.User
	workDir := filepath.Join(root, "agent", "work")
	runAs := ""
	if asRoot {
		var err error
		if nobody, err = user.Lookup("nobody"); err != nil {
			t.Fatalf("running as root, but there is no user nobody to run steps as: %v", err)
		}
		// Outside the test's 0700 temp dir, which nobody cannot enter.
		workDir, err = os.MkdirTemp("", "godwit-e2e-nobody")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(workDir) })
		uid, _ := strconv.Atoi(nobody.Uid)
		gid, _ := strconv.Atoi(nobody.Gid)
		if err := os.Chown(workDir, uid, gid); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(workDir, 0o755)
		runAs = "  runAs: {user: nobody, workDir: " + workDir + "}\n"
	}
	policyFile := filepath.Join(root, "policy.yaml")
	policy := `apiVersion: godwit.dev/v1
kind: AgentPolicy
metadata: {name: e2e}
spec:
  commands:
    run: [{regexp: 'id -u > [a-z]+\.out'}]
  maxTimeout: 5m
  signatures:
    trustedKeys: [{name: ops, publicKeyFile: ` + keys + `.pub}]
` + runAs
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}

	token := strings.TrimSpace(h.cli(t, "token", "create", "--uses", "2", "--ttl", "10m"))

	// An agent whose policy names a user it cannot switch to refuses to start, before it enrolls,
	// with the exit code of a configuration error (which systemd does not restart).
	badPolicy := filepath.Join(root, "bad-policy.yaml")
	_ = os.WriteFile(badPolicy, []byte("apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: bad}\nspec:\n  runAs: {user: godwit-no-such-user}\n"), 0o600)
	bad := start(t, "agent bad policy", nil, "agent", "--hub", h.api, "--state-dir", filepath.Join(root, "bad"), "--name", "bad",
		"--log-format", "text", "--policy", badPolicy, "--enroll-token", token)
	if code := bad.wait(60 * time.Second); code != 2 || !strings.Contains(bad.output(), "spec.runAs.user (line 5)") {
		t.Fatalf("an agent with an impossible runAs user: exit %d, output:\n%s", code, bad.output())
	}
	if _, err := os.Stat(filepath.Join(root, "bad")); err == nil {
		t.Fatal("the agent with an impossible policy made its state dir (it may have enrolled)")
	}
	stateDir := filepath.Join(root, "agent")
	agent := start(t, "agent policy", nil, "agent", "--hub", h.api, "--state-dir", stateDir, "--name", "guarded",
		"--label", "policy=yes", "--log-format", "text", "--policy", policyFile, "--enroll-token", token)
	var digest, agentID string
	eventually(t, 60*time.Second, "the agent online with its policy digest", func() error {
		a, ok := statusByName(h.agents(t))["guarded"]
		if !ok || a.Status != wire.StatusOnline || a.System.PolicyDigest == "" {
			return fmt.Errorf("agent %+v", a)
		}
		digest, agentID = a.System.PolicyDigest, a.ID
		return nil
	})
	if m := regexp.MustCompile(`digest=(sha256:[0-9a-f]{64})`).FindStringSubmatch(agent.output()); m == nil || m[1] != digest {
		t.Fatalf("the hub shows digest %s; the agent logged %v", digest, m)
	}
	if wide := h.cli(t, "get", "agents", "-o", "wide"); !strings.Contains(wide, "POLICY") || !strings.Contains(wide, digest) {
		t.Fatalf("get agents -o wide does not show the digest:\n%s", wide)
	}

	sign := func(name, run string) string {
		p := filepath.Join(root, name+".yaml")
		if err := os.WriteFile(p, []byte(policySpec(name, run)), 0o600); err != nil {
			t.Fatal(err)
		}
		h.cli(t, "sign", "-f", p, "--key", keys+".key", "-w")
		return p
	}
	// An allowed, signed step.
	h.cli(t, "apply", "-f", sign("allowed", "id -u > allowed.out"))
	// Signed, but outside the allow-list.
	h.cli(t, "apply", "-f", sign("outside", "id -u > outside.out; touch outside.extra"))
	// Signed, then altered into a command the allow-list would take.
	altered := sign("altered", "id -u > signed.out")
	body, _ := os.ReadFile(altered)
	if err := os.WriteFile(altered, []byte(strings.Replace(string(body), "signed.out", "altered.out", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	h.cli(t, "apply", "-f", altered)
	// Not signed at all.
	unsigned := filepath.Join(root, "unsigned.yaml")
	_ = os.WriteFile(unsigned, []byte(policySpec("unsigned", "id -u > unsigned.out")), 0o600)
	h.cli(t, "apply", "-f", unsigned)

	f := &fleet{h: h, root: root}
	f.waitState(t, "allowed", "succeeded", 60*time.Second)
	out := filepath.Join(workDir, "allowed.out")
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the allowed step left no output: %v", err)
	}
	if asRoot {
		st, _ := os.Stat(out)
		if strings.TrimSpace(string(got)) != nobody.Uid || fmt.Sprint(st.Sys().(*syscall.Stat_t).Uid) != nobody.Uid {
			t.Fatalf("the step ran as uid %q (file owned by %d), want nobody (%s)", got, st.Sys().(*syscall.Stat_t).Uid, nobody.Uid)
		}
	} else {
		t.Logf("not root: the run-as-user check is skipped (only root can switch to another user); the step ran as uid %s", got)
	}

	for _, c := range []struct{ name, rule, why string }{
		{"outside", "spec.commands.run", "matches none of its 1 entries"},
		{"altered", "spec.signatures.trustedKeys", "altered after signing"},
		{"unsigned", "spec.signatures.trustedKeys", "is not signed"},
	} {
		d := f.waitState(t, c.name, "failed", 60*time.Second)
		if states := f.byName(t, d); states["guarded"] != "failed" {
			t.Errorf("%s: the agent's assignment is %q, want failed", c.name, states["guarded"])
		}
		// The event travels through the agent's outbox and the ingest, apart from the state.
		var events []wire.EventRecord
		eventually(t, 30*time.Second, c.name+"'s migration.policy.refused event", func() error {
			events = nil
			if err := json.Unmarshal([]byte(h.cli(t, "events", "--migration", c.name, "--type", wire.EventPolicyRefused, "-o", "json")), &events); err != nil {
				return err
			}
			if len(events) != 1 {
				return fmt.Errorf("%d events, want 1", len(events))
			}
			return nil
		})
		e := events[0]
		var extra struct {
			Rule         string `json:"rule"`
			PolicyDigest string `json:"policy_digest"`
		}
		_ = json.Unmarshal(e.Data.Extra, &extra)
		if e.Severity != wire.SeverityError || extra.Rule != c.rule || extra.PolicyDigest != digest ||
			!strings.Contains(e.Data.Error, "rule "+c.rule) || !strings.Contains(e.Data.Error, c.why) {
			t.Errorf("%s: event %+v extra %+v, want rule %s (%q)", c.name, e.Data, extra, c.rule, c.why)
		}
	}
	// A failover group whose onPromote the policy does not list: the agent does not join it,
	// says so once with a failover.policy.refused event, and the hook never runs.
	group := filepath.Join(root, "group.yaml")
	promoted := filepath.Join(workDir, "promoted.out")
	if err := os.WriteFile(group, []byte("apiVersion: godwit.dev/v1\nkind: FailoverGroup\nmetadata: {name: guarded}\nspec:\n  members:\n    - {agent: "+agentID+"}\n"+
		"  hooks:\n    onPromote: {command: 'touch "+promoted+"', timeout: 5s}\n"+
		"    onFence: {command: 'touch "+filepath.Join(workDir, "fenced.out")+"', timeout: 1s}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.cli(t, "apply", "-f", group)
	eventually(t, 30*time.Second, "the failover.policy.refused event", func() error {
		var events []wire.EventRecord
		if err := json.Unmarshal([]byte(h.cli(t, "events", "--type", wire.EventFailoverPolicyRefused, "-o", "json")), &events); err != nil {
			return err
		}
		if len(events) != 1 {
			return fmt.Errorf("%d events, want 1", len(events))
		}
		var extra struct{ Group, Hook, Rule string }
		_ = json.Unmarshal(events[0].Data.Extra, &extra)
		if events[0].Severity != wire.SeverityError || extra.Group != "guarded" || extra.Hook != "onPromote" || extra.Rule != "spec.commands.onPromote" {
			t.Fatalf("event %+v extra %+v, want onPromote refused by spec.commands.onPromote", events[0].Data, extra)
		}
		return nil
	})
	// The refusal is on the group's timeline (API and describe), the member's standing.
	d := h.failoverGroup(t, "guarded")
	if len(d.Timeline) == 0 || d.Timeline[0].Event != wire.EventFailoverPolicyRefused || d.Timeline[0].Member != agentID ||
		d.Timeline[0].Hook != "onPromote" || d.Timeline[0].Rule != "spec.commands.onPromote" {
		t.Errorf("the group's timeline does not start with the refusal: %+v", d.Timeline)
	}
	if out := h.cli(t, "describe", "failovergroup", "guarded"); !strings.Contains(out, "refused (hook onPromote, agent policy)") ||
		!strings.Contains(out, "onPromote refused") || !strings.Contains(out, "rule spec.commands.onPromote") {
		t.Errorf("describe does not show the refusal:\n%s", out)
	}
	// Nothing of a refused step or hook ran.
	for _, name := range []string{"outside.out", "outside.extra", "signed.out", "altered.out", "unsigned.out", "promoted.out", "fenced.out"} {
		if _, err := os.Stat(filepath.Join(workDir, name)); err == nil {
			t.Errorf("%s exists: a refused step ran", name)
		}
	}
}
