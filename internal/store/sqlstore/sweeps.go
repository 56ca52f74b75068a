package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

const sweepCols = `name, spec, spec_hash, next_fire_at, created_at, updated_at, version,
	suspended, suspended_at, suspended_by, suspended_via, suspend_reason`

func scanSweep(row interface{ Scan(...any) error }) (wire.Sweep, error) {
	var sw wire.Sweep
	var next, created, updated, suspendedAt int64
	var suspended int
	var by, via, reason string
	err := row.Scan(&sw.Name, &sw.Spec, &sw.SpecHash, &next, &created, &updated, &sw.Version,
		&suspended, &suspendedAt, &by, &via, &reason)
	sw.NextFireAt, sw.CreatedAt, sw.UpdatedAt = fromMicros(next), fromMicros(created), fromMicros(updated)
	if suspended != 0 {
		sw.Suspended = true
		sw.Suspension = &wire.SweepSuspension{Since: fromMicros(suspendedAt), By: by, Via: via, Reason: reason}
	}
	return sw, err
}

// suspensionArgs are the values of the suspension columns: all zero unless sw is suspended.
func suspensionArgs(sw wire.Sweep) (suspended int, at int64, by, via, reason string) {
	if !sw.Suspended {
		return 0, 0, "", "", ""
	}
	if sw.Suspension == nil {
		return 1, 0, "", "", ""
	}
	p := sw.Suspension
	return 1, micros(p.Since), p.By, p.Via, p.Reason
}

// CreateSweep implements store.Store.
func (s *Store) CreateSweep(ctx context.Context, sw wire.Sweep) error {
	sus, at, by, via, reason := suspensionArgs(sw)
	res, err := s.exec(ctx, `INSERT INTO sweeps (`+sweepCols+`) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $10, $11)
		ON CONFLICT (name) DO NOTHING`, sw.Name, sw.Spec, sw.SpecHash, micros(sw.NextFireAt), micros(sw.CreatedAt), micros(sw.UpdatedAt),
		sus, at, by, via, reason)
	if err != nil {
		return fmt.Errorf("create sweep: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sweep %q already exists: %w", sw.Name, fault.ErrConflict)
	}
	return nil
}

// UpdateSweep implements store.Store.
func (s *Store) UpdateSweep(ctx context.Context, sw wire.Sweep, reschedule bool) error {
	sus, at, by, via, reason := suspensionArgs(sw)
	res, err := s.exec(ctx, `UPDATE sweeps SET spec = $3, spec_hash = $4, updated_at = $5,
		next_fire_at = CASE WHEN $6 = 1 THEN $7 ELSE next_fire_at END, version = version + 1,
		suspended = $8, suspended_at = $9, suspended_by = $10, suspended_via = $11, suspend_reason = $12
		WHERE name = $1 AND version = $2`,
		sw.Name, sw.Version, sw.Spec, sw.SpecHash, micros(sw.UpdatedAt), boolInt(reschedule), micros(sw.NextFireAt),
		sus, at, by, via, reason)
	if err != nil {
		return fmt.Errorf("update sweep: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		if _, err := s.GetSweep(ctx, sw.Name); err != nil {
			return err
		}
		return fmt.Errorf("sweep %s changed since version %d: %w", sw.Name, sw.Version, fault.ErrConflict)
	}
	return nil
}

// GetSweep implements store.Store.
func (s *Store) GetSweep(ctx context.Context, name string) (wire.Sweep, error) {
	sw, err := scanSweep(s.db.QueryRowContext(ctx, `SELECT `+sweepCols+` FROM sweeps WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return sw, fmt.Errorf("sweep %q: %w", name, fault.ErrNotFound)
	}
	return sw, err
}

// ListSweeps implements store.Store.
func (s *Store) ListSweeps(ctx context.Context) ([]wire.Sweep, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+sweepCols+` FROM sweeps ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list sweeps: %w", err)
	}
	defer rows.Close()
	out := []wire.Sweep{}
	for rows.Next() {
		sw, err := scanSweep(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sw)
	}
	return out, rows.Err()
}

// DeleteSweep implements store.Store.
func (s *Store) DeleteSweep(ctx context.Context, name string) error {
	res, err := s.exec(ctx, `DELETE FROM sweeps WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("delete sweep: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sweep %q: %w", name, fault.ErrNotFound)
	}
	return nil
}

const runCols = `id, sweep, trigger_kind, triggered_by, scheduled_for, fired_at, deadline, finished_at, max_seconds, status,
	lock_skipped, exit_code, error, matched, processed, skipped_clean, skipped_missing, skipped_budget, drifted, errors,
	drifted_agents, missed_firings, remediation, context, updated_at`

func scanRun(row interface{ Scan(...any) error }) (wire.SweepRun, error) {
	var r wire.SweepRun
	var scheduled, fired, deadline, finished, updated int64
	var locked int
	var exit sql.NullInt64
	var drifted, ctxJSON string
	err := row.Scan(&r.ID, &r.Sweep, &r.Trigger, &r.TriggeredBy, &scheduled, &fired, &deadline, &finished, &r.MaxSeconds, &r.Status,
		&locked, &exit, &r.Error, &r.Matched, &r.Processed, &r.SkippedClean, &r.SkippedMissing, &r.SkippedBudget, &r.Drifted, &r.Errors,
		&drifted, &r.MissedFirings, &r.Remediation, &ctxJSON, &updated)
	if err != nil {
		return r, err
	}
	r.ScheduledFor, r.FiredAt, r.Deadline, r.FinishedAt, r.UpdatedAt =
		fromMicros(scheduled), fromMicros(fired), fromMicros(deadline), fromMicros(finished), fromMicros(updated)
	r.LockSkipped = locked != 0
	if exit.Valid {
		v := int(exit.Int64)
		r.ExitCode = &v
	}
	if err := json.Unmarshal([]byte(drifted), &r.DriftedAgents); err != nil {
		return r, fmt.Errorf("sweep run %s: drifted agents: %w", r.ID, err)
	}
	if r.DriftedAgents == nil {
		r.DriftedAgents = []wire.SweepAgentRef{}
	}
	if ctxJSON != "" && ctxJSON != "{}" {
		r.Context = json.RawMessage(ctxJSON)
	}
	return r, nil
}

func runArgs(r wire.SweepRun) []any {
	drifted := driftedJSON(r.DriftedAgents)
	ctxJSON := "{}"
	if len(r.Context) > 0 {
		ctxJSON = string(r.Context)
	}
	return []any{r.ID, r.Sweep, r.Trigger, r.TriggeredBy, micros(r.ScheduledFor), micros(r.FiredAt), micros(r.Deadline), micros(r.FinishedAt),
		r.MaxSeconds, r.Status, boolInt(r.LockSkipped), nullInt(r.ExitCode), r.Error, r.Matched, r.Processed, r.SkippedClean,
		r.SkippedMissing, r.SkippedBudget, r.Drifted, r.Errors, drifted, r.MissedFirings, r.Remediation, ctxJSON,
		micros(r.UpdatedAt)}
}

func driftedJSON(as []wire.SweepAgentRef) string {
	if as == nil {
		as = []wire.SweepAgentRef{}
	}
	b, _ := json.Marshal(as)
	return string(b)
}

const insertRun = `INSERT INTO sweep_runs (` + runCols + `) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25)`

const runAgentCols = `run_id, agent_id, agent_name, state, exit_code, error, output_tail, duration_ms, dispatched_at, finished_at`

func scanRunAgent(row interface{ Scan(...any) error }) (wire.SweepRunAgent, error) {
	var a wire.SweepRunAgent
	var exit sql.NullInt64
	var dispatched, finished int64
	err := row.Scan(&a.RunID, &a.AgentID, &a.AgentName, &a.State, &exit, &a.Error, &a.OutputTail, &a.DurationMS, &dispatched, &finished)
	if exit.Valid {
		v := int(exit.Int64)
		a.ExitCode = &v
	}
	a.DispatchedAt, a.FinishedAt = fromMicros(dispatched), fromMicros(finished)
	return a, err
}

func writeRunAgents(ctx context.Context, tx *sql.Tx, runID string, as []wire.SweepRunAgent) error {
	if len(as) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO sweep_run_agents (`+runAgentCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
		ON CONFLICT (run_id, agent_id) DO UPDATE SET agent_name = excluded.agent_name, state = excluded.state,
		exit_code = excluded.exit_code, error = excluded.error, output_tail = excluded.output_tail,
		duration_ms = excluded.duration_ms, dispatched_at = excluded.dispatched_at, finished_at = excluded.finished_at`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, a := range as {
		if a.RunID != runID {
			return fmt.Errorf("agent %s belongs to run %q, not %q: %w", a.AgentID, a.RunID, runID, fault.ErrInvalid)
		}
		if _, err := stmt.ExecContext(ctx, a.RunID, a.AgentID, a.AgentName, a.State, nullInt(a.ExitCode), a.Error, a.OutputTail,
			a.DurationMS, micros(a.DispatchedAt), micros(a.FinishedAt)); err != nil {
			return fmt.Errorf("run %s agent %s: %w", runID, a.AgentID, err)
		}
	}
	return nil
}

// checkFence fails with ErrFenced unless the named leadership still has the fence's epoch. On
// PostgreSQL the touched row stays locked until commit, so no new leader can take over between
// this check and the transaction's writes. The zero Fence (an operator's write) passes.
func checkFence(ctx context.Context, tx *sql.Tx, f store.Fence) error {
	if f.Epoch == 0 {
		return nil
	}
	res, err := tx.ExecContext(ctx, `UPDATE leadership SET epoch = epoch WHERE name = $1 AND epoch = $2`, f.Name, f.Epoch)
	if err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("epoch %d of %s is no longer current: %w", f.Epoch, f.Name, fault.ErrFenced)
	}
	return nil
}

// StartRun implements store.Store.
func (s *Store) StartRun(ctx context.Context, fence store.Fence, firing *store.SweepFiring, run wire.SweepRun, agents []wire.SweepRunAgent) (wire.SweepRun, error) {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return run, fmt.Errorf("start sweep run: %w", err)
	}
	defer end()
	if err := checkFence(ctx, tx, fence); err != nil {
		return run, fmt.Errorf("start sweep run of %s: %w", run.Sweep, err)
	}
	if firing != nil {
		// A suspended sweep's firings cannot be claimed: a suspension committed before the
		// claim wins, whichever replica wrote it.
		claim := `UPDATE sweeps SET next_fire_at = $4
			WHERE name = $1 AND spec_hash = $2 AND next_fire_at = $3 AND suspended = 0`
		args := []any{firing.Sweep, firing.SpecHash, micros(firing.From), micros(firing.Next)}
		if firing.Resume {
			claim = `UPDATE sweeps SET next_fire_at = $4, suspended = 0, suspended_at = 0, suspended_by = '', suspended_via = '',
				suspend_reason = '', version = version + 1, updated_at = $5
				WHERE name = $1 AND spec_hash = $2 AND next_fire_at = $3 AND suspended = 1`
			args = append(args, micros(run.FiredAt))
		}
		res, err := tx.ExecContext(ctx, claim, args...)
		if err != nil {
			return run, fmt.Errorf("start sweep run: claim firing: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return run, fmt.Errorf("firing of sweep %s at %s was claimed, rescheduled or suspended meanwhile: %w", firing.Sweep, firing.From, fault.ErrConflict)
		}
	}
	if run.Status == wire.SweepRunRunning {
		// The lock: a second running row of the sweep violates sweep_runs_lock, and DO NOTHING
		// makes that "not inserted" (on PostgreSQL after waiting for the first one to commit).
		res, err := tx.ExecContext(ctx, insertRun+` ON CONFLICT DO NOTHING`, runArgs(run)...)
		if err != nil {
			return run, fmt.Errorf("start sweep run: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			if err := writeRunAgents(ctx, tx, run.ID, agents); err != nil {
				return run, fmt.Errorf("start sweep run: %w", err)
			}
			if err := tx.Commit(); err != nil {
				return run, fmt.Errorf("start sweep run: commit: %w", err)
			}
			return run, nil
		}
		var holder string
		err = tx.QueryRowContext(ctx, `SELECT id FROM sweep_runs WHERE sweep = $1 AND status = $2`, run.Sweep, wire.SweepRunRunning).Scan(&holder)
		if errors.Is(err, sql.ErrNoRows) {
			return run, alreadyRecorded(ctx, tx, firing, run)
		}
		if err != nil {
			return run, fmt.Errorf("start sweep run: %w", err)
		}
		run = lockSkipped(run, holder)
	}
	res, err := tx.ExecContext(ctx, insertRun+` ON CONFLICT DO NOTHING`, runArgs(run)...)
	if err != nil {
		return run, fmt.Errorf("record sweep run: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return run, alreadyRecorded(ctx, tx, firing, run)
	}
	if err := tx.Commit(); err != nil {
		return run, fmt.Errorf("record sweep run: commit: %w", err)
	}
	return run, nil
}

// alreadyRecorded is the error of a run that was not inserted because it, or the scheduled
// instant it is for, is already recorded. A claimed firing whose instant already has a record
// commits its claim first: the next firing was set back onto an instant that has fired (a
// reschedule from a clock behind the one that fired it), and without moving on every pass
// would find that instant due and be refused again, and the sweep would never fire again.
func alreadyRecorded(ctx context.Context, tx *sql.Tx, firing *store.SweepFiring, run wire.SweepRun) error {
	if firing != nil && run.Trigger == wire.TriggerSchedule {
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id FROM sweep_runs WHERE sweep = $1 AND trigger_kind = $2 AND scheduled_for = $3`,
			run.Sweep, wire.TriggerSchedule, micros(run.ScheduledFor)).Scan(&id)
		switch {
		case err == nil:
			if err := tx.Commit(); err != nil {
				return fmt.Errorf("start sweep run: commit the claim: %w", err)
			}
			return fmt.Errorf("firing of sweep %s at %s is already recorded by run %s; the next firing is now %s: %w",
				run.Sweep, run.ScheduledFor.UTC().Format(time.RFC3339), id, firing.Next.UTC().Format(time.RFC3339), store.ErrFiringRecorded)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("start sweep run: %w", err)
		}
	}
	return fmt.Errorf("sweep run %s or its firing is already recorded: %w", run.ID, fault.ErrConflict)
}

// lockSkipped turns a run that could not take the lock into its audit record.
func lockSkipped(run wire.SweepRun, holder string) wire.SweepRun {
	zero := 0
	run.Status, run.LockSkipped, run.ExitCode = wire.SweepRunSkipped, true, &zero
	run.FinishedAt = run.FiredAt
	run.Error = fmt.Sprintf("run %s of sweep %s was still running (overlap: skip)", holder, run.Sweep)
	run.Matched, run.Processed, run.SkippedClean, run.SkippedMissing, run.SkippedBudget, run.Drifted, run.Errors = 0, 0, 0, 0, 0, 0, 0
	run.DriftedAgents = []wire.SweepAgentRef{}
	return run
}

// SaveRun implements store.Store.
func (s *Store) SaveRun(ctx context.Context, fence store.Fence, run wire.SweepRun, changed []wire.SweepRunAgent) error {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("save sweep run: %w", err)
	}
	defer end()
	if err := checkFence(ctx, tx, fence); err != nil {
		return fmt.Errorf("save sweep run %s: %w", run.ID, err)
	}
	// Only what a run's progress changes is written; who fired it, when and with what spec
	// is fixed when it starts.
	res, err := tx.ExecContext(ctx, `UPDATE sweep_runs SET finished_at = $2, status = $3, exit_code = $4, error = $5,
		matched = $6, processed = $7, skipped_clean = $8, skipped_missing = $9, skipped_budget = $10, drifted = $11,
		errors = $12, drifted_agents = $13, remediation = $14, updated_at = $15
		WHERE id = $1 AND status = 'running'`,
		run.ID, micros(run.FinishedAt), run.Status, nullInt(run.ExitCode), run.Error, run.Matched, run.Processed, run.SkippedClean,
		run.SkippedMissing, run.SkippedBudget, run.Drifted, run.Errors, driftedJSON(run.DriftedAgents), run.Remediation, micros(run.UpdatedAt))
	if err != nil {
		return fmt.Errorf("save sweep run: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		if _, err := s.GetRun(ctx, run.ID); err != nil {
			return err
		}
		return fmt.Errorf("sweep run %s is no longer running: %w", run.ID, fault.ErrConflict)
	}
	if err := writeRunAgents(ctx, tx, run.ID, changed); err != nil {
		return fmt.Errorf("save sweep run: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("save sweep run: commit: %w", err)
	}
	return nil
}

// GetRun implements store.Store.
func (s *Store) GetRun(ctx context.Context, id string) (wire.SweepRun, error) {
	r, err := scanRun(s.db.QueryRowContext(ctx, `SELECT `+runCols+` FROM sweep_runs WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("sweep run %q: %w", id, fault.ErrNotFound)
	}
	return r, err
}

// runListCols are runCols with the context snapshot left out: a listing does not carry every
// run's spec and matched agents.
var runListCols = strings.Replace(runCols, "context,", "'' AS context,", 1)

// ListRuns implements store.Store: a keyset page over (fired_at, id), newest first, which walks
// the index sweep_runs_sweep_fired (sweep_runs_fired for every sweep) without a sort.
func (s *Store) ListRuns(ctx context.Context, q store.RunQuery) ([]wire.SweepRun, string, error) {
	text, args, err := runsQuery(q)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.db.QueryContext(ctx, text, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list sweep runs: %w", err)
	}
	out, next, err := readPage(rows, q.Limit, scanRun, func(r wire.SweepRun) string { return encodeCursor(micros(r.FiredAt), r.ID) })
	if err != nil {
		return nil, "", fmt.Errorf("list sweep runs: %w", err)
	}
	return out, next, nil
}

// runsQuery is the SQL text and arguments of a page of runs: Limit+1 rows, newest first.
func runsQuery(q store.RunQuery) (string, []any, error) {
	if q.Limit < 1 || q.Limit > 1000 {
		return "", nil, fault.Invalid("limit", "must be between 1 and 1000, not %d", q.Limit)
	}
	var pq pageQuery
	if q.Sweep != "" {
		pq.and("sweep = " + pq.arg(q.Sweep))
	}
	if q.Cursor != "" {
		t, id, err := decodeCursor(q.Cursor)
		if err != nil {
			return "", nil, err
		}
		ta := pq.arg(t)
		pq.and("(fired_at < " + ta + " OR (fired_at = " + ta + " AND id < " + pq.arg(id) + "))")
	}
	return pq.sql(`SELECT `+runListCols+` FROM sweep_runs`, "fired_at DESC, id DESC", q.Limit), pq.args, nil
}

// RunningRuns implements store.Store.
func (s *Store) RunningRuns(ctx context.Context) ([]wire.SweepRun, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+runCols+` FROM sweep_runs WHERE status = $1 ORDER BY fired_at, id`, wire.SweepRunRunning)
	if err != nil {
		return nil, fmt.Errorf("running sweep runs: %w", err)
	}
	return collectRuns(rows)
}

func collectRuns(rows *sql.Rows) ([]wire.SweepRun, error) {
	defer rows.Close()
	out := []wire.SweepRun{}
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ListRunAgents implements store.Store.
func (s *Store) ListRunAgents(ctx context.Context, runID string) ([]wire.SweepRunAgent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+runAgentCols+` FROM sweep_run_agents WHERE run_id = $1 ORDER BY agent_name, agent_id`, runID)
	if err != nil {
		return nil, fmt.Errorf("list sweep run agents: %w", err)
	}
	defer rows.Close()
	out := []wire.SweepRunAgent{}
	for rows.Next() {
		a, err := scanRunAgent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func nullInt(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
