package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Kinds of finding, and the rule each is resolved by.
const (
	// FindingNeverReceived: the hub asked an agent (reachable for a while) for something and the
	// agent reports nothing about that request. Rule: the agent's desired state is written again.
	FindingNeverReceived = "never_received"
	// FindingOrphanAttempt: an agent is working on an attempt the hub has replaced with a newer
	// one. Rule: none needed — the agent supersedes it when it takes the newer attempt; reported.
	FindingOrphanAttempt = "orphan_attempt"
	// FindingUnknownWork: an agent is working on a migration or attempt the hub has no record of
	// (e.g. the hub's database was restored from an older backup). Rule: reported for a person;
	// the agent finishes it from its journal.
	FindingUnknownWork = "unknown_work"
	// FindingAgentAhead: the agent acted on a newer generation than the hub recorded (same
	// cause). Rule: reported; the hub keeps its own record and the next request supersedes.
	FindingAgentAhead = "agent_ahead"
)

// resendAfter is how long a reachable agent may stay silent about a request before the hub
// writes its desired state again.
const resendAfter = 30 * time.Second

// Finding is one disagreement between the hub's records and an agent's observed state.
type Finding struct {
	Kind      string `json:"kind"`
	Migration string `json:"migration"`
	AgentID   string `json:"agent_id"`
	Attempt   int    `json:"attempt"`
	Detail    string `json:"detail"`
	Fix       string `json:"fix"`
}

// Check compares every assignment the hub expects an agent to act on with what the agent
// reports, resolves each disagreement by its rule, and records each as an event.
func (c *Controller) Check(ctx context.Context) ([]Finding, error) {
	now := c.cfg.Clock.Now()
	ms, err := c.cfg.Store.ListMigrations(ctx)
	if err != nil {
		return nil, err
	}
	agents, err := c.cfg.Store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	reachable := map[string]bool{}
	for _, a := range agents {
		reachable[a.ID] = a.Status == wire.StatusOnline && a.RevokedAt == nil
	}
	c.mu.Lock()
	observed := make(map[string]wire.ObservedState, len(c.observed))
	for k, v := range c.observed {
		observed[k] = v
	}
	c.mu.Unlock()

	var findings []Finding
	// known[agent][migration] = the hub's latest assignment of that agent in that migration.
	known := map[string]map[string]store.Assignment{}
	for _, m := range ms {
		as, err := c.cfg.Store.ListAssignments(ctx, m.Name)
		if err != nil {
			return nil, err
		}
		for _, a := range latestOf(as) {
			if known[a.AgentID] == nil {
				known[a.AgentID] = map[string]store.Assignment{}
			}
			known[a.AgentID][m.Name] = a
			if a.DispatchedAt.IsZero() || !reachable[a.AgentID] || now.Sub(a.UpdatedAt) < resendAfter {
				continue
			}
			expects := !assignmentSettled(a.State) || a.Action == wire.ActionCancel
			if !expects {
				continue
			}
			o, ok := observedAbout(observed[a.AgentID], a.Migration, a.Attempt)
			switch {
			case !ok || o.Generation < a.Generation:
				c.mu.Lock()
				delete(c.written, a.AgentID) // the next pass writes its desired state again
				c.mu.Unlock()
				findings = append(findings, Finding{Kind: FindingNeverReceived, Migration: a.Migration, AgentID: a.AgentID, Attempt: a.Attempt,
					Detail: fmt.Sprintf("asked to %s (generation %d) %s ago; the agent reports %s", a.Action, a.Generation, now.Sub(a.UpdatedAt).Round(time.Second), describeObserved(o, ok)),
					Fix:    "desired state written again"})
			case o.Generation > a.Generation:
				findings = append(findings, Finding{Kind: FindingAgentAhead, Migration: a.Migration, AgentID: a.AgentID, Attempt: a.Attempt,
					Detail: fmt.Sprintf("the agent acted on generation %d, the hub recorded %d", o.Generation, a.Generation),
					Fix:    "reported; the hub's next request supersedes"})
			}
		}
	}
	for agentID, doc := range observed {
		for _, o := range doc.Assignments {
			if assignmentSettled(o.State) {
				continue
			}
			a, ok := known[agentID][o.Migration]
			switch {
			case !ok:
				findings = append(findings, Finding{Kind: FindingUnknownWork, Migration: o.Migration, AgentID: agentID, Attempt: o.Attempt,
					Detail: fmt.Sprintf("the agent is %s in a migration the hub has no assignment for", o.State),
					Fix:    "reported; the agent finishes it from its journal"})
			case o.Attempt < a.Attempt:
				findings = append(findings, Finding{Kind: FindingOrphanAttempt, Migration: o.Migration, AgentID: agentID, Attempt: o.Attempt,
					Detail: fmt.Sprintf("the agent is %s in attempt %d; the hub wants attempt %d", o.State, o.Attempt, a.Attempt),
					Fix:    "reported; the agent supersedes it when it takes the newer attempt"})
			case o.Attempt > a.Attempt:
				findings = append(findings, Finding{Kind: FindingUnknownWork, Migration: o.Migration, AgentID: agentID, Attempt: o.Attempt,
					Detail: fmt.Sprintf("the agent is %s in attempt %d, newer than any the hub recorded (%d)", o.State, o.Attempt, a.Attempt),
					Fix:    "reported; the agent finishes it from its journal"})
			}
		}
	}
	sort.Slice(findings, func(i, j int) bool {
		if findings[i].Migration != findings[j].Migration {
			return findings[i].Migration < findings[j].Migration
		}
		return findings[i].AgentID < findings[j].AgentID
	})
	for _, f := range findings {
		extra, _ := json.Marshal(map[string]string{"kind": f.Kind, "fix": f.Fix})
		c.publish(ctx, wire.NewEvent(wire.HubSource(c.cfg.HubID), wire.EventCheckFinding, wire.SeverityWarning,
			wire.EventData{AgentID: f.AgentID, Migration: f.Migration, Attempt: f.Attempt, Message: f.Kind + ": " + f.Detail + " — " + f.Fix, Extra: extra}))
	}
	if len(findings) > 0 {
		c.Nudge()
	}
	return findings, nil
}

func observedAbout(doc wire.ObservedState, migration string, attempt int) (wire.ObservedAssignment, bool) {
	for _, o := range doc.Assignments {
		if o.Migration == migration && o.Attempt == attempt {
			return o, true
		}
	}
	return wire.ObservedAssignment{}, false
}

func describeObserved(o wire.ObservedAssignment, ok bool) string {
	if !ok {
		return "nothing about it"
	}
	return fmt.Sprintf("%s at generation %d", o.State, o.Generation)
}
