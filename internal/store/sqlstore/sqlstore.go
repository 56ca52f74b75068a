// Package sqlstore implements store.Store on database/sql. The SQL text is shared by every
// engine ($N placeholders, ON CONFLICT, RETURNING work on SQLite and PostgreSQL alike); what
// differs per engine — the driver, connection set-up and the migration lock — comes in a Dialect.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Dialect is what an engine package supplies.
type Dialect struct {
	// Name is "sqlite" or "postgres"; it selects engine-specific migration files.
	Name string
	// Lock takes the engine's migration lock on conn and returns its release function.
	Lock func(ctx context.Context, conn *sql.Conn) (unlock func(), err error)
	// IsTransient reports whether an error is worth retrying (busy database, lost connection).
	IsTransient func(err error) bool
	// RowsPerInsert is how many rows one INSERT statement carries when a batch is written
	// (events and their derived state); 0 means DefaultRowsPerInsert. An engine reached over
	// the network wants many rows per round trip. An in-process engine is fastest with 1: one
	// prepared statement executed per row, which SQLite runs without parsing anything again.
	RowsPerInsert int
	// ArrayParams says that the driver binds Go slices as SQL arrays and the engine has unnest
	// (PostgreSQL through pgx): a batch of events is then one statement of one array per column,
	// encoded in binary and planned once, instead of statements of RowsPerInsert rows of
	// parameters. RowsPerInsert does not apply to events then.
	ArrayParams bool
	// OneEventWriter writes every batch of events on one connection kept for it (SQLite). Each
	// connection has its own page cache, and in WAL mode a connection that did not write last
	// must drop all of it and read the pages again; batches spread over the pool (as the pool
	// hands out whichever connection a reader just returned) spent about a third of the insert
	// time doing so. The engine has one writer at a time anyway.
	OneEventWriter bool
	// OneWriter queues the store's writes in this process, in the order they came, for the
	// engine's single write lock (SQLite), instead of each one polling for it with the engine's
	// busy handler. Polling is unfair: a writer that commits and begins again at once (the
	// ingest with a backlog) takes the lock back before the sleepers wake, so a controller's
	// save of a few hundred rows waited seconds, and every waiting writer held one of the
	// pool's few connections meanwhile, so readers waited too. Queued, a write waits for the
	// writes that came before it, no more.
	OneWriter bool
	// Maintain, if set, runs in its own goroutine from Open until Close (which cancels ctx and
	// waits for it): upkeep the engine wants done off the writers' path.
	Maintain func(ctx context.Context, db *sql.DB)
}

// DefaultRowsPerInsert is Dialect.RowsPerInsert when the dialect leaves it zero: large enough
// to amortise statement overhead, small enough to stay under every engine's bound-parameter
// limit.
const DefaultRowsPerInsert = 200

// Store is the database/sql implementation of store.Store.
type Store struct {
	db      *sql.DB
	dialect Dialect

	stopMaintain context.CancelFunc // nil without Dialect.Maintain
	maintained   chan struct{}      // closed when Maintain has returned

	// eventConn holds the connection events are written on (Dialect.OneEventWriter), nil until
	// the first batch; whoever takes it writes, the others wait.
	eventConn chan *sql.Conn
	// writer is the turn to write (Dialect.OneWriter): whoever holds its one slot writes; the
	// others wait in arrival order. Nil without OneWriter.
	writer  chan struct{}
	waiting atomic.Int32 // writers waiting for their turn
}

var _ store.Store = (*Store)(nil)

// Open migrates the schema under the dialect's lock and returns the store. It takes ownership
// of db: on error db is closed.
func Open(ctx context.Context, db *sql.DB, d Dialect) (*Store, error) {
	if err := runMigrations(ctx, db, d); err != nil {
		_ = db.Close()
		return nil, err
	}
	if d.RowsPerInsert <= 0 {
		d.RowsPerInsert = DefaultRowsPerInsert
	}
	s := &Store{db: db, dialect: d}
	if d.OneWriter {
		s.writer = make(chan struct{}, 1)
	}
	if d.OneEventWriter {
		s.eventConn = make(chan *sql.Conn, 1)
		s.eventConn <- nil
	}
	if d.Maintain != nil {
		mctx, cancel := context.WithCancel(context.Background())
		s.stopMaintain, s.maintained = cancel, make(chan struct{})
		go func() {
			defer close(s.maintained)
			d.Maintain(mctx, db)
		}()
	}
	return s, nil
}

func runMigrations(ctx context.Context, db *sql.DB, d Dialect) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	unlock, err := d.Lock(ctx, conn)
	if err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer unlock()
	return migrate(ctx, conn, d.Name)
}

// DB exposes the handle for engine-specific tests and benchmarks.
func (s *Store) DB() *sql.DB { return s.db }

// Engine implements store.Store.
func (s *Store) Engine() string { return s.dialect.Name }

// IsTransient reports whether err is a transient database error.
func (s *Store) IsTransient(err error) bool {
	return s.dialect.IsTransient != nil && s.dialect.IsTransient(err)
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Close implements store.Store.
func (s *Store) Close() error {
	if s.stopMaintain != nil {
		s.stopMaintain()
		<-s.maintained
	}
	if s.eventConn != nil {
		select {
		case c := <-s.eventConn:
			if c != nil {
				_ = c.Close()
			}
		default: // a batch is being written; db.Close closes its connection when it is done
		}
	}
	return s.db.Close()
}

// SchemaVersion implements store.Store.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM godwit_schema_migrations`).Scan(&v)
	return v, err
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// InitAdminToken implements store.Store.
func (s *Store) InitAdminToken(ctx context.Context, hash string, now time.Time) (bool, error) {
	res, err := s.exec(ctx, `INSERT INTO hub_settings (key, value, created_at) VALUES ('admin_token_hash', $1, $2)
		ON CONFLICT (key) DO NOTHING`, hash, micros(now))
	if err != nil {
		return false, fmt.Errorf("store admin token: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// CheckAdminToken implements store.Store.
func (s *Store) CheckAdminToken(ctx context.Context, hash string) error {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM hub_settings WHERE key = 'admin_token_hash' AND value = $1`, hash).Scan(&n)
	if err != nil {
		return fmt.Errorf("check admin token: %w", err)
	}
	if n != 1 {
		return fault.ErrUnauthenticated
	}
	return nil
}

// EnsureSetting implements store.Store.
func (s *Store) EnsureSetting(ctx context.Context, key, value string, now time.Time) (string, error) {
	if key == "" || key == "admin_token_hash" {
		return "", fault.Invalid("key", "%q is not a setting EnsureSetting may write", key)
	}
	if _, err := s.exec(ctx, `INSERT INTO hub_settings (key, value, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO NOTHING`, key, value, micros(now)); err != nil {
		return "", fmt.Errorf("ensure setting %s: %w", key, err)
	}
	var stored string
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM hub_settings WHERE key = $1`, key).Scan(&stored); err != nil {
		return "", fmt.Errorf("ensure setting %s: %w", key, err)
	}
	return stored, nil
}

// CreateEnrollToken implements store.Store.
func (s *Store) CreateEnrollToken(ctx context.Context, t wire.EnrollToken, hash string) error {
	_, err := s.exec(ctx, `INSERT INTO enroll_tokens (id, hash, description, max_uses, uses, expires_at, created_at)
		VALUES ($1, $2, $3, $4, 0, $5, $6)`, t.ID, hash, t.Description, t.MaxUses, micros(t.ExpiresAt), micros(t.CreatedAt))
	if err != nil {
		return fmt.Errorf("create enroll token: %w", err)
	}
	return nil
}

// ListEnrollTokens implements store.Store.
func (s *Store) ListEnrollTokens(ctx context.Context) ([]wire.EnrollToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, description, max_uses, uses, expires_at, created_at FROM enroll_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list enroll tokens: %w", err)
	}
	defer rows.Close()
	out := []wire.EnrollToken{}
	for rows.Next() {
		var t wire.EnrollToken
		var exp, created int64
		if err := rows.Scan(&t.ID, &t.Description, &t.MaxUses, &t.Uses, &exp, &created); err != nil {
			return nil, err
		}
		t.ExpiresAt, t.CreatedAt = fromMicros(exp), fromMicros(created)
		out = append(out, t)
	}
	return out, rows.Err()
}

// DeleteEnrollToken implements store.Store.
func (s *Store) DeleteEnrollToken(ctx context.Context, id string) error {
	res, err := s.exec(ctx, `DELETE FROM enroll_tokens WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete enroll token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("enroll token %q: %w", id, fault.ErrNotFound)
	}
	return nil
}

// Enroll implements store.Store.
func (s *Store) Enroll(ctx context.Context, tokenHash string, now time.Time, a wire.Agent, credHash string) error {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	defer end()

	var tokenID string
	err = tx.QueryRowContext(ctx, `UPDATE enroll_tokens SET uses = uses + 1
		WHERE hash = $1 AND uses < max_uses AND expires_at > $2 RETURNING id`, tokenHash, micros(now)).Scan(&tokenID)
	if errors.Is(err, sql.ErrNoRows) {
		var maxUses, uses int
		var exp int64
		err := tx.QueryRowContext(ctx, `SELECT max_uses, uses, expires_at FROM enroll_tokens WHERE hash = $1`, tokenHash).Scan(&maxUses, &uses, &exp)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("enrollment token is not valid: %w", fault.ErrUnauthenticated)
		case err != nil:
			return fmt.Errorf("enroll: %w", err)
		case exp <= micros(now):
			return fmt.Errorf("enrollment token expired at %s: %w", fromMicros(exp).Format(time.RFC3339), fault.ErrForbidden)
		default:
			return fmt.Errorf("enrollment token already used %d of %d times: %w", uses, maxUses, fault.ErrForbidden)
		}
	}
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	// Names are unique among unrevoked agents, whatever their case: the unique index on
	// name_key decides between enrollments racing; this look-up also finds the agents enrolled
	// before the index, which may share a name and have no key (0010_access.sql). Two searches
	// of the index, not one "name_key = $1 OR lower(name) = $1", which scans every agent (an
	// enrollment then costs as much as the fleet is large: 100,000 of them took hours).
	nameKey := strings.ToLower(a.Name)
	var other string
	err = tx.QueryRowContext(ctx, `SELECT id FROM agents WHERE revoked_at IS NULL AND name_key = $1
		UNION ALL SELECT id FROM agents WHERE revoked_at IS NULL AND name_key IS NULL AND lower(name) = $1 LIMIT 1`,
		nameKey).Scan(&other)
	switch {
	case err == nil:
		return duplicateName(a.Name, other)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("enroll: %w", err)
	}
	labels, _ := json.Marshal(nonNil(a.Labels))
	system, _ := json.Marshal(a.System)
	_, err = tx.ExecContext(ctx, `INSERT INTO agents (id, name, labels, version, system, enrolled_at, enroll_token, status, cred_hash, name_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		a.ID, a.Name, string(labels), a.Version, string(system), micros(a.EnrolledAt), tokenID, wire.StatusUnknown, credHash, nameKey)
	if err != nil {
		if isUniqueViolation(err, "agents_name_key", "agents.name_key") {
			return duplicateName(a.Name, "")
		}
		return fmt.Errorf("enroll: create agent: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("enroll: commit: %w", err)
	}
	return nil
}

func duplicateName(name, id string) error {
	if id != "" {
		id = " (" + id + ")"
	}
	return fmt.Errorf("an agent named %q is already enrolled%s: revoke it first, or enroll under another name: %w", name, id, fault.ErrConflict)
}

// isUniqueViolation reports whether err is the engine's unique-constraint error on the named
// index (PostgreSQL names the index, SQLite the table and column).
func isUniqueViolation(err error, names ...string) bool {
	msg := err.Error()
	for _, n := range names {
		if strings.Contains(msg, n) {
			return true
		}
	}
	return false
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

const agentColumns = `id, name, labels, version, system, enrolled_at, last_seen, status, revoked_at,
	COALESCE((SELECT degraded FROM agent_conditions c WHERE c.agent_id = agents.id), '')`

// setDegraded records the degraded reason of u's heartbeat: a row while there is one, none once
// it is gone (so that a healthy agent's heartbeat only looks up a key here).
func setDegraded(ctx context.Context, tx *sql.Tx, u store.Liveness) error {
	var err error
	switch {
	case u.Degraded == nil:
		return nil
	case *u.Degraded == "":
		_, err = tx.ExecContext(ctx, `DELETE FROM agent_conditions WHERE agent_id = $1`, u.AgentID)
	default:
		_, err = tx.ExecContext(ctx, `INSERT INTO agent_conditions (agent_id, degraded) VALUES ($1, $2)
			ON CONFLICT (agent_id) DO UPDATE SET degraded = excluded.degraded`, u.AgentID, *u.Degraded)
	}
	if err != nil {
		return fmt.Errorf("update degraded reason of %s: %w", u.AgentID, err)
	}
	return nil
}

func scanAgent(row interface{ Scan(...any) error }) (wire.Agent, error) {
	var a wire.Agent
	var labels, system string
	var enrolled, seen int64
	var revoked sql.NullInt64
	if err := row.Scan(&a.ID, &a.Name, &labels, &a.Version, &system, &enrolled, &seen, &a.Status, &revoked, &a.Degraded); err != nil {
		return a, err
	}
	if err := json.Unmarshal([]byte(labels), &a.Labels); err != nil {
		return a, fmt.Errorf("agent %s: labels: %w", a.ID, err)
	}
	if err := json.Unmarshal([]byte(system), &a.System); err != nil {
		return a, fmt.Errorf("agent %s: system: %w", a.ID, err)
	}
	a.EnrolledAt, a.LastSeen = fromMicros(enrolled), fromMicros(seen)
	if revoked.Valid {
		t := fromMicros(revoked.Int64)
		a.RevokedAt = &t
	}
	return a, nil
}

// GetAgent implements store.Store.
func (s *Store) GetAgent(ctx context.Context, id string) (wire.Agent, error) {
	a, err := scanAgent(s.db.QueryRowContext(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("agent %q: %w", id, fault.ErrNotFound)
	}
	return a, err
}

// ListAgents implements store.Store.
func (s *Store) ListAgents(ctx context.Context) ([]wire.Agent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+agentColumns+` FROM agents ORDER BY name, id`)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	defer rows.Close()
	out := []wire.Agent{}
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// AgentCredential implements store.Store.
func (s *Store) AgentCredential(ctx context.Context, id string) (string, bool, error) {
	var hash string
	var revoked sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT cred_hash, revoked_at FROM agents WHERE id = $1`, id).Scan(&hash, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, fmt.Errorf("agent %q: %w", id, fault.ErrNotFound)
	}
	return hash, revoked.Valid, err
}

// RevokeAgent implements store.Store. Revoking twice keeps the first revocation time.
func (s *Store) RevokeAgent(ctx context.Context, id string, now time.Time) error {
	res, err := s.exec(ctx, `UPDATE agents SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1`, id, micros(now))
	if err != nil {
		return fmt.Errorf("revoke agent: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("agent %q: %w", id, fault.ErrNotFound)
	}
	return nil
}

// UpdateLiveness implements store.Store.
func (s *Store) UpdateLiveness(ctx context.Context, updates []store.Liveness) error {
	if len(updates) == 0 {
		return nil
	}
	tx, end, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("update liveness: %w", err)
	}
	defer end()
	// The status column is set only where the stored status differs: SQLite rewrites an index's
	// entries for every column a statement sets, whatever its value, and the status is in three.
	// Most of a fleet's writes keep it (last-seen times of agents that stay online): a row with a
	// status is first written where its status is already the stored one, and only if that
	// matches no row, with the status. The stored status decides, not the caller's idea of it, so
	// a row another writer changed is put right.
	const set = `last_seen = CASE WHEN $2 > last_seen THEN $2 ELSE last_seen END,
		version = CASE WHEN $3 = '' THEN version ELSE $3 END,
		system = CASE WHEN $4 = '' THEN system ELSE $4 END`
	var stmts [3]*sql.Stmt // without the status, where it is already the row's, with it
	defer func() {
		for _, st := range stmts {
			if st != nil {
				_ = st.Close()
			}
		}
	}()
	exec := func(i int, args ...any) (sql.Result, error) {
		if stmts[i] == nil {
			var err error
			q := [...]string{`UPDATE agents SET ` + set + ` WHERE id = $1`,
				`UPDATE agents SET ` + set + ` WHERE id = $1 AND status = $5`,
				`UPDATE agents SET ` + set + `, status = $5 WHERE id = $1`}[i]
			if stmts[i], err = tx.PrepareContext(ctx, q); err != nil {
				return nil, err
			}
		}
		return stmts[i].ExecContext(ctx, args...)
	}
	for _, u := range updates {
		system := ""
		if u.System != nil {
			b, _ := json.Marshal(u.System)
			system = string(b)
		}
		args := []any{u.AgentID, micros(u.LastSeen), u.Version, system}
		var err error
		if u.Status == "" {
			_, err = exec(0, args...)
		} else {
			args = append(args, u.Status)
			var res sql.Result
			var n int64
			if res, err = exec(1, args...); err == nil {
				n, err = res.RowsAffected()
			}
			if err == nil && n == 0 {
				_, err = exec(2, args...)
			}
		}
		if err != nil {
			return fmt.Errorf("update liveness of %s: %w", u.AgentID, err)
		}
		if err := setDegraded(ctx, tx, u); err != nil {
			return err
		}
	}
	return tx.Commit()
}
