package failover

import (
	"errors"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/fault"
)

const (
	agentA = "0f0e0d0c-0b0a-4908-8706-050403020100"
	agentB = "1f0e0d0c-0b0a-4908-8706-050403020100"
)

func groupYAML(extra ...string) string {
	s := "apiVersion: godwit.dev/v1\nkind: FailoverGroup\nmetadata: {name: pg}\nspec:\n" +
		"  members:\n    - {agent: " + agentA + ", priority: 10}\n    - {agent: " + agentB + "}\n" +
		"  hooks:\n    onPromote: {command: promote, timeout: 30s}\n    onFence: {command: fence, timeout: 2s}\n"
	for _, e := range extra {
		s += "  " + e + "\n"
	}
	return s
}

func parseValid(t *testing.T, doc string) *Spec {
	t.Helper()
	s, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return s
}

func TestParseDefaults(t *testing.T) {
	s := parseValid(t, groupYAML())
	if s.FailoverTimeout != DefaultFailoverTimeout || s.FailureThreshold != DefaultFailureThreshold || !s.Handover() {
		t.Fatalf("defaults not filled: %+v", s)
	}
	if s.Members[0].Priority != 10 || !s.Members[1].Eligible() {
		t.Fatalf("members: %+v", s.Members)
	}
	if got := len(s.Warnings()); got != 2 {
		t.Fatalf("warnings: %v", s.Warnings())
	}
}

func TestValidateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"timing rule", groupYAML("heartbeatTimeout: 4s", "failureThreshold: 3", "safetyMargin: 3s", "failoverTimeout: 15s"),
			"spec.failoverTimeout (line 14): must be longer than heartbeatTimeout × failureThreshold + safetyMargin = 4s × 3 + 3s = 15s"},
		{"hook without timeout", strings.Replace(groupYAML(), "{command: promote, timeout: 30s}", "{command: promote}", 1),
			"spec.hooks.onPromote.timeout (line 9): is required"},
		{"fence without command", strings.Replace(groupYAML(), "onFence: {command: fence, timeout: 2s}", "onDemote: {command: x, timeout: 1s}", 1),
			"spec.hooks.onFence.command"},
		{"fence longer than the margin", strings.Replace(groupYAML(), "fence, timeout: 2s", "fence, timeout: 10s", 1),
			"spec.hooks.onFence.timeout (line 10): must be at most safetyMargin (3s)"},
		{"agent and selector", strings.Replace(groupYAML(), "{agent: "+agentB+"}", "{agent: "+agentB+", selector: {matchLabels: {a: b}}}", 1),
			"spec.members[1] (line 7): has both agent and selector"},
		{"not an agent id", strings.Replace(groupYAML(), agentB, "db-2", 1), `spec.members[1].agent (line 7): "db-2" is not an agent id`},
		{"an agent twice", strings.Replace(groupYAML(), agentB, agentA, 1), "spec.members[1].agent (line 7): agent " + agentA + " is already spec.members[0]"},
		{"interval above timeout", groupYAML("heartbeatInterval: 5s"), "spec.heartbeatInterval (line 11): must be at most heartbeatTimeout"},
		{"negative lag", groupYAML("maxLagOnFailover: -1"), "spec.maxLagOnFailover (line 11)"},
		{"priority", strings.Replace(groupYAML(), "priority: 10", "priority: 5000", 1), "spec.members[0].priority (line 6)"},
		{"no members", "apiVersion: godwit.dev/v1\nkind: FailoverGroup\nmetadata: {name: pg}\nspec:\n  hooks:\n    onPromote: {command: p, timeout: 1s}\n    onFence: {command: f, timeout: 1s}\n",
			"spec.members (line 4): is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse([]byte(tc.doc))
			if err == nil {
				err = s.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
			if !errors.Is(err, fault.ErrInvalid) {
				t.Fatalf("error %v is not invalid", err)
			}
		})
	}
}

func TestParseRefusesUnknownField(t *testing.T) {
	_, err := Parse([]byte(groupYAML("hooks2: {}", "failovertimeout: 1s")))
	if err == nil || !strings.Contains(err.Error(), `spec.hooks2 (line 11): unknown field "hooks2"`) ||
		!strings.Contains(err.Error(), `spec.failovertimeout (line 12)`) {
		t.Fatalf("error %v", err)
	}
}

func TestHashIgnoresFormatting(t *testing.T) {
	a := parseValid(t, groupYAML())
	b := parseValid(t, groupYAML("failoverTimeout: 15s", "handoverOnStop: true", "# a comment"))
	if a.Hash() != b.Hash() {
		t.Fatal("the same group written differently hashes differently")
	}
	c := parseValid(t, groupYAML("failoverTimeout: 16s"))
	if a.Hash() == c.Hash() {
		t.Fatal("a different failoverTimeout hashes the same")
	}
}
