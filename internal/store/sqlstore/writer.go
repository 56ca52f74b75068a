package sqlstore

import (
	"context"
	"database/sql"
)

// turn waits for the store's turn to write (Dialect.OneWriter) and returns the function that
// gives it up. Waiting writers are served in the order they came: the Go runtime hands a full
// buffered channel's freed slot to its longest-blocked sender, so no newcomer takes it first
// (runtime behaviour, not a promise of the language; TestWritersTakeTurnsInOrder checks it).
// Without OneWriter it waits for nothing.
func (s *Store) turn(ctx context.Context) (func(), error) {
	if s.writer == nil {
		return func() {}, nil
	}
	select {
	case s.writer <- struct{}{}:
		return func() { <-s.writer }, nil
	default:
	}
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	select {
	case s.writer <- struct{}{}:
		return func() { <-s.writer }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// begin begins a write transaction in the store's turn. end rolls it back unless it was
// committed, and gives the turn up: callers defer it right away, and commit before returning.
// A write transaction must not call another of the store's writing methods: it would wait for
// its own turn.
func (s *Store) begin(ctx context.Context) (tx *sql.Tx, end func(), err error) {
	done, err := s.turn(ctx)
	if err != nil {
		return nil, nil, err
	}
	if tx, err = s.db.BeginTx(ctx, nil); err != nil {
		done()
		return nil, nil, err
	}
	return tx, func() { _ = tx.Rollback(); done() }, nil
}

// exec runs one writing statement outside a transaction, in the store's turn.
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	done, err := s.turn(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return s.db.ExecContext(ctx, query, args...)
}
