package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

const failoverCols = `name, spec, spec_hash, paused, pause_reason, created_at, updated_at, version`

func scanFailoverGroup(row interface{ Scan(...any) error }) (wire.FailoverGroup, error) {
	var g wire.FailoverGroup
	var spec string
	var paused int
	var created, updated int64
	err := row.Scan(&g.Name, &spec, &g.SpecHash, &paused, &g.PauseReason, &created, &updated, &g.Version)
	g.Spec, g.Paused, g.CreatedAt, g.UpdatedAt = []byte(spec), paused != 0, fromMicros(created), fromMicros(updated)
	return g, err
}

// PutFailoverGroup implements store.FailoverStore.
func (s *Store) PutFailoverGroup(ctx context.Context, g wire.FailoverGroup) (wire.FailoverGroup, error) {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return g, fmt.Errorf("put failover group: %w", err)
	}
	defer end()
	if g.Version == 0 {
		res, err := tx.ExecContext(ctx, `INSERT INTO failover_groups (`+failoverCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, 1)
			ON CONFLICT (name) DO NOTHING`, g.Name, string(g.Spec), g.SpecHash, boolInt(g.Paused), g.PauseReason,
			micros(g.CreatedAt), micros(g.UpdatedAt))
		if err != nil {
			return g, fmt.Errorf("put failover group: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return g, fmt.Errorf("failover group %q already exists: %w", g.Name, fault.ErrConflict)
		}
	} else {
		res, err := tx.ExecContext(ctx, `UPDATE failover_groups SET spec = $3, spec_hash = $4, paused = $5, pause_reason = $6,
			updated_at = $7, version = version + 1 WHERE name = $1 AND version = $2`,
			g.Name, g.Version, string(g.Spec), g.SpecHash, boolInt(g.Paused), g.PauseReason, micros(g.UpdatedAt))
		if err != nil {
			return g, fmt.Errorf("put failover group: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			if _, err := s.GetFailoverGroup(ctx, g.Name); err != nil {
				return g, err
			}
			return g, fmt.Errorf("failover group %s changed since version %d: %w", g.Name, g.Version, fault.ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM failover_members WHERE grp = $1`, g.Name); err != nil {
			return g, fmt.Errorf("put failover group: members: %w", err)
		}
	}
	for i, id := range g.Members {
		var other string
		err := tx.QueryRowContext(ctx, `SELECT grp FROM failover_members WHERE agent_id = $1`, id).Scan(&other)
		switch {
		case err == nil && other == g.Name:
			return g, fmt.Errorf("agent %s is listed twice in failover group %s: %w", id, g.Name, fault.ErrConflict)
		case err == nil:
			return g, fmt.Errorf("agent %s is already a member of failover group %s (an agent belongs to one group): %w", id, other, fault.ErrConflict)
		case !errors.Is(err, sql.ErrNoRows):
			return g, fmt.Errorf("put failover group: members: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO failover_members (agent_id, grp, position) VALUES ($1, $2, $3)`, id, g.Name, i); err != nil {
			if isUniqueViolation(err, "failover_members_pkey", "failover_members.agent_id") {
				return g, fmt.Errorf("agent %s joined another failover group meanwhile: %w", id, fault.ErrConflict)
			}
			return g, fmt.Errorf("put failover group: members: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return g, fmt.Errorf("put failover group: commit: %w", err)
	}
	return s.GetFailoverGroup(ctx, g.Name)
}

// GetFailoverGroup implements store.FailoverStore.
func (s *Store) GetFailoverGroup(ctx context.Context, name string) (wire.FailoverGroup, error) {
	g, err := scanFailoverGroup(s.db.QueryRowContext(ctx, `SELECT `+failoverCols+` FROM failover_groups WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return g, fmt.Errorf("failover group %q: %w", name, fault.ErrNotFound)
	}
	if err != nil {
		return g, fmt.Errorf("get failover group: %w", err)
	}
	members, err := s.failoverMembers(ctx)
	g.Members = members[g.Name]
	if g.Members == nil {
		g.Members = []string{}
	}
	return g, err
}

func (s *Store) failoverMembers(ctx context.Context) (map[string][]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT grp, agent_id FROM failover_members ORDER BY grp, position`)
	if err != nil {
		return nil, fmt.Errorf("failover members: %w", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var grp, id string
		if err := rows.Scan(&grp, &id); err != nil {
			return nil, err
		}
		out[grp] = append(out[grp], id)
	}
	return out, rows.Err()
}

// ListFailoverGroups implements store.FailoverStore.
func (s *Store) ListFailoverGroups(ctx context.Context) ([]wire.FailoverGroup, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+failoverCols+` FROM failover_groups ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list failover groups: %w", err)
	}
	defer rows.Close()
	out := []wire.FailoverGroup{}
	for rows.Next() {
		g, err := scanFailoverGroup(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	members, err := s.failoverMembers(ctx)
	for i := range out {
		out[i].Members = members[out[i].Name]
		if out[i].Members == nil {
			out[i].Members = []string{}
		}
	}
	return out, err
}

// DeleteFailoverGroup implements store.FailoverStore.
func (s *Store) DeleteFailoverGroup(ctx context.Context, name string) error {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("delete failover group: %w", err)
	}
	defer end()
	if _, err := tx.ExecContext(ctx, `DELETE FROM failover_members WHERE grp = $1`, name); err != nil {
		return fmt.Errorf("delete failover group: %w", err)
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM failover_groups WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("delete failover group: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("failover group %q: %w", name, fault.ErrNotFound)
	}
	return tx.Commit()
}
