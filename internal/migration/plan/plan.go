// Package plan turns a migration spec and the fleet into an ordered list of batches and a
// failure budget. It is pure: the same spec and the same agents always give the same plan, so a
// controller that restarts recomputes exactly the plan it was following.
package plan

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/wire"
)

// Plan is the rollout of one migration over the agents its selector matched.
type Plan struct {
	// Matched is the number of selected agents (revoked agents are never selected).
	Matched int
	// Batches holds agent ids in rollout order; batch 0 is the canary when the spec has one.
	// Every matched agent is in exactly one batch. Empty (not nil) when nothing matched.
	Batches [][]string
	// Warnings are worth showing to the operator but do not stop the migration.
	Warnings []string
}

// WarnNoMatch is the warning for a selector that matches no agent.
const WarnNoMatch = "selector matches no agents"

// Batches selects the agents m targets and splits them into batches:
//
//   - selection: Selector.Matches on the labels, revoked agents (RevokedAt set) excluded;
//   - order: by name, then id, so the plan does not depend on the order agents are listed in;
//   - batch 0 is the canary when rollout.canary > 0, capped at the number of matched agents;
//   - then batches of rollout.batchSize: a count, or a percentage of all matched agents (canary
//     included) rounded up, at least 1. The last batch takes what is left.
//
// Offline agents are selected (their assignments wait for them, within the deadline policy) and
// reported in a warning. A selector that matches nothing is a warning, not an error. The spec
// must validate; an agent without an id or an id listed twice is an error.
func Batches(m *spec.Migration, agents []wire.Agent) (Plan, error) {
	if m == nil {
		return Plan{}, fmt.Errorf("plan: no migration: %w", fault.ErrInvalid)
	}
	if err := m.Validate(); err != nil {
		return Plan{}, fmt.Errorf("plan: %w", err)
	}
	seen := make(map[string]bool, len(agents))
	var selected []wire.Agent
	revoked, offline := 0, 0
	for _, a := range agents {
		if a.ID == "" {
			return Plan{}, fmt.Errorf("plan: agent %q has no id: %w", a.Name, fault.ErrInvalid)
		}
		if seen[a.ID] {
			return Plan{}, fmt.Errorf("plan: agent id %q listed twice: %w", a.ID, fault.ErrInvalid)
		}
		seen[a.ID] = true
		if !m.Spec.Selector.Matches(a.Labels) {
			continue
		}
		if a.RevokedAt != nil {
			revoked++
			continue
		}
		if a.Status == wire.StatusOffline {
			offline++
		}
		selected = append(selected, a)
	}
	slices.SortFunc(selected, func(a, b wire.Agent) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	ids := make([]string, len(selected))
	for i, a := range selected {
		ids[i] = a.ID
	}

	p := Plan{Matched: len(ids), Batches: [][]string{}}
	r := m.Spec.Rollout
	next := 0
	if c := min(r.Canary, len(ids)); c > 0 {
		p.Batches = append(p.Batches, ids[:c:c])
		next = c
	}
	size := r.BatchSize.Of(len(ids))
	for next < len(ids) {
		end := min(next+size, len(ids))
		// Full slice expressions: appending to one batch must not overwrite the next.
		p.Batches = append(p.Batches, ids[next:end:end])
		next = end
	}

	switch {
	case p.Matched == 0:
		p.Warnings = append(p.Warnings, WarnNoMatch)
	case r.Canary >= p.Matched:
		p.Warnings = append(p.Warnings, fmt.Sprintf("canary (%d) covers all %d matched agents: the whole rollout is the canary batch", r.Canary, p.Matched))
	}
	if offline > 0 {
		p.Warnings = append(p.Warnings, fmt.Sprintf("%d of %d matched agents %s offline: their assignments wait for them", offline, p.Matched, plural(offline, "is", "are")))
	}
	if revoked > 0 {
		p.Warnings = append(p.Warnings, fmt.Sprintf("%d revoked %s the selector and %s left out", revoked, plural(revoked, "agent matches", "agents match"), plural(revoked, "is", "are")))
	}
	return p, nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// FailureBudget is the number of failed agents the rollout tolerates: rollout.maxFailures, or
// with successThreshold the agents that may fail while the threshold still holds, i.e. Matched
// minus ceil(threshold% × Matched). Succeeded and not_needed count as success; failed, timed_out
// and rollback_failed as failure; a superseded attempt counts through the attempt replacing it.
func (p Plan) FailureBudget(m *spec.Migration) int {
	r := m.Spec.Rollout
	if r.SuccessThreshold > 0 {
		need := (p.Matched*r.SuccessThreshold + 99) / 100
		return p.Matched - need
	}
	if r.MaxFailures != nil {
		return *r.MaxFailures
	}
	return 0
}

// Exceeded reports whether failures exhaust the budget, which triggers rollout.onFailure. The
// budget itself is allowed: with maxFailures: 2, the third failure exceeds it.
func (p Plan) Exceeded(m *spec.Migration, failures int) bool {
	return failures > p.FailureBudget(m)
}
