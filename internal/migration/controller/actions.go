package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/plan"
	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/migration/state"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// ApplyResult is what `godwit apply` gets back.
type ApplyResult struct {
	Name string `json:"name"`
	// Outcome is "created", "unchanged" or, with DryRun, "planned".
	Outcome  string     `json:"outcome"`
	DryRun   bool       `json:"dry_run"`
	Matched  int        `json:"matched"`
	Batches  [][]string `json:"batches"` // agent ids per batch
	Names    [][]string `json:"names"`   // agent names per batch, for people
	Budget   int        `json:"failure_budget"`
	Warnings []string   `json:"warnings,omitempty"`
}

// Apply stores a migration from its YAML spec, or with dryRun only plans it. The same spec twice
// changes nothing; a different spec under the name of an existing migration is refused.
func (c *Controller) Apply(ctx context.Context, yamlSpec []byte, dryRun bool) (ApplyResult, error) {
	sp, err := spec.Parse(yamlSpec)
	if err != nil {
		return ApplyResult{}, err
	}
	if err := sp.Validate(); err != nil {
		return ApplyResult{}, err
	}
	name := sp.Metadata.Name
	res := ApplyResult{Name: name, DryRun: dryRun}
	existing, err := c.cfg.Store.GetMigration(ctx, name)
	switch {
	case err == nil && existing.SpecHash == sp.Hash():
		res.Outcome = "unchanged"
		as, err := c.cfg.Store.ListAssignments(ctx, name)
		if err != nil {
			return res, err
		}
		res.Batches = make([][]string, existing.Batches)
		for _, a := range as {
			if a.Attempt == 1 && a.Batch < len(res.Batches) {
				res.Batches[a.Batch] = append(res.Batches[a.Batch], a.AgentID)
			}
		}
		res.Matched = len(as)
		return res, nil
	case err == nil:
		return res, fmt.Errorf("migration %q already exists (state %s) with a different spec; a migration's spec cannot change once applied: abort or let it finish, then apply the new spec under a new name: %w",
			name, existing.State, fault.ErrConflict)
	case !isNotFound(err):
		return res, err
	}
	agents, err := c.cfg.Store.ListAgents(ctx)
	if err != nil {
		return res, err
	}
	pl, err := plan.Batches(sp, agents)
	if err != nil {
		return res, err
	}
	names := map[string]string{}
	for _, a := range agents {
		names[a.ID] = a.Name
	}
	res.Matched, res.Batches, res.Warnings, res.Budget = pl.Matched, pl.Batches, pl.Warnings, pl.FailureBudget(sp)
	for _, b := range pl.Batches {
		var ns []string
		for _, id := range b {
			ns = append(ns, names[id])
		}
		res.Names = append(res.Names, ns)
	}
	if dryRun {
		res.Outcome = "planned"
		return res, nil
	}
	if pl.Matched == 0 {
		return res, fmt.Errorf("selector of %q matches no agents; nothing stored: %w", name, fault.ErrInvalid)
	}
	now := c.cfg.Clock.Now().UTC()
	m := store.Migration{Name: name, Spec: string(yamlSpec), SpecHash: sp.Hash(), State: mPending, Batches: len(pl.Batches),
		CurrentBatch: -1, CreatedAt: now, UpdatedAt: now}
	var as []store.Assignment
	for bi, b := range pl.Batches {
		for _, id := range b {
			as = append(as, store.Assignment{Migration: name, AgentID: id, Attempt: 1, Batch: bi, State: aPending,
				Action: wire.ActionApply, CreatedAt: now, UpdatedAt: now})
		}
	}
	if err := c.cfg.Store.CreateMigration(ctx, m, as); err != nil {
		return res, err
	}
	res.Outcome = "created"
	c.operatorEvent(ctx, name, "apply", "admin", fmt.Sprintf("migration %s applied: %d agents in %d batches", name, pl.Matched, len(pl.Batches)))
	c.Nudge()
	return res, nil
}

func isNotFound(err error) bool {
	return err != nil && strings.Contains(err.Error(), fault.ErrNotFound.Error())
}

// Action is an operator action on a migration.
type Action string

// Operator actions.
const (
	Pause       Action = "pause"
	Resume      Action = "resume"
	Approve     Action = "approve"
	Abort       Action = "abort"
	Rollback    Action = "rollback"
	RetryFailed Action = "retry"
)

// Act performs an operator action. It is an optimistic write: if the controller changed the
// migration meanwhile, it is retried on the fresh record.
func (c *Controller) Act(ctx context.Context, name string, act Action, actor string) (store.Migration, error) {
	for range 5 {
		m, err := c.cfg.Store.GetMigration(ctx, name)
		if err != nil {
			return m, err
		}
		as, err := c.cfg.Store.ListAssignments(ctx, name)
		if err != nil {
			return m, err
		}
		changed, msg, err := c.apply(m.State, &m, as, act)
		if err != nil {
			return m, err
		}
		m.UpdatedAt = c.cfg.Clock.Now().UTC()
		err = c.cfg.Store.SaveMigration(ctx, store.Fence{}, m, changed)
		if errors.Is(err, fault.ErrConflict) {
			continue // the controller wrote meanwhile: redo the action on the fresh record
		}
		if err != nil {
			return m, err
		}
		m.Version++
		c.operatorEvent(ctx, name, string(act), actor, fmt.Sprintf("%s: %s (by %s)", name, msg, actor))
		c.Nudge()
		return m, nil
	}
	return store.Migration{}, fmt.Errorf("migration %s keeps changing; try again: %w", name, fault.ErrConflict)
}

func (c *Controller) apply(from string, m *store.Migration, as []store.Assignment, act Action) ([]store.Assignment, string, error) {
	to := ""
	var changed []store.Assignment
	var msg string
	switch act {
	case Pause:
		to, msg = mPaused, "paused by operator"
	case Resume:
		to, msg = mRunning, "resumed by operator"
		if from != mPaused {
			return nil, "", fmt.Errorf("migration %s is %s, not paused: %w", m.Name, from, fault.ErrConflict)
		}
	case Approve:
		next := m.CurrentBatch + 1
		if next >= m.Batches {
			return nil, "", fmt.Errorf("migration %s has no batch left to approve: %w", m.Name, fault.ErrConflict)
		}
		m.ApprovedBatch = next
		msg = fmt.Sprintf("batch %d approved", next+1)
		to = mRunning
		if from == mRunning {
			to = ""
		}
	case Abort:
		to, msg = mCancelled, "aborted by operator"
	case Rollback:
		to, msg = mRollingBack, "rollback requested by operator"
		now := c.cfg.Clock.Now().UTC()
		// A rollback that failed before resumes: its agents get a new rollback request.
		for _, a := range latestOf(as) {
			if a.State == aRollbackFailed {
				// Resumed with a fresh deadline timer.
				a.Action, a.Generation, a.State, a.UpdatedAt = wire.ActionRollback, a.Generation+1, aRollingBack, now
				a.ActiveMS, a.DispatchedAt = 0, now
				changed = append(changed, a)
			}
		}
	case RetryFailed:
		to = mRunning
		now := c.cfg.Clock.Now().UTC()
		for _, a := range latestOf(as) {
			if !failedAttempt(&a) || !assignmentSettled(a.State) {
				continue
			}
			changed = append(changed, store.Assignment{Migration: a.Migration, AgentID: a.AgentID, Attempt: a.Attempt + 1,
				Batch: a.Batch, State: aPending, Action: wire.ActionApply, Generation: 1, PreviousAttempt: a.Attempt,
				DispatchedAt: now, CreatedAt: now, UpdatedAt: now})
		}
		if len(changed) == 0 {
			return nil, "", fmt.Errorf("migration %s has no failed agents to retry: %w", m.Name, fault.ErrConflict)
		}
		msg = fmt.Sprintf("retrying %d failed agents with a new attempt", len(changed))
	default:
		return nil, "", fault.Invalid("action", "unknown action %q", act)
	}
	if to != "" && to != from {
		if err := state.CheckMigration(state.MigrationState(from), state.MigrationState(to)); err != nil {
			return nil, "", fmt.Errorf("cannot %s migration %s: %w", act, m.Name, err)
		}
		m.State, m.Reason = to, msg
		if migrationFinal(to) {
			m.FinishedAt = c.cfg.Clock.Now().UTC()
		} else {
			m.FinishedAt = time.Time{}
		}
	} else if to == from && act != Approve {
		return nil, "", fmt.Errorf("migration %s is already %s: %w", m.Name, from, fault.ErrConflict)
	}
	return changed, msg, nil
}

func latestOf(as []store.Assignment) []store.Assignment {
	latest := map[string]store.Assignment{}
	for _, a := range as {
		if cur, ok := latest[a.AgentID]; !ok || a.Attempt > cur.Attempt {
			latest[a.AgentID] = a
		}
	}
	out := make([]store.Assignment, 0, len(latest))
	for _, a := range latest {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].AgentID < out[j].AgentID })
	return out
}

func (c *Controller) operatorEvent(ctx context.Context, migration, action, actor, msg string) {
	extra, _ := json.Marshal(map[string]string{"action": action, "actor": actor})
	e := wire.NewEvent(wire.HubSource(c.cfg.HubID), wire.EventOperatorAction, wire.SeverityInfo,
		wire.EventData{Migration: migration, Message: msg, Extra: extra})
	c.publish(ctx, e)
}

// BatchProgress counts one batch's latest attempts by state.
type BatchProgress struct {
	Batch  int            `json:"batch"`
	Total  int            `json:"total"`
	States map[string]int `json:"states"`
}

// FailureGroup gathers agents that failed the same way.
type FailureGroup struct {
	Step      string   `json:"step"`
	Signature string   `json:"signature"`
	Count     int      `json:"count"`
	Agents    []string `json:"agents"`
	Example   string   `json:"example"`
}

// Description is `godwit describe migration`.
type Description struct {
	Migration   store.Migration    `json:"migration"`
	Budget      int                `json:"failure_budget"`
	Batches     []BatchProgress    `json:"batches"`
	Assignments []store.Assignment `json:"assignments"` // every attempt
	Failures    []FailureGroup     `json:"failures"`
}

// Describe gathers a migration's progress.
func (c *Controller) Describe(ctx context.Context, name string) (Description, error) {
	m, err := c.cfg.Store.GetMigration(ctx, name)
	if err != nil {
		return Description{}, err
	}
	as, err := c.cfg.Store.ListAssignments(ctx, name)
	if err != nil {
		return Description{}, err
	}
	d := Description{Migration: m, Assignments: as, Batches: make([]BatchProgress, m.Batches)}
	if sp, err := c.parsedSpec(m); err == nil {
		d.Budget = plan.Plan{Matched: len(latestOf(as))}.FailureBudget(sp)
	}
	for i := range d.Batches {
		d.Batches[i] = BatchProgress{Batch: i, States: map[string]int{}}
	}
	groups := map[[2]string]*FailureGroup{}
	for _, a := range latestOf(as) {
		if a.Batch < len(d.Batches) {
			d.Batches[a.Batch].Total++
			d.Batches[a.Batch].States[a.State]++
		}
		if failedAttempt(&a) || a.State == aRollbackFailed {
			cause := firstNonEmpty(a.Failure, a.Error)
			sig := Signature(cause)
			step := firstNonEmpty(a.FailedStep, a.StepName)
			k := [2]string{step, sig}
			g := groups[k]
			if g == nil {
				g = &FailureGroup{Step: step, Signature: sig, Example: cause}
				groups[k] = g
			}
			g.Count++
			g.Agents = append(g.Agents, a.AgentID)
		}
	}
	for _, g := range groups {
		d.Failures = append(d.Failures, *g)
	}
	sort.Slice(d.Failures, func(i, j int) bool {
		if d.Failures[i].Count != d.Failures[j].Count {
			return d.Failures[i].Count > d.Failures[j].Count
		}
		return d.Failures[i].Signature < d.Failures[j].Signature
	})
	return d, nil
}

var (
	uuidRE   = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)
	hexRE    = regexp.MustCompile(`\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{12,}\b`)
	numberRE = regexp.MustCompile(`\d+`)
	spaceRE  = regexp.MustCompile(`\s+`)
)

// Signature reduces an error text to what failures of the same cause share: the last non-empty
// line, with ids, hex strings and numbers replaced, so "disk full on /dev/sda1 (98%)" on 37
// agents groups as one.
func Signature(errText string) string {
	line := ""
	for _, l := range strings.Split(errText, "\n") {
		if t := strings.TrimSpace(l); t != "" {
			line = t
		}
	}
	if line == "" {
		return "(no error text)"
	}
	line = uuidRE.ReplaceAllString(line, "<id>")
	line = hexRE.ReplaceAllString(line, "<hex>")
	line = numberRE.ReplaceAllString(line, "N")
	line = spaceRE.ReplaceAllString(line, " ")
	if len(line) > 120 {
		line = line[:117] + "..."
	}
	return line
}
