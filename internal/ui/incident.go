package ui

// What a migration page keeps after the migration ended (who failed, at which step, why, and
// why the migration did what it did), and what an operator is warned about before approving the
// next batch.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"godwit.dev/godwit/internal/errline"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

const (
	failedAgentsShown = 50  // rows of the failed-agents table
	decisionsShown    = 20  // state changes and operator actions listed
	outputLinesShown  = 6   // last lines of output beside a headline
	problemsShown     = 10  // recent errors and warnings of a migration
	failureEventsRead = 200 // newest error events of a migration read for their output
)

// decision is a state change of a migration or an operator action on it.
type decision struct {
	Time    time.Time
	From    string
	To      string
	Action  string // operator action ("" for the controller's)
	Actor   string
	Message string
	Kind    string // budget, timeout, operator, or "" (the rollout moved on)
}

// outcome says what the migration did last and why, kept on the page after it ended: Last is
// the newest decision that changed its course, Cause the newest one made by the failure budget,
// a deadline or a person (often the same; after a failed rollback, Last is "rolling_back →
// failed" and Cause the budget that started the rollback).
type outcome struct {
	Last, Cause *decision
}

// why is a decision's reason without the "migration x: a → b: " its message starts with.
func (d decision) Why() string {
	if _, after, ok := strings.Cut(d.Message, ": "+d.From+" → "+d.To+": "); ok {
		return after
	}
	return d.Message
}

// failedAgent is one agent of the failed-agents table.
type failedAgent struct {
	ID, Name   string
	Liveness   badge
	Attention  bool // its rollback failed: the node may be half changed
	State      string
	Batch      int
	Attempt    int
	Step       string
	Headline   string // the cause (errline.Headline of the failure and its output)
	Rollback   string // the rollback error when the rollback failed
	OutputTail []string
	EventID    string // the failure event, for its details
}

// decisionKind sorts a decision by what made it: the failure budget, a deadline, or a person.
func decisionKind(action, text string) string {
	if action != "" {
		return "operator"
	}
	t := strings.ToLower(text)
	switch {
	case strings.Contains(t, "failure budget"):
		return "budget"
	case strings.Contains(t, "deadline") || strings.Contains(t, "timed out") || strings.Contains(t, "timeout"):
		return "timeout"
	case strings.Contains(t, "by operator"):
		return "operator"
	}
	return ""
}

// decisive reports whether a decision changed the course of a migration (not a batch moving on).
func (d decision) decisive() bool {
	switch d.Action {
	case string(wire.MigrationRollback), string(wire.MigrationAbort), string(wire.MigrationPause), string(wire.MigrationRetry):
		return true
	}
	switch d.To {
	case "rolling_back", "failed", "cancelled", "paused", "partially_succeeded":
		return true
	}
	return false
}

// decisions reads a migration's state changes and operator actions, newest first.
func (s *Server) decisions(ctx context.Context, name string) ([]decision, error) {
	evs, _, err := s.cfg.Store.QueryEvents(ctx, store.EventQuery{Migration: name, HubOnly: true,
		Types: []string{wire.EventMigrationStateChanged, wire.EventOperatorAction}, Limit: decisionsShown})
	if err != nil {
		return nil, err
	}
	out := make([]decision, 0, len(evs))
	for _, e := range evs {
		var extra struct{ From, To, Action, Actor string }
		_ = json.Unmarshal(e.Data.Extra, &extra) // best effort: a decision without them is still listed
		d := decision{Time: e.Time, From: extra.From, To: extra.To, Message: e.Data.Message}
		if e.Type == wire.EventOperatorAction {
			d.Action, d.Actor = extra.Action, extra.Actor
		}
		d.Kind = decisionKind(d.Action, d.Message)
		out = append(out, d)
	}
	return out, nil
}

// outcomeOf picks the newest decisive decision and the newest one with a cause; without
// events (they were deleted), the migration's reason may still name the cause.
func outcomeOf(ds []decision, reason string) *outcome {
	o := &outcome{}
	for i := range ds {
		d := &ds[i]
		if o.Last == nil && d.decisive() {
			o.Last = d
		}
		if o.Cause == nil && d.Kind != "" && d.decisive() {
			o.Cause = d
		}
	}
	if o.Cause == nil {
		if k := decisionKind("", reason); k != "" {
			o.Cause = &decision{Kind: k, Message: reason}
		}
	}
	if o.Last == nil && o.Cause == nil {
		return nil
	}
	if o.Last == o.Cause {
		o.Last = nil
	}
	return o
}

// failureEvents maps agents to their newest failure events of the migration, from the newest
// error events: runs (detection, execution, verification) and rollbacks apart.
func (s *Server) failureEvents(ctx context.Context, name string) (runs, rollbacks map[string]store.StoredEvent, err error) {
	evs, _, err := s.cfg.Store.QueryEvents(ctx, store.EventQuery{Migration: name, Severities: []string{wire.SeverityError},
		Types: []string{"migration.*"}, Limit: failureEventsRead})
	if err != nil {
		return nil, nil, err
	}
	runs, rollbacks = map[string]store.StoredEvent{}, map[string]store.StoredEvent{}
	for _, e := range evs {
		id := e.Data.AgentID
		if id == "" || e.Type == wire.EventMigrationStateChanged {
			continue
		}
		m := runs
		if strings.HasPrefix(e.Type, "migration.rollback.") {
			m = rollbacks
		}
		if _, ok := m[id]; !ok {
			m[id] = e
		}
	}
	return runs, rollbacks, nil
}

// hadFailure reports whether an attempt failed (its failure is kept after a rollback).
func hadFailure(a *wire.Assignment) bool {
	switch a.State {
	case "failed", "timed_out", "rollback_failed":
		return true
	}
	return a.Failure != ""
}

// approvalWarnings says what is wrong before the next batch is approved: agents whose rollback
// failed or that failed (of latest, the failed latest attempts, with their agents in states), and
// the agents of the next batch that are not online (notOnline, in the order they are named).
func approvalWarnings(latest []*wire.Assignment, notOnline []store.AgentState, next int, states map[string]store.AgentState, fleetBroken map[string][]string) []string {
	var broken, failed, away []string
	seen := map[string]bool{}
	for _, a := range latest {
		if a.State == "rollback_failed" {
			seen[a.AgentID] = true
		}
	}
	// Agents whose rollback failed in another migration are as broken.
	var others []string
	for id := range fleetBroken {
		if !seen[id] {
			others = append(others, id)
		}
	}
	slices.Sort(others)
	for _, id := range others {
		name := id
		if st, ok := states[id]; ok {
			name = st.Name
		}
		broken = append(broken, name+" ("+strings.Join(fleetBroken[id], ", ")+")")
	}
	for _, a := range latest {
		name := a.AgentID
		if st, known := states[a.AgentID]; known {
			name = st.Name
		}
		switch {
		case a.State == "rollback_failed":
			broken = append(broken, name)
		case a.State == "failed" || a.State == "timed_out":
			failed = append(failed, name)
		}
	}
	for _, st := range notOnline {
		status := st.Status
		if st.Revoked {
			status = "revoked"
		}
		away = append(away, st.Name+" ("+status+")")
	}
	var out []string
	if len(broken) > 0 {
		out = append(out, fmt.Sprintf("%s whose rollback failed and need%s attention: %s", plural(len(broken), "agent"), sIf(len(broken) == 1), names(broken)))
	}
	if len(failed) > 0 {
		out = append(out, fmt.Sprintf("%s failed: %s", plural(len(failed), "agent"), names(failed)))
	}
	if len(away) > 0 {
		out = append(out, fmt.Sprintf("%s of batch %d not online: %s", plural(len(away), "agent"), next+1, names(away)))
	}
	return out
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func sIf(one bool) string {
	if one {
		return "s"
	}
	return ""
}

// names lists the first few names of a list.
func names(ns []string) string {
	const shown = 5
	if len(ns) <= shown {
		return strings.Join(ns, ", ")
	}
	return strings.Join(ns[:shown], ", ") + fmt.Sprintf(" and %d more", len(ns)-shown)
}

// headlineOf is the headline and output tail of an attempt's failure: its failure text (or,
// when its rollback failed, the rollback error) with the output of its failure event.
func headlineOf(text string, ev *store.StoredEvent) (string, []string) {
	if ev == nil {
		return errline.Headline(text, ""), nil
	}
	return errline.Headline(firstNonEmpty(text, ev.Data.Error), ev.Data.OutputTail), errline.Tail(ev.Data.OutputTail, outputLinesShown)
}

// agentStates looks up agents by id (each once).
func (s *Server) agentStates(ctx context.Context, ids []string) (map[string]store.AgentState, error) {
	seen := make(map[string]bool, len(ids))
	uniq := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != "" && !seen[id] {
			seen[id] = true
			uniq = append(uniq, id)
		}
	}
	out := make(map[string]store.AgentState, len(uniq))
	if len(uniq) == 0 {
		return out, nil
	}
	as, err := s.cfg.Store.AgentStates(ctx, uniq)
	if err != nil {
		return nil, err
	}
	for _, a := range as {
		out[a.ID] = a
	}
	return out, nil
}

// regroup keys failure groups by the signature of their headline: the controller groups by the
// error text alone, and an older agent's text quotes the last line of stderr, often a hint, where
// the output tail has the cause. Groups whose causes are the same are merged.
func regroup(fs []failureView) []failureView {
	var out []failureView
	at := map[[2]string]int{}
	for _, f := range fs {
		f.Signature = errline.Signature(errline.Quoted(f.Headline))
		k := [2]string{f.Step, f.Signature}
		i, ok := at[k]
		if !ok {
			at[k] = len(out)
			out = append(out, f)
			continue
		}
		g := &out[i]
		g.Count += f.Count
		g.Agents = append(g.Agents, f.Agents...)
		for _, a := range f.Shown {
			if len(g.Shown) < groupAgentsShown {
				g.Shown = append(g.Shown, a)
			}
		}
		g.More = max(0, len(g.Agents)-len(g.Shown))
	}
	slices.SortStableFunc(out, func(a, b failureView) int { return b.Count - a.Count })
	return out
}
