package sqlstore

// Reads of the UI's fleet-wide pictures (store.FleetStore): the fleet map, liveness beside
// assignments, agents whose rollback failed, and errors over time.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
)

// inChunks runs fn over ids in chunks that stay well under every engine's bound-parameter
// limit, with the placeholders of the chunk ("$1,$2,…").
func inChunks(ids []string, fn func(ph string, args []any) error) error {
	const chunk = 500
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		ph := make([]string, len(part))
		args := make([]any, len(part))
		for i, id := range part {
			ph[i], args[i] = "$"+strconv.Itoa(i+1), id
		}
		if err := fn(strings.Join(ph, ","), args); err != nil {
			return err
		}
	}
	return nil
}

// AgentStates implements store.FleetStore.
func (s *Store) AgentStates(ctx context.Context, ids []string) ([]store.AgentState, error) {
	var out []store.AgentState
	// A fleet has few distinct label sets (site × role × tier): each text is decoded once and
	// its map shared by the agents that have it, which the interface allows.
	decoded := map[string]map[string]string{}
	read := func(q string, args ...any) error {
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("agent states: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var a store.AgentState
			var labels sql.RawBytes
			var revoked *int64
			if err := rows.Scan(&a.ID, &a.Name, &a.Status, &revoked, &labels); err != nil {
				return fmt.Errorf("agent states: %w", err)
			}
			a.Revoked = revoked != nil
			if len(labels) > 0 && string(labels) != "{}" {
				m, ok := decoded[string(labels)] // no copy: the compiler looks up a []byte key in place
				if !ok {
					if err := json.Unmarshal(labels, &m); err != nil {
						return fmt.Errorf("agent states: labels of %s: %w", a.ID, err)
					}
					decoded[string(labels)] = m
				}
				a.Labels = m
			}
			out = append(out, a)
		}
		return rows.Err()
	}
	const cols = `SELECT id, name, status, revoked_at, labels FROM agents`
	if ids == nil {
		if err := read(cols + ` ORDER BY name, id`); err != nil {
			return nil, err
		}
		return out, nil
	}
	if err := inChunks(ids, func(ph string, args []any) error {
		return read(cols+` WHERE id IN (`+ph+`)`, args...)
	}); err != nil {
		return nil, err
	}
	sortAgentStates(out)
	return out, nil
}

func sortAgentStates(as []store.AgentState) {
	slices.SortFunc(as, func(a, b store.AgentState) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// rollbackFailuresQuery reads the attempts whose rollback failed from the partial index
// assignments_rollback_failed (only those attempts, in agent order), not every assignment.
const (
	rollbackFailuresQuery = `SELECT a.agent_id, a.migration FROM assignments a WHERE a.state = 'rollback_failed' AND ` + latestOnly
	rollbackFailuresOrder = ` ORDER BY a.agent_id, a.migration`
)

// RollbackFailures implements store.FleetStore.
func (s *Store) RollbackFailures(ctx context.Context, ids []string) (map[string][]string, error) {
	out := map[string][]string{}
	const q = rollbackFailuresQuery
	read := func(q string, args ...any) error {
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("rollback failures: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var agent, migration string
			if err := rows.Scan(&agent, &migration); err != nil {
				return fmt.Errorf("rollback failures: %w", err)
			}
			out[agent] = append(out[agent], migration)
		}
		return rows.Err()
	}
	if ids == nil {
		if err := read(q + rollbackFailuresOrder); err != nil {
			return nil, err
		}
		return out, nil
	}
	err := inChunks(ids, func(ph string, args []any) error {
		return read(q+` AND a.agent_id IN (`+ph+`)`+rollbackFailuresOrder, args...)
	})
	return out, err
}

// notOnlineInBatchQuery joins a batch's latest attempts (assignments_latest) to their agents and
// keeps those not online, in the order the approval's warning names them.
const notOnlineInBatchQuery = `SELECT g.id, g.name, g.status, g.revoked_at FROM assignments a JOIN agents g ON g.id = a.agent_id
	WHERE a.migration = $1 AND a.batch = $2 AND ` + latestOnly + ` AND (g.status <> 'online' OR g.revoked_at IS NOT NULL)
	ORDER BY CASE WHEN ` + failedCond + ` THEN 0 ELSE 1 END, a.agent_id`

// NotOnlineInBatch implements store.FleetStore: one query, not the batch's agents looked up by id.
func (s *Store) NotOnlineInBatch(ctx context.Context, migration string, batch int) ([]store.AgentState, error) {
	rows, err := s.db.QueryContext(ctx, notOnlineInBatchQuery, migration, batch)
	if err != nil {
		return nil, fmt.Errorf("agents of batch %d not online: %w", batch, err)
	}
	defer rows.Close()
	var out []store.AgentState
	for rows.Next() {
		var a store.AgentState
		var revoked *int64
		if err := rows.Scan(&a.ID, &a.Name, &a.Status, &revoked); err != nil {
			return nil, fmt.Errorf("agents of batch %d not online: %w", batch, err)
		}
		a.Revoked = revoked != nil
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("agents of batch %d not online: %w", batch, err)
	}
	return out, nil
}

// ProblemCounts implements store.FleetStore. It walks the index of warnings and errors by time
// (events_problems_time on SQLite, events_severity_time on PostgreSQL) and counts in the
// database; a day of a fleet's problems is a few thousand rows.
func (s *Store) ProblemCounts(ctx context.Context, q store.ProblemQuery) ([]store.ProblemCount, error) {
	if q.Buckets < 1 || q.Buckets > 1000 {
		return nil, fault.Invalid("buckets", "must be between 1 and 1000 (got %d)", q.Buckets)
	}
	if !q.Until.After(q.Since) {
		return nil, fault.Invalid("until", "must be after since")
	}
	since, until := micros(q.Since), micros(q.Until)
	width := (until - since + int64(q.Buckets) - 1) / int64(q.Buckets)
	args := []any{since, until, width}
	where := `severity > 0 AND time >= $1 AND time < $2`
	if q.Migration != "" {
		where += ` AND migration = $4`
		args = append(args, q.Migration)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT (time - $1) / $3 AS bucket, type, severity, COUNT(*) FROM events
		WHERE `+where+` GROUP BY bucket, type, severity ORDER BY bucket, type, severity`, args...)
	if err != nil {
		return nil, fmt.Errorf("problem counts: %w", err)
	}
	defer rows.Close()
	var out []store.ProblemCount
	for rows.Next() {
		var c store.ProblemCount
		var bucket int64
		var sev int
		if err := rows.Scan(&bucket, &c.Type, &sev, &c.Count); err != nil {
			return nil, fmt.Errorf("problem counts: %w", err)
		}
		c.Bucket, c.Severity = int(min(bucket, int64(q.Buckets-1))), severityName(sev)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("problem counts: %w", err)
	}
	return out, nil
}
