package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// resendAfter is how long a reachable agent may stay silent about a request before the hub
// writes its desired state again.
const resendAfter = 30 * time.Second

// Check compares every assignment the hub expects an agent to act on with what the agent
// reports, resolves each disagreement by its rule and returns the findings. On the leader the
// open findings are kept in the store: a finding is an event when it is first found and another
// when it is gone, however many checks find it in between (and across a restart of the hub).
func (c *Controller) Check(ctx context.Context) ([]wire.CheckFinding, error) {
	now := c.cfg.Clock.Now()
	ms, err := c.cfg.Store.ListMigrations(ctx)
	if err != nil {
		return nil, err
	}
	agents, err := c.cfg.Store.AgentStates(ctx, nil)
	if err != nil {
		return nil, err
	}
	reachable := map[string]bool{}
	for _, a := range agents {
		reachable[a.ID] = a.Status == wire.StatusOnline && !a.Revoked
	}
	c.mu.Lock()
	observed := make(map[string]wire.ObservedState, len(c.observed))
	for k, v := range c.observed {
		observed[k] = v
	}
	c.mu.Unlock()

	var findings []wire.CheckFinding
	// known[agent][migration] = the hub's latest assignment of that agent in that migration.
	known := map[string]map[string]wire.Assignment{}
	for _, m := range ms {
		as, err := c.cfg.Store.ListAssignments(ctx, m.Name)
		if err != nil {
			return nil, err
		}
		for _, a := range latestOf(as) {
			if known[a.AgentID] == nil {
				known[a.AgentID] = map[string]wire.Assignment{}
			}
			known[a.AgentID][m.Name] = a
			if a.DispatchedAt.IsZero() || !reachable[a.AgentID] || now.Sub(a.UpdatedAt) < resendAfter {
				continue
			}
			// What the hub still asks of the agent (wanted): a cancel the agent has confirmed is
			// out of its desired state, and the agent then stops reporting the finished attempt;
			// that silence is not a request never received.
			if !wanted(&a) {
				continue
			}
			o, ok := observedAbout(observed[a.AgentID], a.Migration, a.Attempt)
			switch {
			case !ok || o.Generation < a.Generation:
				c.mu.Lock()
				delete(c.written, a.AgentID) // the next pass writes its desired state again
				c.resend[a.AgentID] = true
				c.mu.Unlock()
				findings = append(findings, wire.CheckFinding{Kind: wire.FindingNeverReceived, Migration: a.Migration, AgentID: a.AgentID, Attempt: a.Attempt,
					Detail: fmt.Sprintf("asked to %s (generation %d) %s ago; the agent reports %s", a.Action, a.Generation, now.Sub(a.UpdatedAt).Round(time.Second), describeObserved(o, ok)),
					Fix:    "desired state written again"})
			case o.Generation > a.Generation:
				findings = append(findings, wire.CheckFinding{Kind: wire.FindingAgentAhead, Migration: a.Migration, AgentID: a.AgentID, Attempt: a.Attempt,
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
				findings = append(findings, wire.CheckFinding{Kind: wire.FindingUnknownWork, Migration: o.Migration, AgentID: agentID, Attempt: o.Attempt,
					Detail: fmt.Sprintf("the agent is %s in a migration the hub has no assignment for", o.State),
					Fix:    "reported; the agent finishes it from its journal"})
			case o.Attempt < a.Attempt && now.Sub(a.CreatedAt) >= resendAfter:
				// Within resendAfter of the newer attempt's creation (when the hub replaced the
				// old one) the agent may simply not have it yet. Its creation, not its last
				// change: a cancel of the newer attempt (an abort, its deadline) is no sign that
				// the agent was only just told of it.
				findings = append(findings, wire.CheckFinding{Kind: wire.FindingOrphanAttempt, Migration: o.Migration, AgentID: agentID, Attempt: o.Attempt,
					Detail: fmt.Sprintf("the agent is %s in attempt %d; the hub wants attempt %d", o.State, o.Attempt, a.Attempt),
					Fix:    "reported; the agent supersedes it when it takes the newer attempt"})
			case o.Attempt > a.Attempt:
				findings = append(findings, wire.CheckFinding{Kind: wire.FindingUnknownWork, Migration: o.Migration, AgentID: agentID, Attempt: o.Attempt,
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
	if len(findings) > 0 {
		c.Nudge()
	}
	if fence := c.fence(); fence.Epoch != 0 {
		opened, resolved, err := c.cfg.Store.ReconcileFindings(ctx, fence, findings, now)
		switch {
		case errors.Is(err, fault.ErrFenced):
			// Not leading any more: the leader's own check records them.
		case err != nil:
			return findings, err
		}
		for _, f := range opened {
			extra, _ := json.Marshal(map[string]string{"kind": f.Kind, "fix": f.Fix, "status": "found"})
			c.publish(ctx, wire.NewEvent(wire.HubSource(c.cfg.HubID), wire.EventCheckFinding, wire.SeverityWarning,
				wire.EventData{AgentID: f.AgentID, Migration: f.Migration, Attempt: f.Attempt, Message: f.Kind + ": " + f.Detail + " — " + f.Fix, Extra: extra}))
		}
		for _, f := range resolved {
			extra, _ := json.Marshal(map[string]string{"kind": f.Kind, "fix": f.Fix, "status": "resolved"})
			c.publish(ctx, wire.NewEvent(wire.HubSource(c.cfg.HubID), wire.EventCheckFinding, wire.SeverityInfo,
				wire.EventData{AgentID: f.AgentID, Migration: f.Migration, Attempt: f.Attempt, Extra: extra,
					Message: fmt.Sprintf("%s resolved after %s (found %s: %s)", f.Kind, now.Sub(f.FirstSeen).Round(time.Second), f.FirstSeen.UTC().Format(time.RFC3339), f.Detail)}))
		}
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
