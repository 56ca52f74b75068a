package failover

import (
	"errors"
	"fmt"

	"godwit.dev/godwit/internal/fault"
)

// Settings are one member agent's effective priority and eligibility (docs/failover.md,
// "Members and their settings").
type Settings struct {
	Agent      string `json:"agent"`
	Priority   int    `json:"priority"`
	NoFailover bool   `json:"noFailover"`
	// Entry is the index in spec.members of the entry that took the agent in; -1 when not known
	// (SettingsOf without the hub's resolution).
	Entry int `json:"entry"`
}

// Eligible reports whether the member may be promoted.
func (m Settings) Eligible() bool { return !m.NoFailover }

// Candidate is an enrolled, unrevoked agent that a member entry may name or select.
type Candidate struct {
	ID     string
	Labels map[string]string
}

// Resolve is the one rule that turns the member entries into member agents with their
// settings: an entry with an agent id takes in that agent, a selector entry every candidate
// whose labels it matches, and each member agent takes the priority and noFailover of the one
// entry that took it in. An agent taken in twice — by its id and a selector, or by two
// selectors — is refused, naming the later entry's field and the earlier one: settings are never
// merged from two entries, so no entry's noFailover can be outvoted. Also refused, naming the
// field: an id that is no candidate, a selector that matches none, and an agent for which
// owner returns a group name (an agent belongs to one group; owner may be nil). Members come in
// the spec's order, a selector's in the candidates' order.
func (s *Spec) Resolve(cands []Candidate, owner func(id string) string) ([]Settings, error) {
	known := map[string]bool{}
	for _, c := range cands {
		known[c.ID] = true
	}
	var (
		out  []Settings
		errs []error
		from = map[string]string{}
	)
	fail := func(field, format string, args ...any) {
		errs = append(errs, &fault.FieldError{Field: field, Line: s.Line(field), Message: fmt.Sprintf(format, args...)})
	}
	add := func(field, id string, entry int, m Member) {
		switch {
		case from[id] != "":
			fail(field, "agent %s is already a member through %s: an agent takes its priority and noFailover from one entry (narrow the selector, or list the agent by id only)", id, from[id])
		case owner != nil && owner(id) != "":
			fail(field, "agent %s is already a member of failover group %s: an agent belongs to one group (remove it there first)", id, owner(id))
		default:
			from[id] = field
			out = append(out, Settings{Agent: id, Priority: m.Priority, NoFailover: !m.Eligible(), Entry: entry})
		}
	}
	for i, m := range s.Members {
		if m.Agent != "" {
			field := fmt.Sprintf("spec.members[%d].agent", i)
			if !known[m.Agent] {
				fail(field, "unknown agent %s: no enrolled, unrevoked agent has this id (godwit get agents)", m.Agent)
				continue
			}
			add(field, m.Agent, i, m)
			continue
		}
		field := fmt.Sprintf("spec.members[%d].selector", i)
		n := 0
		for _, c := range cands {
			if m.Selector.Matches(c.Labels) {
				add(field, c.ID, i, m)
				n++
			}
		}
		if n == 0 {
			fail(field, "matches no enrolled agent")
		}
	}
	return out, errors.Join(errs...)
}

// MemberSettings are the member agents whose settings the spec knows: the hub's resolution
// (Resolved) when it has one; otherwise — a document run by `godwit failover member`, or a group
// stored before the hub resolved members — only the entries naming an agent id.
func (c Canonical) MemberSettings() []Settings {
	if c.Resolved != nil {
		return c.Resolved
	}
	var out []Settings
	for i, m := range c.Members {
		if m.Agent != "" {
			out = append(out, Settings{Agent: m.Agent, Priority: m.Priority, NoFailover: m.NoFailover, Entry: i})
		}
	}
	return out
}

// SettingsOf returns agent id's settings, false when it is no member. Without the hub's
// resolution an agent not named by id can only have joined through a selector entry, and which
// one is not known here: it takes the most cautious of them — noFailover if any selector entry
// says so, the lowest priority among them — so that it is never promoted against an entry's
// noFailover.
func (c Canonical) SettingsOf(id string) (Settings, bool) {
	for _, m := range c.MemberSettings() {
		if m.Agent == id {
			return m, true
		}
	}
	if c.Resolved != nil {
		return Settings{}, false
	}
	out, found := Settings{Agent: id, Priority: MaxPriority, Entry: -1}, false
	for _, m := range c.Members {
		if m.Selector == nil {
			continue
		}
		found = true
		out.Priority = min(out.Priority, m.Priority)
		out.NoFailover = out.NoFailover || m.NoFailover
	}
	return out, found
}
