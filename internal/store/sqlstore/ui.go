package sqlstore

// Queries of the web UI (store.UIStore): sessions and the paged listings. Every listing is a
// keyset walk over an index (0005_ui.sql), so a page costs the same on page 1 and page 200.

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// CreateSession implements store.UIStore.
func (s *Store) CreateSession(ctx context.Context, sess store.Session) error {
	res, err := s.exec(ctx, `INSERT INTO ui_sessions (id_hash, csrf, created_at, expires_at, token_id, role, actor)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id_hash) DO NOTHING`,
		sess.IDHash, sess.CSRF, micros(sess.CreatedAt), micros(sess.ExpiresAt), sess.TokenID, string(sess.Role), sess.Actor)
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("create session: id already in use: %w", fault.ErrConflict)
	}
	return nil
}

// GetSession implements store.UIStore.
func (s *Store) GetSession(ctx context.Context, idHash string, now time.Time) (store.Session, error) {
	sess := store.Session{IDHash: idHash}
	var created, expires int64
	var role string
	err := s.db.QueryRowContext(ctx, `SELECT csrf, created_at, expires_at, token_id, role, actor FROM ui_sessions
		WHERE id_hash = $1 AND expires_at > $2`,
		idHash, micros(now)).Scan(&sess.CSRF, &created, &expires, &sess.TokenID, &role, &sess.Actor)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Session{}, fmt.Errorf("no such session, or it expired: %w", fault.ErrUnauthenticated)
	}
	if err != nil {
		return store.Session{}, fmt.Errorf("get session: %w", err)
	}
	sess.CreatedAt, sess.ExpiresAt, sess.Role = fromMicros(created), fromMicros(expires), wire.Role(role)
	return sess, nil
}

// DeleteSession implements store.UIStore.
func (s *Store) DeleteSession(ctx context.Context, idHash string) error {
	if _, err := s.exec(ctx, `DELETE FROM ui_sessions WHERE id_hash = $1`, idHash); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions implements store.UIStore.
func (s *Store) DeleteExpiredSessions(ctx context.Context, now time.Time) (int, error) {
	res, err := s.exec(ctx, `DELETE FROM ui_sessions WHERE expires_at <= $1`, micros(now))
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

func checkLimit(limit int) error {
	if limit <= 0 || limit > 1000 {
		return fault.Invalid("limit", "must be between 1 and 1000 (got %d)", limit)
	}
	return nil
}

// likeEscaper escapes LIKE's metacharacters for ESCAPE '\'.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// PageAgents implements store.UIStore.
func (s *Store) PageAgents(ctx context.Context, q store.AgentQuery) ([]wire.Agent, string, error) {
	if err := checkLimit(q.Limit); err != nil {
		return nil, "", err
	}
	var pq pageQuery
	switch q.Status {
	case "":
	case store.AgentRevoked:
		pq.and("revoked_at IS NOT NULL")
	case wire.StatusOnline, wire.StatusOffline, wire.StatusUnknown:
		pq.and("status = "+pq.arg(q.Status), "revoked_at IS NULL")
	default:
		return nil, "", fault.Invalid("status", "%q is not online, offline, unknown or revoked", q.Status)
	}
	// Labels are stored as the JSON of a map with sorted keys; `"key":"value"` (encoded the same
	// way) occurs in that text exactly when the agent has the label: keys cannot hold quotes, and
	// a quote inside a value is escaped. instr/strpos compare bytes, with no case folding.
	keys := make([]string, 0, len(q.Labels))
	for k := range q.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kb, _ := json.Marshal(k)
		vb, _ := json.Marshal(q.Labels[k])
		needle := pq.arg(string(kb) + ":" + string(vb))
		if s.dialect.Name == "postgres" {
			pq.and("strpos(labels, " + needle + ") > 0")
		} else {
			pq.and("instr(labels, " + needle + ") > 0")
		}
	}
	if q.Search != "" {
		esc := likeEscaper.Replace(q.Search)
		pq.and("(LOWER(name) LIKE " + pq.arg("%"+strings.ToLower(esc)+"%") + ` ESCAPE '\' OR id LIKE ` + pq.arg(esc+"%") + ` ESCAPE '\')`)
	}
	if q.Cursor != "" {
		name, id, err := decodeNameCursor(q.Cursor)
		if err != nil {
			return nil, "", err
		}
		n := pq.arg(name)
		pq.and("(name > " + n + " OR (name = " + n + " AND id > " + pq.arg(id) + "))")
	}
	rows, err := s.db.QueryContext(ctx, pq.sql(`SELECT `+agentColumns+` FROM agents`, "name, id", q.Limit), pq.args...)
	if err != nil {
		return nil, "", fmt.Errorf("page agents: %w", err)
	}
	out, next, err := readPage(rows, q.Limit, scanAgent, func(a wire.Agent) string { return encodeNameCursor(a.Name, a.ID) })
	if err != nil {
		return nil, "", fmt.Errorf("page agents: %w", err)
	}
	return out, next, nil
}

func encodeNameCursor(name, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(name + "\x00" + id))
}

func decodeNameCursor(c string) (string, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		if name, id, ok := strings.Cut(string(raw), "\x00"); ok && id != "" {
			return name, id, nil
		}
	}
	return "", "", fault.Invalid("cursor", "not a cursor returned by this listing")
}

const countAgentsQuery = `SELECT status, COUNT(*) - COUNT(revoked_at), COUNT(revoked_at) FROM agents GROUP BY status`

// CountAgentsByStatus implements store.UIStore. One walk of agents_status_revoked in status
// order (no sort, no agent row read): COUNT(revoked_at) counts the revoked agents of a status.
func (s *Store) CountAgentsByStatus(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, countAgentsQuery)
	if err != nil {
		return nil, fmt.Errorf("count agents: %w", err)
	}
	defer rows.Close()
	out := map[string]int{wire.StatusOnline: 0, wire.StatusOffline: 0, wire.StatusUnknown: 0, store.AgentRevoked: 0}
	for rows.Next() {
		var st string
		var n, revoked int
		if err := rows.Scan(&st, &n, &revoked); err != nil {
			return nil, err
		}
		out[st] += n
		out[store.AgentRevoked] += revoked
	}
	return out, rows.Err()
}

// AgentNames implements store.UIStore.
func (s *Store) AgentNames(ctx context.Context, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	// Chunks stay well under every engine's bound-parameter limit.
	const chunk = 500
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		ph := make([]string, len(part))
		args := make([]any, len(part))
		for i, id := range part {
			ph[i], args[i] = "$"+strconv.Itoa(i+1), id
		}
		rows, err := s.db.QueryContext(ctx, `SELECT id, name FROM agents WHERE id IN (`+strings.Join(ph, ",")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("agent names: %w", err)
		}
		for rows.Next() {
			var id, name string
			if err := rows.Scan(&id, &name); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = name
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("agent names: %w", err)
		}
	}
	return out, nil
}

// AgentAssignments implements store.UIStore.
func (s *Store) AgentAssignments(ctx context.Context, agentID string, limit int) ([]wire.Assignment, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	// Attempts of one agent are few (migrations × retries); the latest per migration is picked
	// here rather than with a correlated subquery.
	rows, err := s.db.QueryContext(ctx, `SELECT `+assignmentCols+` FROM assignments WHERE agent_id = $1
		ORDER BY migration, attempt DESC`, agentID)
	if err != nil {
		return nil, fmt.Errorf("agent assignments: %w", err)
	}
	defer rows.Close()
	var out []wire.Assignment
	for rows.Next() {
		a, err := scanAssignment(rows)
		if err != nil {
			return nil, err
		}
		if n := len(out); n > 0 && out[n-1].Migration == a.Migration {
			continue
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("agent assignments: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].UpdatedAt.Equal(out[j].UpdatedAt) {
			return out[i].UpdatedAt.After(out[j].UpdatedAt)
		}
		return out[i].Migration < out[j].Migration
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// PageMigrations implements store.UIStore.
func (s *Store) PageMigrations(ctx context.Context, q store.MigrationQuery) ([]wire.Migration, string, error) {
	if err := checkLimit(q.Limit); err != nil {
		return nil, "", err
	}
	var pq pageQuery
	if q.State != "" {
		pq.and("state = " + pq.arg(q.State))
	}
	if q.Cursor != "" {
		t, name, err := decodeCursor(q.Cursor)
		if err != nil {
			return nil, "", err
		}
		ta := pq.arg(t)
		pq.and("(created_at < " + ta + " OR (created_at = " + ta + " AND name < " + pq.arg(name) + "))")
	}
	rows, err := s.db.QueryContext(ctx, pq.sql(`SELECT `+migrationCols+` FROM migrations`, "created_at DESC, name DESC", q.Limit), pq.args...)
	if err != nil {
		return nil, "", fmt.Errorf("page migrations: %w", err)
	}
	out, next, err := readPage(rows, q.Limit, scanMigration, func(m wire.Migration) string { return encodeCursor(micros(m.CreatedAt), m.Name) })
	if err != nil {
		return nil, "", fmt.Errorf("page migrations: %w", err)
	}
	return out, next, nil
}

// CountMigrationsByState implements store.UIStore.
func (s *Store) CountMigrationsByState(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, COUNT(*) FROM migrations GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count migrations: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}

// MigrationsMark implements store.UIStore: a hash of what the listings show of every migration.
// Migrations are few (one per change rolled out), so reading those columns is cheap.
func (s *Store) MigrationsMark(ctx context.Context) (string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, state, reason, batches, current_batch, approved_batch FROM migrations ORDER BY name`)
	if err != nil {
		return "", fmt.Errorf("migrations mark: %w", err)
	}
	defer rows.Close()
	h := fnv.New64a()
	n := 0
	for rows.Next() {
		var name, st, reason string
		var batches, current, approved int
		if err := rows.Scan(&name, &st, &reason, &batches, &current, &approved); err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%d\x00%d\x00%d\n", name, st, reason, batches, current, approved)
		n++
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("migrations mark: %w", err)
	}
	return fmt.Sprintf("%d-%016x", n, h.Sum64()), nil
}

// CountAssignments implements store.UIStore.
func (s *Store) CountAssignments(ctx context.Context, migration string) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, COUNT(*) FROM assignments WHERE migration = $1 GROUP BY state`, migration)
	if err != nil {
		return nil, fmt.Errorf("count assignments: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}

// latestOnly keeps the latest attempt of each agent: the column 0015_latest_attempts keeps, which
// the partial indexes assignments_latest* hold.
const latestOnly = `a.latest = 1`

// failedCond is an attempt that failed, or keeps a failure after a rollback (as written in the
// partial index assignments_latest_failed, so that the planner sees the index covers it).
const failedCond = `(a.state IN ('failed', 'timed_out', 'rollback_failed') OR a.failure <> '')`

// countLatestQuery counts a migration's latest attempts in the order of assignments_latest_counts.
const countLatestQuery = `SELECT a.batch, a.state, a.failure <> '', COUNT(*)
	FROM assignments a WHERE a.migration = $1 AND ` + latestOnly + `
	GROUP BY a.batch, a.state, a.failure <> '' ORDER BY a.batch, a.state, a.failure <> ''`

// CountLatestAssignments implements store.UIStore.
func (s *Store) CountLatestAssignments(ctx context.Context, migration string) ([]store.AssignmentCount, error) {
	rows, err := s.db.QueryContext(ctx, countLatestQuery, migration)
	if err != nil {
		return nil, fmt.Errorf("count latest assignments: %w", err)
	}
	defer rows.Close()
	var out []store.AssignmentCount
	for rows.Next() {
		var c store.AssignmentCount
		if err := rows.Scan(&c.Batch, &c.State, &c.Failed, &c.N); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// LatestAssignments implements store.UIStore.
func (s *Store) LatestAssignments(ctx context.Context, q store.LatestQuery) ([]wire.Assignment, error) {
	query, args, err := latestQuery(q)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("latest assignments: %w", err)
	}
	defer rows.Close()
	var out []wire.Assignment
	for rows.Next() {
		a, err := scanAssignment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// latestQuery is the SQL text and arguments LatestAssignments runs for q: in the order of the
// index assignments_grid (migration, batch, agent_id), so a page stops after its rows.
func latestQuery(q store.LatestQuery) (string, []any, error) {
	if q.Offset < 0 || q.Limit < 0 {
		return "", nil, fault.Invalid("limit", "offset and limit must not be negative")
	}
	where := []string{`a.migration = $1`, latestOnly}
	args := []any{q.Migration}
	if q.State != "" {
		args = append(args, q.State)
		where = append(where, fmt.Sprintf(`a.state = $%d`, len(args)))
	}
	if q.Failed {
		where = append(where, failedCond)
	}
	if q.Batch != nil {
		args = append(args, *q.Batch)
		where = append(where, fmt.Sprintf(`a.batch = $%d`, len(args)))
	}
	query := `SELECT ` + prefixed("a.", assignmentCols) + ` FROM assignments a WHERE ` + strings.Join(where, ` AND `) +
		` ORDER BY a.batch, a.agent_id`
	if q.Limit > 0 {
		query += fmt.Sprintf(` LIMIT %d OFFSET %d`, q.Limit, q.Offset)
	} else if q.Offset > 0 {
		return "", nil, fault.Invalid("offset", "an offset needs a limit")
	}
	return query, args, nil
}

// prefixed qualifies every column of a comma-separated list with p.
func prefixed(p, cols string) string {
	fs := strings.Split(cols, ",")
	for i, f := range fs {
		fs[i] = p + strings.TrimSpace(f)
	}
	return strings.Join(fs, ", ")
}
