package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

var severityNames = []string{wire.SeverityInfo, wire.SeverityWarning, wire.SeverityError}

func severityName(n int) string {
	if n >= 0 && n < len(severityNames) {
		return severityNames[n]
	}
	return wire.SeverityInfo
}

const (
	insertEvent = `INSERT INTO events (id, time, received_at, source, type, severity, agent_id, migration, body) VALUES `
	eventCols   = 9
	eventTail   = ` ON CONFLICT (id) DO NOTHING`

	upsertState = `INSERT INTO agent_event_state (agent_id, migration, last_event_id, last_type, last_severity, last_time) VALUES `
	stateCols   = 6
	stateTail   = ` ON CONFLICT (agent_id, migration) DO UPDATE SET last_event_id = excluded.last_event_id,
		last_type = excluded.last_type, last_severity = excluded.last_severity, last_time = excluded.last_time
		WHERE excluded.last_time > agent_event_state.last_time
		   OR (excluded.last_time = agent_event_state.last_time AND excluded.last_event_id > agent_event_state.last_event_id)`
)

// InsertEvents implements store.Store.
func (s *Store) InsertEvents(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
	if len(events) == 0 && len(states) == 0 {
		return 0, nil
	}
	tx, release, err := s.beginEvents(ctx)
	if err != nil {
		return 0, fmt.Errorf("insert events: %w", err)
	}
	defer release()
	defer func() { _ = tx.Rollback() }()
	if s.dialect.ArrayParams {
		inserted, err := insertEventArrays(ctx, tx, events, newestStates(states))
		if err != nil {
			return 0, err
		}
		if err := tx.Commit(); err != nil {
			return 0, fmt.Errorf("insert events: commit: %w", err)
		}
		return inserted, nil
	}
	inserted, err := insertRows(ctx, tx, insertEvent, eventTail, eventCols, s.dialect.RowsPerInsert, len(events),
		func(i int, args []any) []any {
			e := &events[i]
			body := e.Raw
			if len(body) == 0 {
				body, _ = json.Marshal(e.Event)
			}
			return append(args, e.ID, micros(e.Time), micros(e.ReceivedAt), e.Source, e.Type,
				wire.SeverityRank(e.Severity), e.Data.AgentID, e.Data.Migration, string(body))
		})
	if err != nil {
		return 0, fmt.Errorf("insert events: %w", err)
	}
	// One row per key: a statement of several rows may not update the same row twice, and the
	// newest of several candidates is what applying them one after the other would leave.
	states = newestStates(states)
	if _, err := insertRows(ctx, tx, upsertState, stateTail, stateCols, s.dialect.RowsPerInsert, len(states),
		func(i int, args []any) []any {
			st := &states[i]
			return append(args, st.AgentID, st.Migration, st.LastEventID, st.LastType,
				wire.SeverityRank(st.LastSeverity), micros(st.LastTime))
		}); err != nil {
		return 0, fmt.Errorf("insert events: state: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("insert events: commit: %w", err)
	}
	return int(inserted), nil
}

// beginEvents begins the transaction of a batch of events in the store's turn to write: on the
// connection kept for them (Dialect.OneEventWriter), waiting for it while another batch is
// written, or on any. release gives the turn and the connection back once the transaction has
// ended.
func (s *Store) beginEvents(ctx context.Context) (tx *sql.Tx, release func(), err error) {
	if s.eventConn == nil {
		return s.begin(ctx)
	}
	var conn *sql.Conn
	select {
	case conn = <-s.eventConn:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	if conn == nil {
		if conn, err = s.db.Conn(ctx); err != nil {
			s.eventConn <- nil
			return nil, nil, err
		}
	}
	done, err := s.turn(ctx)
	if err != nil {
		s.eventConn <- conn
		return nil, nil, err
	}
	if tx, err = conn.BeginTx(ctx, nil); err != nil {
		done()
		if errors.Is(err, sql.ErrConnDone) || errors.Is(err, driver.ErrBadConn) {
			_ = conn.Close()
			conn = nil // the next batch takes a new one
		}
		s.eventConn <- conn
		return nil, nil, err
	}
	return tx, func() { done(); s.eventConn <- conn }, nil
}

// Statements of a whole batch for engines that bind Go slices as arrays (Dialect.ArrayParams):
// one parameter per column, the rows taken apart by unnest.
const (
	insertEventsUnnest = `INSERT INTO events (id, time, received_at, source, type, severity, agent_id, migration, body)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::smallint[], $7::text[], $8::text[], $9::text[])` +
		eventTail
	upsertStatesUnnest = `INSERT INTO agent_event_state (agent_id, migration, last_event_id, last_type, last_severity, last_time)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::smallint[], $6::bigint[])` + stateTail
)

// insertEventArrays writes events and (already one per key) states with one statement each.
func insertEventArrays(ctx context.Context, tx *sql.Tx, events []store.StoredEvent, states []store.EventState) (int, error) {
	var inserted int64
	if n := len(events); n > 0 {
		ids, sources, types, agents, migrations, bodies := make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n)
		times, received, severities := make([]int64, n), make([]int64, n), make([]int16, n)
		for i := range events {
			e := &events[i]
			body := e.Raw
			if len(body) == 0 {
				body, _ = json.Marshal(e.Event)
			}
			ids[i], times[i], received[i], sources[i], types[i] = e.ID, micros(e.Time), micros(e.ReceivedAt), e.Source, e.Type
			severities[i], agents[i], migrations[i], bodies[i] = int16(wire.SeverityRank(e.Severity)), e.Data.AgentID, e.Data.Migration, string(body)
		}
		res, err := tx.ExecContext(ctx, insertEventsUnnest, ids, times, received, sources, types, severities, agents, migrations, bodies)
		if err != nil {
			return 0, fmt.Errorf("insert events: %w", err)
		}
		if inserted, err = res.RowsAffected(); err != nil {
			return 0, fmt.Errorf("insert events: %w", err)
		}
	}
	if n := len(states); n > 0 {
		agents, migrations, ids, types := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		severities, times := make([]int16, n), make([]int64, n)
		for i := range states {
			st := &states[i]
			agents[i], migrations[i], ids[i], types[i] = st.AgentID, st.Migration, st.LastEventID, st.LastType
			severities[i], times[i] = int16(wire.SeverityRank(st.LastSeverity)), micros(st.LastTime)
		}
		if _, err := tx.ExecContext(ctx, upsertStatesUnnest, agents, migrations, ids, types, severities, times); err != nil {
			return 0, fmt.Errorf("insert events: state: %w", err)
		}
	}
	return int(inserted), nil
}

// insertRows writes n rows of cols values each (row appends row i's values to args) with
// statements "head VALUES (...),(...) tail" of up to perStmt rows, and returns the rows
// affected. The statement for a full chunk is prepared once and executed for every full chunk.
func insertRows(ctx context.Context, tx *sql.Tx, head, tail string, cols, perStmt, n int, row func(i int, args []any) []any) (int64, error) {
	if n == 0 {
		return 0, nil
	}
	perStmt = max(1, min(perStmt, n))
	var total int64
	args := make([]any, 0, perStmt*cols)
	exec := func(res sql.Result, err error) error {
		if err != nil {
			return err
		}
		affected, err := res.RowsAffected()
		total += affected
		return err
	}
	full := n / perStmt * perStmt
	if full > 0 {
		stmt, err := tx.PrepareContext(ctx, valuesStatement(head, tail, cols, perStmt))
		if err != nil {
			return 0, err
		}
		defer stmt.Close()
		for start := 0; start < full; start += perStmt {
			args = args[:0]
			for i := start; i < start+perStmt; i++ {
				args = row(i, args)
			}
			if err := exec(stmt.ExecContext(ctx, args...)); err != nil {
				return 0, err
			}
		}
	}
	if full < n {
		args = args[:0]
		for i := full; i < n; i++ {
			args = row(i, args)
		}
		if err := exec(tx.ExecContext(ctx, valuesStatement(head, tail, cols, n-full), args...)); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// valuesStatement is head, rows groups of cols numbered parameters, then tail.
func valuesStatement(head, tail string, cols, rows int) string {
	var sb strings.Builder
	sb.Grow(len(head) + len(tail) + rows*cols*6)
	sb.WriteString(head)
	for r := range rows {
		if r > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('(')
		for c := range cols {
			if c > 0 {
				sb.WriteByte(',')
			}
			sb.WriteByte('$')
			sb.WriteString(strconv.Itoa(r*cols + c + 1))
		}
		sb.WriteByte(')')
	}
	sb.WriteString(tail)
	return sb.String()
}

// newestStates keeps, per (agent, migration), the row the store's conditional upsert would
// keep: the latest time at the store's precision, then the highest event id. Order is kept.
func newestStates(states []store.EventState) []store.EventState {
	if len(states) < 2 {
		return states
	}
	type key struct{ agent, migration string }
	at := make(map[key]int, len(states))
	out := make([]store.EventState, 0, len(states))
	for _, st := range states {
		k := key{st.AgentID, st.Migration}
		n, ok := at[k]
		if !ok {
			at[k] = len(out)
			out = append(out, st)
			continue
		}
		cur := out[n]
		if t, c := micros(st.LastTime), micros(cur.LastTime); t > c || (t == c && st.LastEventID > cur.LastEventID) {
			out[n] = st
		}
	}
	return out
}

// QueryEvents implements store.Store.
func (s *Store) QueryEvents(ctx context.Context, q store.EventQuery) ([]store.StoredEvent, string, error) {
	sqlText, args, err := eventQuery(q)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.db.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return nil, "", fmt.Errorf("query events: %w", err)
	}
	page, next, err := readPage(rows, q.Limit, scanEvent, func(r eventRow) string { return encodeEventCursor(micros(r.Time), r.seq) })
	if err != nil {
		return nil, "", fmt.Errorf("query events: %w", err)
	}
	out := make([]store.StoredEvent, len(page))
	for n, r := range page {
		out[n] = r.StoredEvent
	}
	return out, next, nil
}

// eventRow is a listed event and its seq, which the cursor after it needs.
type eventRow struct {
	store.StoredEvent
	seq int64
}

func scanEvent(row interface{ Scan(...any) error }) (eventRow, error) {
	var body string
	var r eventRow
	var recv, at int64
	if err := row.Scan(&body, &recv, &r.seq, &at); err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(body), &r.Event); err != nil {
		return r, fmt.Errorf("stored body: %w", err)
	}
	r.Raw, r.ReceivedAt = []byte(body), fromMicros(recv)
	// The body keeps the producer's time; the column the time the event is listed by, which the
	// ingest sets to the receipt time when an agent's clock was too far ahead.
	if micros(r.Time) != at {
		agent := r.Time
		r.Time, r.AgentTime = fromMicros(at), &agent
	}
	return r, nil
}

// eventQuery is the SQL text and arguments of q: a page of Limit+1 rows (body, received_at, seq,
// time), newest first.
func eventQuery(q store.EventQuery) (string, []any, error) {
	if q.Limit <= 0 || q.Limit > 1000 {
		return "", nil, fault.Invalid("limit", "must be between 1 and 1000 (got %d)", q.Limit)
	}
	var pq pageQuery
	if q.AgentID != "" {
		pq.and("agent_id = " + pq.arg(q.AgentID))
	}
	if q.Migration != "" {
		pq.and("migration = " + pq.arg(q.Migration))
	}
	if q.HubOnly {
		// A literal, so that the index of the hub's events (0011) can be used.
		pq.and("agent_id = ''")
	}
	if len(q.Types) > 0 {
		var ors []string
		for _, t := range q.Types {
			if p, ok := strings.CutSuffix(t, "*"); ok {
				ors = append(ors, "(type >= "+pq.arg(p)+" AND type < "+pq.arg(p+"\U0010FFFF")+")")
			} else {
				ors = append(ors, "type = "+pq.arg(t))
			}
		}
		pq.and("(" + strings.Join(ors, " OR ") + ")")
	}
	if len(q.Severities) > 0 {
		var ranks []int
		for _, sv := range q.Severities {
			r := wire.SeverityRank(sv)
			if r < 0 {
				return "", nil, fault.Invalid("severity", "%q is not info, warning or error", sv)
			}
			ranks = append(ranks, r)
		}
		slices.Sort(ranks)
		ranks = slices.Compact(ranks)
		in := func() string {
			ps := make([]string, len(ranks))
			for i, r := range ranks {
				ps[i] = pq.arg(r)
			}
			return "severity IN (" + strings.Join(ps, ",") + ")"
		}
		switch top := len(severityNames) - 1; {
		case ranks[0] == 0:
			pq.and(in())
		case len(ranks) == top-ranks[0]+1:
			// Every rank from the lowest asked up (errors; warnings and errors) as a lower bound
			// beside the partial index's (below). PostgreSQL estimates each condition of a column
			// apart and multiplies them, but of two lower bounds it keeps the tighter: "severity
			// IN (2) AND severity > 0" it took for a tenth of the errors there are (the share of
			// errors times the share of problems), and chose sorts over index walks for it.
			if ranks[0] > 1 {
				pq.and("severity >= " + pq.arg(ranks[0]))
			}
		default:
			pq.and(in())
		}
		if ranks[0] > 0 {
			// Spelled as the partial index of warnings and errors is, so that both engines'
			// planners see that the index covers the query.
			pq.and("severity > 0")
		}
	}
	if !q.Since.IsZero() {
		pq.and("time >= " + pq.arg(micros(q.Since)))
	}
	if !q.Until.IsZero() {
		pq.and("time < " + pq.arg(micros(q.Until)))
	}
	if q.Cursor != "" {
		t, seq, err := decodeEventCursor(q.Cursor)
		if err != nil {
			return "", nil, err
		}
		pq.and("(time < " + pq.arg(t) + " OR (time = " + pq.arg(t) + " AND seq < " + pq.arg(seq) + "))")
	}
	// Events of the same time (to the microsecond) come newest arrival first.
	return pq.sql("SELECT body, received_at, seq, time FROM events", "time DESC, seq DESC", q.Limit), pq.args, nil
}

// encodeCursor is the cursor after a row whose sort key is (t, key): the time, then a name or
// number that breaks ties.
func encodeCursor(t int64, key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t, 10) + "|" + key))
}

func decodeCursor(c string) (int64, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		ts, key, ok := strings.Cut(string(raw), "|")
		if t, perr := strconv.ParseInt(ts, 10, 64); ok && perr == nil && key != "" {
			return t, key, nil
		}
	}
	return 0, "", fault.Invalid("cursor", "not a cursor returned by this API")
}

// An events cursor is the time and seq of the last event of a page.
func encodeEventCursor(t, seq int64) string { return encodeCursor(t, strconv.FormatInt(seq, 10)) }

func decodeEventCursor(c string) (int64, int64, error) {
	t, key, err := decodeCursor(c)
	if err != nil {
		return 0, 0, err
	}
	seq, err := strconv.ParseInt(key, 10, 64)
	if err != nil || seq < 1 {
		return 0, 0, fault.Invalid("cursor", "not a cursor returned by this API")
	}
	return t, seq, nil
}

// statesPerQuery is the most agents one query of AgentEventStates names: far below either engine's
// limit on bound parameters.
const statesPerQuery = 500

// AgentEventStates implements store.Store. The ingest loads every agent new to it in a batch
// with one call, instead of a round trip per agent: after a start, the first batch names most of
// the fleet.
func (s *Store) AgentEventStates(ctx context.Context, agentIDs []string) ([]store.EventState, error) {
	var out []store.EventState
	ids := slices.Clone(agentIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for start := 0; start < len(ids); start += statesPerQuery {
		chunk := ids[start:min(start+statesPerQuery, len(ids))]
		var sb strings.Builder
		args := make([]any, len(chunk))
		for n, id := range chunk {
			if n > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString("$" + strconv.Itoa(n+1))
			args[n] = id
		}
		rows, err := s.db.QueryContext(ctx, `SELECT agent_id, migration, last_event_id, last_type, last_severity, last_time
			FROM agent_event_state WHERE agent_id IN (`+sb.String()+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("agent event state: %w", err)
		}
		for rows.Next() {
			var st store.EventState
			var sev int
			var t int64
			if err := rows.Scan(&st.AgentID, &st.Migration, &st.LastEventID, &st.LastType, &sev, &t); err != nil {
				_ = rows.Close()
				return nil, fmt.Errorf("agent event state: %w", err)
			}
			st.LastSeverity, st.LastTime = severityName(sev), fromMicros(t)
			out = append(out, st)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("agent event state: %w", err)
		}
	}
	// Sorted here rather than by SQL, whose order of text depends on the database's collation.
	slices.SortFunc(out, func(a, b store.EventState) int {
		return cmp.Or(strings.Compare(a.AgentID, b.AgentID), strings.Compare(a.Migration, b.Migration))
	})
	return out, nil
}

// CountEvents implements store.Store.
func (s *Store) CountEvents(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM events`).Scan(&n)
	return n, err
}
