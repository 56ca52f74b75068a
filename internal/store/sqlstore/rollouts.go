package sqlstore

// This file stores fleet migrations (rollouts), their assignments and the leadership epochs; the
// schema migrations of the store itself are in migrate.go and migrations/.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
)

// AcquireEpoch implements store.Store.
func (s *Store) AcquireEpoch(ctx context.Context, name, holder string, now time.Time) (int64, error) {
	var epoch int64
	err := s.db.QueryRowContext(ctx, `INSERT INTO leadership (name, epoch, holder, updated_at) VALUES ($1, 1, $2, $3)
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
	res, err := s.db.ExecContext(ctx, `UPDATE leadership SET updated_at = $3 WHERE name = $1 AND epoch = $2`, fence.Name, fence.Epoch, micros(now))
	if err != nil {
		return fmt.Errorf("touch epoch: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("epoch %d of %s is no longer current: %w", fence.Epoch, fence.Name, fault.ErrFenced)
	}
	return nil
}

const migrationCols = `name, spec, spec_hash, state, reason, batches, current_batch, approved_batch, active_ms, created_at, updated_at, finished_at, version`

func scanMigration(row interface{ Scan(...any) error }) (store.Migration, error) {
	var m store.Migration
	var created, updated, finished int64
	err := row.Scan(&m.Name, &m.Spec, &m.SpecHash, &m.State, &m.Reason, &m.Batches, &m.CurrentBatch, &m.ApprovedBatch,
		&m.ActiveMS, &created, &updated, &finished, &m.Version)
	m.CreatedAt, m.UpdatedAt, m.FinishedAt = fromMicros(created), fromMicros(updated), fromMicros(finished)
	return m, err
}

const assignmentCols = `migration, agent_id, attempt, batch, state, generation, action, step, step_name, error, failure, failed_step, exit_code,
	previous_attempt, applied, active_ms, dispatched_at, created_at, updated_at, finished_at`

func scanAssignment(row interface{ Scan(...any) error }) (store.Assignment, error) {
	var a store.Assignment
	var exit sql.NullInt64
	var dispatched, created, updated, finished int64
	err := row.Scan(&a.Migration, &a.AgentID, &a.Attempt, &a.Batch, &a.State, &a.Generation, &a.Action, &a.Step, &a.StepName,
		&a.Error, &a.Failure, &a.FailedStep, &exit, &a.PreviousAttempt, &a.Applied, &a.ActiveMS, &dispatched, &created, &updated, &finished)
	if exit.Valid {
		v := int(exit.Int64)
		a.ExitCode = &v
	}
	a.DispatchedAt, a.CreatedAt, a.UpdatedAt, a.FinishedAt = fromMicros(dispatched), fromMicros(created), fromMicros(updated), fromMicros(finished)
	return a, err
}

func assignmentArgs(a store.Assignment) []any {
	var exit any
	if a.ExitCode != nil {
		exit = *a.ExitCode
	}
	return []any{a.Migration, a.AgentID, a.Attempt, a.Batch, a.State, a.Generation, a.Action, a.Step, a.StepName, a.Error, a.Failure, a.FailedStep, exit,
		a.PreviousAttempt, a.Applied, a.ActiveMS, micros(a.DispatchedAt), micros(a.CreatedAt), micros(a.UpdatedAt), micros(a.FinishedAt)}
}

// upsertAssignment is prepared once per transaction.
var upsertAssignment = `INSERT INTO assignments (` + assignmentCols + `) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)
	ON CONFLICT (migration, agent_id, attempt) DO UPDATE SET batch = excluded.batch, state = excluded.state,
	generation = excluded.generation, action = excluded.action, step = excluded.step, step_name = excluded.step_name,
	error = excluded.error, failure = excluded.failure, failed_step = excluded.failed_step, exit_code = excluded.exit_code, previous_attempt = excluded.previous_attempt,
	applied = excluded.applied, active_ms = excluded.active_ms, dispatched_at = excluded.dispatched_at,
	updated_at = excluded.updated_at, finished_at = excluded.finished_at`

func writeAssignments(ctx context.Context, tx *sql.Tx, as []store.Assignment) error {
	if len(as) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, upsertAssignment)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, a := range as {
		if _, err := stmt.ExecContext(ctx, assignmentArgs(a)...); err != nil {
			return fmt.Errorf("assignment %s/%s#%d: %w", a.Migration, a.AgentID, a.Attempt, err)
		}
	}
	return nil
}

// CreateMigration implements store.Store.
func (s *Store) CreateMigration(ctx context.Context, m store.Migration, as []store.Assignment) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create migration: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, `INSERT INTO migrations (`+migrationCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,1)
		ON CONFLICT (name) DO NOTHING`, m.Name, m.Spec, m.SpecHash, m.State, m.Reason, m.Batches, m.CurrentBatch, m.ApprovedBatch,
		m.ActiveMS, micros(m.CreatedAt), micros(m.UpdatedAt), micros(m.FinishedAt))
	if err != nil {
		return fmt.Errorf("create migration: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("migration %q already exists: %w", m.Name, fault.ErrConflict)
	}
	if err := writeAssignments(ctx, tx, as); err != nil {
		return fmt.Errorf("create migration: %w", err)
	}
	return tx.Commit()
}

// GetMigration implements store.Store.
func (s *Store) GetMigration(ctx context.Context, name string) (store.Migration, error) {
	m, err := scanMigration(s.db.QueryRowContext(ctx, `SELECT `+migrationCols+` FROM migrations WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("migration %q: %w", name, fault.ErrNotFound)
	}
	return m, err
}

// ListMigrations implements store.Store.
func (s *Store) ListMigrations(ctx context.Context) ([]store.Migration, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+migrationCols+` FROM migrations ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	defer rows.Close()
	out := []store.Migration{}
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
func (s *Store) ListAssignments(ctx context.Context, migration string) ([]store.Assignment, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+assignmentCols+` FROM assignments WHERE migration = $1 ORDER BY batch, agent_id, attempt`, migration)
	if err != nil {
		return nil, fmt.Errorf("list assignments: %w", err)
	}
	defer rows.Close()
	var out []store.Assignment
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
func (s *Store) SaveMigration(ctx context.Context, fence store.Fence, m store.Migration, changed []store.Assignment) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("save migration: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
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
	if err := writeAssignments(ctx, tx, changed); err != nil {
		return fmt.Errorf("save migration: %w", err)
	}
	return tx.Commit()
}
