package sqlstore

// API tokens and the audit log (store.AccessStore).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// CreateAPIToken implements store.AccessStore.
func (s *Store) CreateAPIToken(ctx context.Context, t wire.APIToken, hash string) error {
	if !t.Role.Valid() {
		return fault.Invalid("role", "%q is not viewer, operator or admin", t.Role)
	}
	res, err := s.exec(ctx, `INSERT INTO api_tokens (id, hash, role, description, created_by, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
		t.ID, hash, string(t.Role), t.Description, t.CreatedBy, micros(t.CreatedAt), micros(t.ExpiresAt))
	if err != nil {
		return fmt.Errorf("create api token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("create api token: id or secret already in use: %w", fault.ErrConflict)
	}
	return nil
}

const apiTokenColumns = `id, role, description, created_by, created_at, expires_at, revoked_at`

func scanAPIToken(row interface{ Scan(...any) error }) (wire.APIToken, error) {
	var t wire.APIToken
	var role string
	var created, expires int64
	var revoked sql.NullInt64
	if err := row.Scan(&t.ID, &role, &t.Description, &t.CreatedBy, &created, &expires, &revoked); err != nil {
		return t, err
	}
	t.Role, t.CreatedAt, t.ExpiresAt = wire.Role(role), fromMicros(created), fromMicros(expires)
	if revoked.Valid {
		r := fromMicros(revoked.Int64)
		t.RevokedAt = &r
	}
	return t, nil
}

// APITokenByHash implements store.AccessStore.
func (s *Store) APITokenByHash(ctx context.Context, hash string) (wire.APIToken, error) {
	t, err := scanAPIToken(s.db.QueryRowContext(ctx, `SELECT `+apiTokenColumns+` FROM api_tokens WHERE hash = $1`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return wire.APIToken{}, fmt.Errorf("no such api token: %w", fault.ErrUnauthenticated)
	}
	if err != nil {
		return wire.APIToken{}, fmt.Errorf("api token: %w", err)
	}
	return t, nil
}

// ListAPITokens implements store.AccessStore.
func (s *Store) ListAPITokens(ctx context.Context) ([]wire.APIToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+apiTokenColumns+` FROM api_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list api tokens: %w", err)
	}
	defer rows.Close()
	out := []wire.APIToken{}
	for rows.Next() {
		t, err := scanAPIToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list api tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeAPIToken implements store.AccessStore.
func (s *Store) RevokeAPIToken(ctx context.Context, id string, now time.Time) (wire.APIToken, error) {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return wire.APIToken{}, fmt.Errorf("revoke api token: %w", err)
	}
	defer end()
	t, err := scanAPIToken(tx.QueryRowContext(ctx, `UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1
		RETURNING `+apiTokenColumns, id, micros(now)))
	if errors.Is(err, sql.ErrNoRows) {
		return wire.APIToken{}, fmt.Errorf("api token %q: %w", id, fault.ErrNotFound)
	}
	if err != nil {
		return wire.APIToken{}, fmt.Errorf("revoke api token: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM ui_sessions WHERE token_id = $1`, id); err != nil {
		return wire.APIToken{}, fmt.Errorf("revoke api token: end its sessions: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return wire.APIToken{}, fmt.Errorf("revoke api token: commit: %w", err)
	}
	return t, nil
}

// InsertAudit implements store.AccessStore.
func (s *Store) InsertAudit(ctx context.Context, e wire.AuditEntry) error {
	_, err := s.exec(ctx, `INSERT INTO audit_log (at, token_id, actor, role, method, path, route, target, status, remote, via)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		micros(e.Time), e.TokenID, e.Actor, string(e.Role), e.Method, e.Path, e.Route, e.Target, e.Status, e.Remote, e.Via)
	if err != nil {
		return fmt.Errorf("insert audit entry: %w", err)
	}
	return nil
}

// QueryAudit implements store.AccessStore.
func (s *Store) QueryAudit(ctx context.Context, q store.AuditQuery) ([]wire.AuditEntry, string, error) {
	if err := checkLimit(q.Limit); err != nil {
		return nil, "", err
	}
	var pq pageQuery
	if !q.Since.IsZero() {
		pq.and("at >= " + pq.arg(micros(q.Since)))
	}
	if q.Actor != "" {
		a := pq.arg(q.Actor)
		pq.and("(token_id = " + a + " OR actor = " + a + ")")
	}
	if q.Action != "" {
		method, path := q.Action, ""
		if strings.HasPrefix(q.Action, "/") {
			method, path = "", q.Action
		} else if m, p, ok := strings.Cut(q.Action, " "); ok {
			method, path = m, strings.TrimSpace(p)
		}
		if method != "" {
			pq.and("method = " + pq.arg(strings.ToUpper(method)))
		}
		if path != "" {
			// A prefix compared as it is: a range comparison would follow PostgreSQL's collation.
			pq.and("substr(path, 1, " + pq.arg(utf8.RuneCountInString(path)) + ") = " + pq.arg(path))
		}
	}
	if q.Cursor != "" {
		seq, err := strconv.ParseInt(q.Cursor, 10, 64)
		if err != nil || seq < 1 {
			return nil, "", fault.Invalid("cursor", "not a cursor returned by this API")
		}
		pq.and("seq < " + pq.arg(seq))
	}
	rows, err := s.db.QueryContext(ctx, pq.sql(`SELECT seq, at, token_id, actor, role, method, path, route, target, status, remote, via
		FROM audit_log`, "seq DESC", q.Limit), pq.args...)
	if err != nil {
		return nil, "", fmt.Errorf("query audit: %w", err)
	}
	page, next, err := readPage(rows, q.Limit, scanAudit, func(e wire.AuditEntry) string { return strconv.FormatInt(e.Seq, 10) })
	if err != nil {
		return nil, "", fmt.Errorf("query audit: %w", err)
	}
	return page, next, nil
}

func scanAudit(row interface{ Scan(...any) error }) (wire.AuditEntry, error) {
	var e wire.AuditEntry
	var at int64
	var role string
	err := row.Scan(&e.Seq, &at, &e.TokenID, &e.Actor, &role, &e.Method, &e.Path, &e.Route, &e.Target, &e.Status, &e.Remote, &e.Via)
	e.Time, e.Role = fromMicros(at), wire.Role(role)
	return e, err
}
