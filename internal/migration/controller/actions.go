package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"godwit.dev/godwit/internal/errline"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/plan"
	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/migration/state"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Apply stores a migration from its YAML spec, or with dryRun only plans it. The same spec twice
// changes nothing; a different spec under the name of an existing migration is refused.
func (c *Controller) Apply(ctx context.Context, yamlSpec []byte, dryRun bool) (wire.MigrationApplyResult, error) {
	sp, err := spec.Parse(yamlSpec)
	if err != nil {
		return wire.MigrationApplyResult{}, err
	}
	if err := sp.Validate(); err != nil {
		return wire.MigrationApplyResult{}, err
	}
	if err := c.deliverable(sp); err != nil {
		return wire.MigrationApplyResult{}, &fault.FieldError{Field: "spec.steps", Message: "the migration cannot be delivered: " + err.Error()}
	}
	name := sp.Metadata.Name
	res := wire.MigrationApplyResult{Name: name, DryRun: dryRun}
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
	m := wire.Migration{Name: name, Spec: string(yamlSpec), SpecHash: sp.Hash(), State: mPending, Batches: len(pl.Batches),
		CurrentBatch: -1, CreatedAt: now, UpdatedAt: now}
	var as []wire.Assignment
	for bi, b := range pl.Batches {
		for _, id := range b {
			as = append(as, wire.Assignment{Migration: name, AgentID: id, Attempt: 1, Batch: bi, State: aPending,
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

// Act performs an operator action. It is an optimistic write: if the controller changed the
// migration meanwhile, it is redone on the fresh record (see retryChanged).
func (c *Controller) Act(ctx context.Context, name string, act wire.MigrationAction, actor string) (wire.Migration, error) {
	var done wire.Migration
	err := c.retryChanged(ctx, name, func() error {
		m, err := c.cfg.Store.GetMigration(ctx, name)
		if err != nil {
			return err
		}
		as, err := c.cfg.Store.ListAssignments(ctx, name)
		if err != nil {
			return err
		}
		changed, msg, err := c.apply(m.State, &m, as, act)
		if err != nil {
			return err
		}
		m.UpdatedAt = c.cfg.Clock.Now().UTC()
		err = c.cfg.Store.SaveMigration(ctx, store.Fence{}, m, changed)
		if errors.Is(err, fault.ErrConflict) {
			return errChanged // the controller wrote meanwhile: redo the action on the fresh record
		}
		if err != nil {
			return err
		}
		m.Version++
		c.operatorEvent(ctx, name, string(act), actor, fmt.Sprintf("%s: %s (by %s)", name, msg, actor))
		c.Nudge()
		done = m
		return nil
	})
	return done, err
}

// errChanged is what one try of an operator's write returns when the record changed between its
// read and its write.
var errChanged = errors.New("changed meanwhile")

// An operator's write races the leader's controller, which saves a running migration on most of
// its passes (the time it counts), and passes can follow each other closely: every report from an
// agent nudges one. So a write that found the migration changed is redone after a pause that
// grows from changedRetryFirst to changedRetryMax, with jitter so that it does not fall into step
// with the passes, for up to changedPatience in all; only then is the operator told to try again.
// A fixed handful of immediate tries was not enough: five passes could land in the windows of
// five tries in a row on a busy machine.
const (
	changedRetryFirst = 5 * time.Millisecond
	changedRetryMax   = 250 * time.Millisecond
	changedPatience   = 10 * time.Second
)

// retryChanged runs try until it returns something other than errChanged, for up to
// changedPatience or until ctx ends. A ctx that ends gives its error naming the migration,
// whether it ended in a pause or in a try (where the store returns it).
func (c *Controller) retryChanged(ctx context.Context, name string, try func() error) error {
	wait, until := changedRetryFirst, time.Now().Add(changedPatience)
	for {
		err := try()
		if !errors.Is(err, errChanged) {
			if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return fmt.Errorf("migration %s: %w", name, err)
			}
			return err
		}
		if time.Now().After(until) {
			return fmt.Errorf("migration %s keeps changing; try again: %w", name, fault.ErrConflict)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration %s: %w", name, ctx.Err())
		case <-time.After(wait/2 + rand.N(wait)):
		}
		wait = min(2*wait, changedRetryMax)
	}
}

func (c *Controller) apply(from string, m *wire.Migration, as []wire.Assignment, act wire.MigrationAction) ([]wire.Assignment, string, error) {
	to := ""
	var changed []wire.Assignment
	var msg string
	switch act {
	case wire.MigrationPause:
		to, msg = mPaused, "paused by operator"
	case wire.MigrationResume:
		to, msg = mRunning, "resumed by operator"
		if from != mPaused {
			return nil, "", fmt.Errorf("migration %s is %s, not paused: %w", m.Name, from, fault.ErrConflict)
		}
	case wire.MigrationApprove:
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
	case wire.MigrationAbort:
		to, msg = mCancelled, "aborted by operator"
	case wire.MigrationRollback:
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
	case wire.MigrationRetry:
		to = mRunning
		now := c.cfg.Clock.Now().UTC()
		var unstarted []wire.Assignment
		for _, a := range latestOf(as) {
			if a.State == aSuperseded && a.DispatchedAt.IsZero() {
				// Never sent (onFailure: abort, onTimeout: fail or a rollback superseded it
				// before its batch started): the migration runs again, so its batch starts it.
				unstarted = append(unstarted, wire.Assignment{Migration: a.Migration, AgentID: a.AgentID, Attempt: a.Attempt + 1,
					Batch: a.Batch, State: aPending, Action: wire.ActionApply, PreviousAttempt: a.Attempt,
					CreatedAt: now, UpdatedAt: now})
				continue
			}
			if !failedAttempt(&a) || !assignmentSettled(a.State) {
				continue
			}
			changed = append(changed, wire.Assignment{Migration: a.Migration, AgentID: a.AgentID, Attempt: a.Attempt + 1,
				Batch: a.Batch, State: aPending, Action: wire.ActionApply, Generation: 1, PreviousAttempt: a.Attempt,
				DispatchedAt: now, CreatedAt: now, UpdatedAt: now})
		}
		if len(changed) == 0 {
			return nil, "", fmt.Errorf("migration %s has no failed agents to retry: %w", m.Name, fault.ErrConflict)
		}
		msg = fmt.Sprintf("retrying %d failed agents with a new attempt", len(changed))
		if len(unstarted) > 0 {
			msg += fmt.Sprintf("; %d agents never started are planned again in their batches", len(unstarted))
			changed = append(changed, unstarted...)
		}
	default:
		return nil, "", fault.Invalid("action", "unknown action %q", act)
	}
	if act == wire.MigrationResume || act == wire.MigrationRetry {
		note, err := c.restartDeadline(m, act)
		if err != nil {
			return nil, "", err
		}
		msg += note
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
	} else if to == from && act != wire.MigrationApprove {
		return nil, "", fmt.Errorf("migration %s is already %s: %w", m.Name, from, fault.ErrConflict)
	}
	return changed, msg, nil
}

// restartDeadline gives a migration resumed or retried past its deadline a whole new one: under
// the active policy the time counted starts again from zero (otherwise the next pass would stop
// it again at once, for time it was already judged on, and the operator could only roll it back
// or abort it). Under the wall policy the deadline counts from the migration's creation and
// cannot start again, so the action is refused, saying so. It returns what to add to the
// action's message.
func (c *Controller) restartDeadline(m *wire.Migration, act wire.MigrationAction) (string, error) {
	sp, err := c.parsedSpec(*m)
	if err != nil {
		return "", nil // the pass fails it, saying why
	}
	limit := sp.Spec.Timeouts.Migration
	if sp.Spec.DeadlinePolicy == spec.DeadlineWall {
		if used := c.cfg.Clock.Now().Sub(m.CreatedAt); used > limit {
			return "", fmt.Errorf("migration %s is past its deadline of %s (wall time since it was created, %s ago): it would stop again at once; roll it back or abort it: %w",
				m.Name, limit, used.Round(time.Second), fault.ErrConflict)
		}
		return "", nil
	}
	used := time.Duration(m.ActiveMS) * time.Millisecond
	if used <= limit {
		return "", nil
	}
	m.ActiveMS = 0
	return fmt.Sprintf("; its deadline of %s had passed (%s counted) and starts again", limit, used.Round(time.Second)), nil
}

// Delete deletes a migration that has ended, with its assignments, and records it as an
// operator action. Its events stay (they are history), and its name stays taken: agents keep the
// results of its attempts under that name. It is refused (409) while the migration runs, while
// an agent has not confirmed that it stopped working on it (a revoked agent does not count), and
// while something else depends on it (Config.Referenced).
func (c *Controller) Delete(ctx context.Context, name, actor string) error {
	return c.retryChanged(ctx, name, func() error {
		m, err := c.cfg.Store.GetMigration(ctx, name)
		if err != nil {
			return err
		}
		if !migrationFinal(m.State) {
			return fmt.Errorf("migration %s is %s: only a migration that has ended can be deleted (abort it, or wait for it to end): %w", name, m.State, fault.ErrConflict)
		}
		as, err := c.cfg.Store.ListAssignments(ctx, name)
		if err != nil {
			return err
		}
		agents, err := c.cfg.Store.ListAgents(ctx)
		if err != nil {
			return err
		}
		names, revoked := map[string]string{}, map[string]bool{}
		for _, a := range agents {
			names[a.ID], revoked[a.ID] = a.Name, a.RevokedAt != nil
		}
		var waiting []string
		for _, a := range latestOf(as) {
			if wanted(&a) && !revoked[a.AgentID] {
				waiting = append(waiting, firstNonEmpty(names[a.AgentID], a.AgentID)+" ("+a.State+")")
			}
		}
		if len(waiting) > 0 {
			return fmt.Errorf("migration %s cannot be deleted yet: %d agents have not confirmed that they stopped working on it: %s; wait for them, or revoke the ones that are gone for good: %w",
				name, len(waiting), strings.Join(waiting, ", "), fault.ErrConflict)
		}
		if c.cfg.Referenced != nil {
			refs, err := c.cfg.Referenced(ctx, name)
			if err != nil {
				return err
			}
			if len(refs) > 0 {
				return fmt.Errorf("migration %s cannot be deleted: %s depends on it; change or delete that first: %w", name, strings.Join(refs, ", "), fault.ErrConflict)
			}
		}
		err = c.cfg.Store.DeleteMigration(ctx, name, m.Version, c.cfg.Clock.Now().UTC())
		if errors.Is(err, fault.ErrConflict) {
			return errChanged // the controller wrote meanwhile: judge the fresh record
		}
		if err != nil {
			return err
		}
		c.operatorEvent(ctx, name, "delete", actor, fmt.Sprintf("%s: deleted (by %s) when %s; %d assignments deleted with it, its events are kept",
			name, actor, m.State, len(as)))
		c.Nudge()
		return nil
	})
}

func latestOf(as []wire.Assignment) []wire.Assignment {
	latest := map[string]wire.Assignment{}
	for _, a := range as {
		if cur, ok := latest[a.AgentID]; !ok || a.Attempt > cur.Attempt {
			latest[a.AgentID] = a
		}
	}
	out := make([]wire.Assignment, 0, len(latest))
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

// Describe gathers a migration's progress with every attempt of every agent.
func (c *Controller) Describe(ctx context.Context, name string) (wire.MigrationDescription, error) {
	return c.DescribeWith(ctx, name, wire.AssignmentsAll)
}

// DescribeWith gathers a migration's progress: the batches counted and the failed agents
// grouped in SQL (a fleet-wide migration is not read whole for them), with the assignments
// chosen by which: every attempt (all), the latest attempts that failed (failed), or none.
func (c *Controller) DescribeWith(ctx context.Context, name string, which wire.AssignmentsShown) (wire.MigrationDescription, error) {
	m, err := c.cfg.Store.GetMigration(ctx, name)
	if err != nil {
		return wire.MigrationDescription{}, err
	}
	counts, err := c.cfg.Store.CountLatestAssignments(ctx, name)
	if err != nil {
		return wire.MigrationDescription{}, err
	}
	failed, err := c.cfg.Store.LatestAssignments(ctx, store.LatestQuery{Migration: name, Failed: true})
	if err != nil {
		return wire.MigrationDescription{}, err
	}
	d := wire.MigrationDescription{Migration: m, Assignments: []wire.Assignment{}, Batches: make([]wire.BatchProgress, m.Batches)}
	for i := range d.Batches {
		d.Batches[i] = wire.BatchProgress{Batch: i, States: map[string]int{}}
	}
	matched := 0
	for _, n := range counts {
		matched += n.N
		if n.Batch >= 0 && n.Batch < len(d.Batches) {
			d.Batches[n.Batch].Total += n.N
			d.Batches[n.Batch].States[n.State] += n.N
		}
	}
	if sp, err := c.parsedSpec(m); err == nil {
		d.Budget = plan.Plan{Matched: matched}.FailureBudget(sp)
	}
	d.Failures = FailureGroups(failed)
	switch which {
	case wire.AssignmentsAll, "":
		if d.Assignments, err = c.cfg.Store.ListAssignments(ctx, name); err != nil {
			return wire.MigrationDescription{}, err
		}
	case wire.AssignmentsFailed:
		d.Assignments = append(d.Assignments, failed...)
	case wire.AssignmentsNone:
	default:
		return wire.MigrationDescription{}, fault.Invalid("assignments", "%q is not all, failed or none", which)
	}
	if d.Assignments == nil {
		d.Assignments = []wire.Assignment{}
	}
	return d, nil
}

// FailureGroups groups the failed latest attempts of a migration's agents by step and the
// signature of their cause, largest group first; other attempts are passed over. Agents stay in
// the order given.
func FailureGroups(latest []wire.Assignment) []wire.FailureGroup {
	groups := map[[2]string]*wire.FailureGroup{}
	var out []wire.FailureGroup
	for i := range latest {
		a := &latest[i]
		if !failedAttempt(a) && a.State != aRollbackFailed {
			continue
		}
		cause := firstNonEmpty(a.Failure, a.Error)
		if a.State == aRollbackFailed && a.Error != "" {
			// What is wrong now is the rollback, not the run it undid.
			cause = a.Error
		}
		sig := Signature(cause)
		step := firstNonEmpty(a.FailedStep, a.StepName)
		k := [2]string{step, sig}
		g := groups[k]
		if g == nil {
			g = &wire.FailureGroup{Step: step, Signature: sig, Example: cause}
			groups[k] = g
		}
		g.Count++
		g.Agents = append(g.Agents, a.AgentID)
	}
	for _, g := range groups {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Signature < out[j].Signature
	})
	return out
}

// Signature reduces an error text to what failures of the same cause share: the line that
// carries the error (errline.Cause: the last that reads like one, not a hint), with ids, hex
// strings and numbers replaced, so "disk full on /dev/sda1 (98%)" on 37 agents groups as one.
func Signature(errText string) string { return errline.Signature(errline.Cause(errText)) }
