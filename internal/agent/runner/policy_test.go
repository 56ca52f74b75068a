package runner

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/agent/policy"
	"godwit.dev/godwit/internal/specsig"
	"godwit.dev/godwit/internal/wire"
)

func loadPolicy(t *testing.T, spec string) *policy.Policy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: test}\nspec:\n"+spec), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func refusal(t *testing.T, e wire.Event) (rule string) {
	t.Helper()
	var extra struct {
		Rule         string `json:"rule"`
		Policy       string `json:"policy"`
		PolicyDigest string `json:"policy_digest"`
	}
	if err := json.Unmarshal(e.Data.Extra, &extra); err != nil {
		t.Fatal(err)
	}
	if e.Severity != wire.SeverityError || extra.Policy != "test" || !strings.HasPrefix(extra.PolicyDigest, "sha256:") ||
		!strings.Contains(e.Data.Error, extra.Rule) {
		t.Fatalf("refusal event %+v extra %+v", e, extra)
	}
	return extra.Rule
}

func TestPolicyRefusesOutsideAllowList(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.policy = loadPolicy(t, "  commands:\n    run: [{prefix: 'touch '}]\n    rollback: [{exact: 'rm -f a'}]\n")
	b.restart()
	s0 := step("s0", "touch a")
	s0.Rollback = "rm -f a"
	s1 := step("s1", "touch b; touch c")
	s1.Rollback = "rm -f b"
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s0, s1)))
	got := b.waitState("m1", 1, stateFailed)
	e := b.waitEvent("m1", wire.EventPolicyRefused)
	if rule := refusal(t, e); rule != "spec.commands.run" || e.Data.Step != "s1" {
		t.Fatalf("rule %q step %q", rule, e.Data.Step)
	}
	// The allowed step ran; nothing of the refused one did, and it is not counted as applied.
	if !b.exists("a") || b.exists("b") || b.exists("c") || !slices.Equal(got.Applied, []int{0}) || got.Step != 1 ||
		!strings.Contains(got.Error, "spec.commands.run") {
		t.Fatalf("observed %+v", got)
	}
	// The rollback of what was applied is allowed and runs.
	b.r.Desired(desired(1, assignment("m1", 1, 2, wire.ActionRollback, s0, s1)))
	b.waitState("m1", 1, stateRolledBack)
	if b.exists("a") {
		t.Fatal("the allowed rollback did not run")
	}

	// A rollback command outside the list: rollback_failed, resumable.
	s0.Rollback = "rm a"
	b.r.Desired(desired(1, assignment("m2", 1, 1, wire.ActionApply, s0)))
	b.waitState("m2", 1, stateSucceeded)
	b.r.Desired(desired(1, assignment("m2", 1, 2, wire.ActionRollback, s0)))
	b.waitState("m2", 1, stateRollbackFailed)
	if rule := refusal(t, b.waitEvent("m2", wire.EventPolicyRefused)); rule != "spec.commands.rollback" || !b.exists("a") {
		t.Fatalf("rule %q", rule)
	}

	// No detect is allowed at all.
	s3 := step("s3", "touch d")
	s3.Detect = "exit 0"
	b.r.Desired(desired(1, assignment("m3", 1, 1, wire.ActionApply, s3)))
	b.waitState("m3", 1, stateFailed)
	if rule := refusal(t, b.waitEvent("m3", wire.EventPolicyRefused)); rule != "spec.commands.detect" || b.exists("d") {
		t.Fatalf("rule %q", rule)
	}
}

func TestPolicySignedSteps(t *testing.T) {
	t.Parallel()
	pub, priv, _ := specsig.GenerateKey()
	pemKey, _ := specsig.MarshalPublicKey(pub)
	keyFile := filepath.Join(t.TempDir(), "ops.pub")
	if err := os.WriteFile(keyFile, pemKey, 0o644); err != nil {
		t.Fatal(err)
	}
	b := setup(t)
	b.policy = loadPolicy(t, "  signatures:\n    trustedKeys: [{name: ops, publicKeyFile: "+keyFile+"}]\n")
	b.restart()

	steps := []wire.StepSpec{step("s0", "touch signed")}
	signed := assignment("m1", 1, 1, wire.ActionApply, steps...)
	signed.Signature = specsig.Sign(priv, "m1", steps).String()
	b.r.Desired(desired(1, signed))
	b.waitState("m1", 1, stateSucceeded)
	if !b.exists("signed") {
		t.Fatal("the signed step did not run")
	}

	// The same signature over altered steps, and no signature at all.
	altered := assignment("m2", 1, 1, wire.ActionApply, step("s0", "touch altered"))
	altered.Signature = specsig.Sign(priv, "m2", []wire.StepSpec{step("s0", "touch signed-2")}).String()
	b.r.Desired(desired(1, altered, assignment("m3", 1, 1, wire.ActionApply, step("s0", "touch unsigned"))))
	b.waitState("m2", 1, stateFailed)
	b.waitState("m3", 1, stateFailed)
	for m, want := range map[string]error{"m2": specsig.ErrMismatch, "m3": specsig.ErrUnsigned} {
		e := b.waitEvent(m, wire.EventPolicyRefused)
		if rule := refusal(t, e); rule != "spec.signatures.trustedKeys" {
			t.Fatalf("%s: rule %q", m, rule)
		}
		if m == "m2" && !strings.Contains(e.Data.Error, "altered") || m == "m3" && !strings.Contains(e.Data.Error, "not signed") {
			t.Fatalf("%s: error %q, want %v", m, e.Data.Error, want)
		}
	}
	if b.exists("altered") || b.exists("unsigned") {
		t.Fatal("a refused step ran")
	}
}

// The detect asked about a rollback command that a cancel stopped belongs to the rollback: when
// the policy refuses it, the assignment ends rollback_failed (resumable), not failed, and the
// rollback command is still without a result, so the resumed rollback asks detect again.
func TestRefusedDetectOfAStoppedRollbackEndsRollbackFailed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("s0", "touch applied-0")
	s.Detect = "if [ -f applied-0 ]; then exit 1; fi"
	s.Rollback = `echo r >> rb-0; [ "$(wc -l < rb-0)" -ge 2 ] || { touch rolling-0; sleep 30; }; rm -f applied-0`
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s)))
	b.waitState("m1", 1, stateSucceeded)
	b.cancelRollback("m1", 2, "rolling-0", s)

	b.policy = loadPolicy(t, "  commands:\n    run: [{prefix: 'touch '}]\n    rollback: [{prefix: 'echo r '}]\n")
	b.restart()
	b.r.Desired(desired(1, assignment("m1", 1, 4, wire.ActionRollback, s)))
	if rule := refusal(t, b.waitEvent("m1", wire.EventPolicyRefused)); rule != "spec.commands.detect" {
		t.Fatalf("rule %q", rule)
	}
	if got, _ := b.observedOf("m1"); got.State != stateRollbackFailed || got.Generation != 4 || b.read("rb-0") != "r\n" {
		t.Fatalf("observed %+v rb-0 %q: want rollback_failed at generation 4, the rollback not run", got, b.read("rb-0"))
	}

	b.policy = nil
	b.restart()
	b.r.Desired(desired(1, assignment("m1", 1, 5, wire.ActionRollback, s)))
	got := b.waitState("m1", 1, stateRolledBack)
	if b.read("rb-0") != "r\nr\n" || b.exists("applied-0") || !slices.Equal(got.RolledBack, []int{0}) {
		t.Fatalf("rb-0 %q observed %+v", b.read("rb-0"), got)
	}
	if !b.said("m1", wire.EventMigrationStepStarted, "still applied") {
		t.Fatalf("events %v: want the resumed rollback to ask detect first", types(b.sinks.eventsFor("m1")))
	}
}
