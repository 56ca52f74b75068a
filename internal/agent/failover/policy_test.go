package failover

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/failover/machine"
	"godwit.dev/godwit/internal/agent/policy"
	spec "godwit.dev/godwit/internal/failover"
	"godwit.dev/godwit/internal/wire"
)

func loadPolicy(t *testing.T, doc string) *policy.Policy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// touchSpec is a one-member group whose hooks each create a file named for the hook in dir.
func touchSpec(dir string) spec.Canonical {
	hook := func(name string) spec.CanonicalHook {
		return spec.CanonicalHook{Command: "touch " + filepath.Join(dir, name), TimeoutMS: 2000}
	}
	return spec.Canonical{Name: "pg", Members: []spec.CanonicalMember{{Agent: idA, Priority: 10}},
		HeartbeatInterval: 100, HeartbeatTimeout: 200, FailureThreshold: 3, FailoverTimeout: 1200, SafetyMargin: 400,
		RecoveryThreshold: 2, HandoverOnStop: true,
		Hooks: map[string]spec.CanonicalHook{"onPromote": hook("onPromote"), "onFence": hook("onFence"), "onDemote": hook("onDemote")}}
}

// A policy that refuses one hook of a group keeps the member from starting at all: New answers
// a *HookRefused naming the hook and the rule, and no hook of the group runs. A policy that
// allows the hooks lets the member promote and run onPromote; one whose rule changed after New
// (the check right before a hook runs) reports the hook refused and does not run it.
func TestPolicyGatesHooks(t *testing.T) {
	dir := t.TempDir()
	s := touchSpec(dir)
	head := "apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: db}\nspec:\n  commands:\n"
	allowAll := "    onPromote: [{prefix: \"touch \"}]\n    onFence: [{prefix: \"touch \"}]\n    onDemote: [{prefix: \"touch \"}]\n"

	for name, doc := range map[string]string{
		"a hook kind left out": head + "    onPromote: [{prefix: \"touch \"}]\n    onFence: [{prefix: \"touch \"}]\n",
		"maxTimeout":           head + allowAll + "  maxTimeout: 1s\n",
	} {
		_, err := New(Config{Spec: s, Self: idA, KV: nil, Policy: loadPolicy(t, doc)})
		var ref *HookRefused
		var pref *policy.Refusal
		if !errors.As(err, &ref) || !errors.As(err, &pref) || ref.Group != "pg" || ref.Hook == "" {
			t.Fatalf("%s: New err = %v, want a *HookRefused", name, err)
		}
		if want := "spec.commands.onDemote"; name == "a hook kind left out" && (ref.Hook != "onDemote" || pref.Rule != want) {
			t.Fatalf("%s: refused hook %s by %s, want onDemote by %s", name, ref.Hook, pref.Rule, want)
		}
		if name == "maxTimeout" && pref.Rule != "spec.maxTimeout" {
			t.Fatalf("maxTimeout: rule %s", pref.Rule)
		}
		if !strings.Contains(err.Error(), "hook "+ref.Hook) || !strings.Contains(err.Error(), pref.Rule) {
			t.Fatalf("%s: the error names neither hook nor rule: %v", name, err)
		}
	}

	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Fatalf("a refused group ran hooks: %v", files)
	}

	// Allowed: the member promotes and its onPromote runs.
	url := startNATS(t)
	kv := bucket(t, url, "pg")
	ev := &events{}
	allowed := loadPolicy(t, head+allowAll)
	m, err := New(Config{Spec: s, Self: idA, KV: kv, Report: ev.add, Policy: allowed})
	if err != nil {
		t.Fatalf("an allowed group refused: %v", err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "onPromote ran", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dir, "onPromote"))
		return err == nil
	})
	if err := m.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}

	// Checked again right before a hook runs: the member was built under one policy and the
	// hook meets another (as if the spec in hand had changed); it reports refused, runs nothing.
	if err := os.Remove(filepath.Join(dir, "onPromote")); err != nil {
		t.Fatal(err)
	}
	kv2 := bucket(t, url, "pg2")
	s2 := s
	s2.Name = "pg2"
	m2, err := New(Config{Spec: s2, Self: idA, KV: kv2, Report: ev.add, Policy: allowed})
	if err != nil {
		t.Fatal(err)
	}
	m2.cfg.Policy = loadPolicy(t, head+"    onFence: [{prefix: \"touch \"}]\n    onDemote: [{prefix: \"touch \"}]\n")
	if err := m2.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m2.Stop(t.Context()) }()
	eventually(t, "onPromote reported refused", 10*time.Second, func() bool {
		return ev.count(func(tr wire.FailoverTransition) bool {
			return tr.Group == "pg2" && tr.Hook == machine.HookOnPromote && tr.HookResult == "refused" &&
				strings.Contains(tr.Reason, "spec.commands.onPromote")
		}) > 0
	})
	if _, err := os.Stat(filepath.Join(dir, "onPromote")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused onPromote ran: stat err = %v", err)
	}
}
