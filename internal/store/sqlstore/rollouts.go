package sqlstore

// This file stores fleet migrations (rollouts), their assignments and the leadership epochs; the
// schema migrations of the store itself are in migrate.go and migrations/.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// AcquireEpoch implements store.Store.
func (s *Store) AcquireEpoch(ctx context.Context, name, holder string, now time.Time) (int64, error) {
	var epoch int64
	done, err := s.turn(ctx)
	if err != nil {
		return 0, fmt.Errorf("acquire epoch %s: %w", name, err)
	}
	defer done()
	err = s.db.QueryRowContext(ctx, `INSERT INTO leadership (name, epoch, holder, updated_at) VALUES ($1, 1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET epoch = leadership.epoch + 1, holder = excluded.holder, updated_at = excluded.updated_at
		RETURNING epoch`, name, holder, micros(now)).Scan(&epoch)
	if err != nil {
		return 0, fmt.Errorf("acquire epoch %s: %w", name, err)
	}
	return epoch, nil
}

// Leader implements store.Store.
func (s *Store) Leader(ctx context.Context, name string) (string, int64, time.Time, error) {
	var holder string
	var epoch, seen int64
	err := s.db.QueryRowContext(ctx, `SELECT holder, epoch, updated_at FROM leadership WHERE name = $1`, name).Scan(&holder, &epoch, &seen)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, time.Time{}, fmt.Errorf("leadership %s: %w", name, fault.ErrNotFound)
	}
	return holder, epoch, fromMicros(seen), err
}

// TouchEpoch implements store.Store.
func (s *Store) TouchEpoch(ctx context.Context, fence store.Fence, now time.Time) error {
	res, err := s.exec(ctx, `UPDATE leadership SET updated_at = $3 WHERE name = $1 AND epoch = $2`, fence.Name, fence.Epoch, micros(now))
	if err != nil {
		return fmt.Errorf("touch epoch: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("epoch %d of %s is no longer current: %w", fence.Epoch, fence.Name, fault.ErrFenced)
	}
	return nil
}

const migrationCols = `name, spec, spec_hash, state, reason, batches, current_batch, approved_batch, active_ms, created_at, updated_at, finished_at, version`

func scanMigration(row interface{ Scan(...any) error }) (wire.Migration, error) {
	var m wire.Migration
	var created, updated, finished int64
	err := row.Scan(&m.Name, &m.Spec, &m.SpecHash, &m.State, &m.Reason, &m.Batches, &m.CurrentBatch, &m.ApprovedBatch,
		&m.ActiveMS, &created, &updated, &finished, &m.Version)
	m.CreatedAt, m.UpdatedAt, m.FinishedAt = fromMicros(created), fromMicros(updated), fromMicros(finished)
	return m, err
}

const assignmentCols = `migration, agent_id, attempt, batch, state, generation, action, step, step_name, error, failure, failed_step, exit_code,
	previous_attempt, applied, active_ms, dispatched_at, created_at, updated_at, finished_at, acked_generation, unreachable_since`

func scanAssignment(row interface{ Scan(...any) error }) (wire.Assignment, error) {
	var a wire.Assignment
	var exit sql.NullInt64
	var dispatched, created, updated, finished, unreachable int64
	err := row.Scan(&a.Migration, &a.AgentID, &a.Attempt, &a.Batch, &a.State, &a.Generation, &a.Action, &a.Step, &a.StepName,
		&a.Error, &a.Failure, &a.FailedStep, &exit, &a.PreviousAttempt, &a.Applied, &a.ActiveMS, &dispatched, &created, &updated, &finished,
		&a.AckedGeneration, &unreachable)
	if exit.Valid {
		v := int(exit.Int64)
		a.ExitCode = &v
	}
	a.DispatchedAt, a.CreatedAt, a.UpdatedAt, a.FinishedAt = fromMicros(dispatched), fromMicros(created), fromMicros(updated), fromMicros(finished)
	a.UnreachableSince = fromMicros(unreachable)
	return a, err
}

func assignmentArgs(a wire.Assignment) []any {
	var exit any
	if a.ExitCode != nil {
		exit = *a.ExitCode
	}
	return []any{a.Migration, a.AgentID, a.Attempt, a.Batch, a.State, a.Generation, a.Action, a.Step, a.StepName, a.Error, a.Failure, a.FailedStep, exit,
		a.PreviousAttempt, a.Applied, a.ActiveMS, micros(a.DispatchedAt), micros(a.CreatedAt), micros(a.UpdatedAt), micros(a.FinishedAt),
		a.AckedGeneration, micros(a.UnreachableSince)}
}

// upsertAssignment is prepared once per transaction. A new row is the latest attempt of its
// agent unless a later one is stored already; an update leaves that as it is.
var upsertAssignment = `INSERT INTO assignments (` + assignmentCols + `, latest) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,
	CASE WHEN EXISTS (SELECT 1 FROM assignments h WHERE h.migration = $1 AND h.agent_id = $2 AND h.attempt > $3) THEN 0 ELSE 1 END)
	` + assignmentConflict

// assignmentConflict is what an upsert of an assignment does to the row stored: every column
// but the key, created_at and latest takes the new value.
const assignmentConflict = `ON CONFLICT (migration, agent_id, attempt) DO UPDATE SET batch = excluded.batch, state = excluded.state,
	generation = excluded.generation, action = excluded.action, step = excluded.step, step_name = excluded.step_name,
	error = excluded.error, failure = excluded.failure, failed_step = excluded.failed_step, exit_code = excluded.exit_code, previous_attempt = excluded.previous_attempt,
	applied = excluded.applied, active_ms = excluded.active_ms, dispatched_at = excluded.dispatched_at,
	updated_at = excluded.updated_at, finished_at = excluded.finished_at, acked_generation = excluded.acked_generation,
	unreachable_since = excluded.unreachable_since`

// supersedeAttempts clears latest on an agent's attempts before a later one ($3).
const supersedeAttempts = `UPDATE assignments SET latest = 0 WHERE migration = $1 AND agent_id = $2 AND attempt < $3 AND latest = 1`

// writeAssignments upserts as and keeps the latest column (0015_latest_attempts) true: an attempt
// after the first clears it on the agent's earlier attempts. Attempts count from 1 (the
// controller's first attempt), so the common write, of a first attempt, costs no second statement.
// stored says that most of as are rows stored already (a save, not a new migration's rows).
//
// The rows are written as if upserted one after the other, in order. An engine that binds arrays
// (Dialect.ArrayParams) takes them in a statement or two per run of rows of distinct agents
// (upsertAssignmentArrays); the others take a prepared statement or two per row, and a row
// likely stored is updated (assignmentWriter.update).
func (s *Store) writeAssignments(ctx context.Context, tx *sql.Tx, as []wire.Assignment, stored bool) error {
	if len(as) == 0 {
		return nil
	}
	if s.dialect.ArrayParams {
		return upsertAssignmentArrays(ctx, tx, as, stored)
	}
	w := assignmentWriter{ctx: ctx, tx: tx}
	defer w.close()
	for i := range as {
		a := &as[i]
		var err error
		if stored {
			err = w.update(a)
		} else {
			err = w.upsert(a)
		}
		if err != nil {
			return fmt.Errorf("assignment %s/%s#%d: %w", a.Migration, a.AgentID, a.Attempt, err)
		}
	}
	return nil
}

// Statements of assignmentWriter.update. A row whose indexed columns (batch, state, failure: the
// latest attempts' indexes of 0015_latest_attempts, assignments_agent, assignments_grid) keep
// their values is written without them: SQLite rewrites an index entry whenever a statement sets
// one of the index's columns, whatever the value, and a dispatch, or a report that moves no
// state, rewrote seven index entries of each row it wrote. The other rows are written whole.
const (
	updateAssignmentSameIndexed = `UPDATE assignments SET generation = $4, action = $5, step = $6, step_name = $7, error = $8,
	failed_step = $9, exit_code = $10, previous_attempt = $11, applied = $12, active_ms = $13, dispatched_at = $14,
	updated_at = $15, finished_at = $16, acked_generation = $17, unreachable_since = $18
	WHERE migration = $1 AND agent_id = $2 AND attempt = $3 AND batch = $19 AND state = $20 AND failure = $21`
	updateAssignmentWhole = `UPDATE assignments SET generation = $4, action = $5, step = $6, step_name = $7, error = $8,
	failed_step = $9, exit_code = $10, previous_attempt = $11, applied = $12, active_ms = $13, dispatched_at = $14,
	updated_at = $15, finished_at = $16, acked_generation = $17, unreachable_since = $18, batch = $19, state = $20, failure = $21
	WHERE migration = $1 AND agent_id = $2 AND attempt = $3`
)

// assignmentWriter writes assignments one statement per row (or two), each statement prepared
// once per transaction, when first needed.
type assignmentWriter struct {
	ctx                                context.Context
	tx                                 *sql.Tx
	upsertStmt, supersede, same, whole *sql.Stmt
}

func (w *assignmentWriter) exec(stmt **sql.Stmt, query string, args ...any) (sql.Result, error) {
	if *stmt == nil {
		st, err := w.tx.PrepareContext(w.ctx, query)
		if err != nil {
			return nil, err
		}
		*stmt = st
	}
	return (*stmt).ExecContext(w.ctx, args...)
}

func (w *assignmentWriter) close() {
	for _, st := range []*sql.Stmt{w.upsertStmt, w.supersede, w.same, w.whole} {
		if st != nil {
			_ = st.Close()
		}
	}
}

// upsert writes a with upsertAssignment.
func (w *assignmentWriter) upsert(a *wire.Assignment) error {
	if _, err := w.exec(&w.upsertStmt, upsertAssignment, assignmentArgs(*a)...); err != nil {
		return err
	}
	return w.supersedeBefore(a)
}

// supersedeBefore clears latest on the agent's attempts before a.
func (w *assignmentWriter) supersedeBefore(a *wire.Assignment) error {
	if a.Attempt <= 1 {
		return nil
	}
	if _, err := w.exec(&w.supersede, supersedeAttempts, a.Migration, a.AgentID, a.Attempt); err != nil {
		return fmt.Errorf("earlier attempts: %w", err)
	}
	return nil
}

// update is upsert for a row that is likely stored: it updates the row (without its indexed
// columns when they keep their values), and upserts it if it is not there. What it stores is
// what upsert would.
func (w *assignmentWriter) update(a *wire.Assignment) error {
	var exit any
	if a.ExitCode != nil {
		exit = *a.ExitCode
	}
	args := []any{a.Migration, a.AgentID, a.Attempt, a.Generation, a.Action, a.Step, a.StepName, a.Error, a.FailedStep, exit,
		a.PreviousAttempt, a.Applied, a.ActiveMS, micros(a.DispatchedAt), micros(a.UpdatedAt), micros(a.FinishedAt),
		a.AckedGeneration, micros(a.UnreachableSince), a.Batch, a.State, a.Failure}
	for _, same := range [...]bool{true, false} {
		stmt, query := &w.whole, updateAssignmentWhole
		if same {
			stmt, query = &w.same, updateAssignmentSameIndexed
		}
		res, err := w.exec(stmt, query, args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n > 0 {
			return w.supersedeBefore(a)
		}
	}
	return w.upsert(a)
}

// unnestAssignments takes arrays of each column of assignmentCols apart into rows v.
const unnestAssignments = `unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::bigint[], $9::text[],
		$10::text[], $11::text[], $12::text[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[],
		$19::bigint[], $20::bigint[], $21::bigint[], $22::bigint[])
	AS v(migration, agent_id, attempt, batch, state, generation, action, step, step_name, error, failure, failed_step, exit_code,
		previous_attempt, applied, active_ms, dispatched_at, created_at, updated_at, finished_at, acked_generation, unreachable_since)`

// upsertAssignmentsUnnest is upsertAssignment for arrays of each column (Dialect.ArrayParams).
const upsertAssignmentsUnnest = `INSERT INTO assignments (` + assignmentCols + `, latest)
	SELECT v.*, CASE WHEN EXISTS (SELECT 1 FROM assignments h WHERE h.migration = v.migration AND h.agent_id = v.agent_id AND h.attempt > v.attempt) THEN 0 ELSE 1 END
	FROM ` + unnestAssignments + `
	` + assignmentConflict

// updateAssignmentsUnnest is what upsertAssignmentsUnnest does to the rows stored already, and
// nothing else: on PostgreSQL it takes about two thirds of the time, without the look for a
// later attempt and the insert tried first of each row.
const updateAssignmentsUnnest = `UPDATE assignments a SET batch = v.batch, state = v.state, generation = v.generation,
	action = v.action, step = v.step, step_name = v.step_name, error = v.error, failure = v.failure, failed_step = v.failed_step,
	exit_code = v.exit_code, previous_attempt = v.previous_attempt, applied = v.applied, active_ms = v.active_ms,
	dispatched_at = v.dispatched_at, updated_at = v.updated_at, finished_at = v.finished_at, acked_generation = v.acked_generation,
	unreachable_since = v.unreachable_since
	FROM ` + unnestAssignments + `
	WHERE a.migration = v.migration AND a.agent_id = v.agent_id AND a.attempt = v.attempt`

// supersedeAttemptsUnnest is supersedeAttempts for arrays of agents' later attempts.
const supersedeAttemptsUnnest = `UPDATE assignments a SET latest = 0
	FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v(migration, agent_id, attempt)
	WHERE a.migration = v.migration AND a.agent_id = v.agent_id AND a.attempt < v.attempt AND a.latest = 1`

// upsertAssignmentArrays writes as with a statement (two with later attempts) per run of rows of
// distinct agents: within such a run no row's write depends on another's, so one statement does
// what upserting them one after the other does (and a statement may not upsert a row twice).
// An agent's second row in as starts the next run. stored: see writeAssignments.
func upsertAssignmentArrays(ctx context.Context, tx *sql.Tx, as []wire.Assignment, stored bool) error {
	type agent struct{ migration, id string }
	seen := make(map[agent]bool, len(as))
	start := 0
	for i := range as {
		k := agent{as[i].Migration, as[i].AgentID}
		if seen[k] {
			if err := upsertAssignmentRun(ctx, tx, as[start:i], stored); err != nil {
				return err
			}
			clear(seen)
			start = i
		}
		seen[k] = true
	}
	return upsertAssignmentRun(ctx, tx, as[start:], stored)
}

// upsertAssignmentRun writes as, of distinct agents, with upsertAssignmentsUnnest, then
// supersedes the earlier attempts of its later attempts. When stored, it updates them first, and
// upserts them only if some were not stored (writing the rows just updated again, unchanged).
func upsertAssignmentRun(ctx context.Context, tx *sql.Tx, as []wire.Assignment, stored bool) error {
	n := len(as)
	migrations, agents, states, actions, stepNames, errs, failures, failedSteps :=
		make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	attempts, batches, generations, steps, previous, applied, acked :=
		make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	exits := make([]*int64, n)
	active, dispatched, created, updated, finished, unreachable :=
		make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	var later []int
	for i := range as {
		a := &as[i]
		migrations[i], agents[i], states[i], actions[i], stepNames[i] = a.Migration, a.AgentID, a.State, a.Action, a.StepName
		errs[i], failures[i], failedSteps[i] = a.Error, a.Failure, a.FailedStep
		attempts[i], batches[i], generations[i], steps[i] = int64(a.Attempt), int64(a.Batch), int64(a.Generation), int64(a.Step)
		previous[i], applied[i], acked[i] = int64(a.PreviousAttempt), int64(a.Applied), int64(a.AckedGeneration)
		if a.ExitCode != nil {
			v := int64(*a.ExitCode)
			exits[i] = &v
		}
		active[i], dispatched[i], created[i], updated[i] = a.ActiveMS, micros(a.DispatchedAt), micros(a.CreatedAt), micros(a.UpdatedAt)
		finished[i], unreachable[i] = micros(a.FinishedAt), micros(a.UnreachableSince)
		if a.Attempt > 1 {
			later = append(later, i)
		}
	}
	args := []any{migrations, agents, attempts, batches, states, generations, actions, steps, stepNames, errs, failures, failedSteps,
		exits, previous, applied, active, dispatched, created, updated, finished, acked, unreachable}
	written := false
	if stored {
		res, err := tx.ExecContext(ctx, updateAssignmentsUnnest, args...)
		if err != nil {
			return fmt.Errorf("%d assignments of %s from %s#%d: %w", n, as[0].Migration, as[0].AgentID, as[0].Attempt, err)
		}
		matched, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("%d assignments of %s from %s#%d: %w", n, as[0].Migration, as[0].AgentID, as[0].Attempt, err)
		}
		written = matched == int64(n)
	}
	if !written {
		if _, err := tx.ExecContext(ctx, upsertAssignmentsUnnest, args...); err != nil {
			return fmt.Errorf("%d assignments of %s from %s#%d: %w", n, as[0].Migration, as[0].AgentID, as[0].Attempt, err)
		}
	}
	if len(later) == 0 {
		return nil
	}
	lm, la, lt := make([]string, len(later)), make([]string, len(later)), make([]int64, len(later))
	for j, i := range later {
		lm[j], la[j], lt[j] = migrations[i], agents[i], attempts[i]
	}
	if _, err := tx.ExecContext(ctx, supersedeAttemptsUnnest, lm, la, lt); err != nil {
		return fmt.Errorf("earlier attempts of %d assignments: %w", len(later), err)
	}
	return nil
}

// CreateMigration implements store.Store.
func (s *Store) CreateMigration(ctx context.Context, m wire.Migration, as []wire.Assignment) error {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("create migration: %w", err)
	}
	defer end()
	var deletedAt int64
	err = tx.QueryRowContext(ctx, `SELECT deleted_at FROM deleted_migrations WHERE name = $1`, m.Name).Scan(&deletedAt)
	switch {
	case err == nil:
		return fmt.Errorf("the name %q belonged to a migration deleted at %s; agents keep the results of its attempts under that name, so it cannot be used again: choose another name: %w",
			m.Name, fromMicros(deletedAt).Format(time.RFC3339), fault.ErrConflict)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("create migration: %w", err)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO migrations (`+migrationCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,1)
		ON CONFLICT (name) DO NOTHING`, m.Name, m.Spec, m.SpecHash, m.State, m.Reason, m.Batches, m.CurrentBatch, m.ApprovedBatch,
		m.ActiveMS, micros(m.CreatedAt), micros(m.UpdatedAt), micros(m.FinishedAt))
	if err != nil {
		return fmt.Errorf("create migration: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("migration %q already exists: %w", m.Name, fault.ErrConflict)
	}
	if err := s.writeAssignments(ctx, tx, as, false); err != nil {
		return fmt.Errorf("create migration: %w", err)
	}
	return tx.Commit()
}

// GetMigration implements store.Store.
func (s *Store) GetMigration(ctx context.Context, name string) (wire.Migration, error) {
	m, err := scanMigration(s.db.QueryRowContext(ctx, `SELECT `+migrationCols+` FROM migrations WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("migration %q: %w", name, fault.ErrNotFound)
	}
	return m, err
}

// ListMigrations implements store.Store.
func (s *Store) ListMigrations(ctx context.Context) ([]wire.Migration, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+migrationCols+` FROM migrations ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	defer rows.Close()
	out := []wire.Migration{}
	for rows.Next() {
		m, err := scanMigration(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// ListAssignments implements store.Store.
func (s *Store) ListAssignments(ctx context.Context, migration string) ([]wire.Assignment, error) {
	// Counted first (from the index assignments_state): a fleet-wide migration's 10,000 rows of
	// 300 bytes each are read into one allocation instead of a slice grown, copied and cleared
	// again and again.
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM assignments WHERE migration = $1`, migration).Scan(&n); err != nil {
		return nil, fmt.Errorf("list assignments: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+assignmentCols+` FROM assignments WHERE migration = $1 ORDER BY batch, agent_id, attempt`, migration)
	if err != nil {
		return nil, fmt.Errorf("list assignments: %w", err)
	}
	defer rows.Close()
	out := make([]wire.Assignment, 0, n)
	for rows.Next() {
		a, err := scanAssignment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// SaveMigration implements store.Store.
func (s *Store) SaveMigration(ctx context.Context, fence store.Fence, m wire.Migration, changed []wire.Assignment) error {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("save migration: %w", err)
	}
	defer end()
	if fence.Epoch != 0 {
		// Touching the leadership row both checks the epoch and, on PostgreSQL, locks the row
		// until commit, so a new leader cannot take over between this check and the writes.
		res, err := tx.ExecContext(ctx, `UPDATE leadership SET epoch = epoch WHERE name = $1 AND epoch = $2`, fence.Name, fence.Epoch)
		if err != nil {
			return fmt.Errorf("save migration: fence: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("save migration %s: epoch %d of %s is no longer current: %w", m.Name, fence.Epoch, fence.Name, fault.ErrFenced)
		}
	}
	res, err := tx.ExecContext(ctx, `UPDATE migrations SET state = $3, reason = $4, batches = $5, current_batch = $6,
		approved_batch = $7, active_ms = $8, updated_at = $9, finished_at = $10, spec = $11, spec_hash = $12, version = version + 1
		WHERE name = $1 AND version = $2`, m.Name, m.Version, m.State, m.Reason, m.Batches, m.CurrentBatch, m.ApprovedBatch,
		m.ActiveMS, micros(m.UpdatedAt), micros(m.FinishedAt), m.Spec, m.SpecHash)
	if err != nil {
		return fmt.Errorf("save migration: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		if _, err := s.GetMigration(ctx, m.Name); err != nil {
			return err
		}
		return fmt.Errorf("migration %s changed since version %d: %w", m.Name, m.Version, fault.ErrConflict)
	}
	if err := s.writeAssignments(ctx, tx, changed, true); err != nil {
		return fmt.Errorf("save migration: %w", err)
	}
	return tx.Commit()
}

// DeleteMigration implements store.Store.
func (s *Store) DeleteMigration(ctx context.Context, name string, version int64, at time.Time) error {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("delete migration: %w", err)
	}
	defer end()
	res, err := tx.ExecContext(ctx, `DELETE FROM migrations WHERE name = $1 AND version = $2`, name, version)
	if err != nil {
		return fmt.Errorf("delete migration: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		if _, err := s.GetMigration(ctx, name); err != nil {
			return err
		}
		return fmt.Errorf("migration %s changed since version %d: %w", name, version, fault.ErrConflict)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM assignments WHERE migration = $1`, name); err != nil {
		return fmt.Errorf("delete migration: assignments: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO deleted_migrations (name, deleted_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`,
		name, micros(at)); err != nil {
		return fmt.Errorf("delete migration: %w", err)
	}
	return tx.Commit()
}

// ReconcileFindings implements store.Store.
func (s *Store) ReconcileFindings(ctx context.Context, fence store.Fence, current []wire.CheckFinding, now time.Time) ([]wire.CheckFinding, []store.OpenFinding, error) {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("reconcile findings: %w", err)
	}
	defer end()
	if err := checkFence(ctx, tx, fence); err != nil {
		return nil, nil, fmt.Errorf("reconcile findings: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT kind, migration, agent_id, attempt, detail, fix, first_seen FROM check_findings`)
	if err != nil {
		return nil, nil, fmt.Errorf("reconcile findings: %w", err)
	}
	open := map[findingKey]store.OpenFinding{}
	for rows.Next() {
		var f store.OpenFinding
		var first int64
		if err := rows.Scan(&f.Kind, &f.Migration, &f.AgentID, &f.Attempt, &f.Detail, &f.Fix, &first); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("reconcile findings: %w", err)
		}
		f.FirstSeen = fromMicros(first)
		open[keyOf(f.CheckFinding)] = f
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("reconcile findings: %w", err)
	}
	var opened []wire.CheckFinding
	seen := map[findingKey]bool{}
	for _, f := range current {
		k := keyOf(f)
		if seen[k] {
			continue
		}
		seen[k] = true
		if _, ok := open[k]; ok {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO check_findings (kind, migration, agent_id, attempt, detail, fix, first_seen)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, f.Kind, f.Migration, f.AgentID, f.Attempt, f.Detail, f.Fix, micros(now)); err != nil {
			return nil, nil, fmt.Errorf("reconcile findings: %w", err)
		}
		opened = append(opened, f)
	}
	var resolved []store.OpenFinding
	for k, f := range open {
		if seen[k] {
			continue
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM check_findings WHERE kind = $1 AND migration = $2 AND agent_id = $3 AND attempt = $4`,
			f.Kind, f.Migration, f.AgentID, f.Attempt); err != nil {
			return nil, nil, fmt.Errorf("reconcile findings: %w", err)
		}
		resolved = append(resolved, f)
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("reconcile findings: %w", err)
	}
	sort.Slice(resolved, func(i, j int) bool { return lessFinding(resolved[i].CheckFinding, resolved[j].CheckFinding) })
	return opened, resolved, nil
}

// findingKey is what makes two findings the same one: the detail (which says how long ago)
// may change between checks.
type findingKey struct {
	kind, migration, agent string
	attempt                int
}

func keyOf(f wire.CheckFinding) findingKey {
	return findingKey{f.Kind, f.Migration, f.AgentID, f.Attempt}
}

func lessFinding(a, b wire.CheckFinding) bool {
	if a.Migration != b.Migration {
		return a.Migration < b.Migration
	}
	if a.AgentID != b.AgentID {
		return a.AgentID < b.AgentID
	}
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	return a.Attempt < b.Attempt
}
