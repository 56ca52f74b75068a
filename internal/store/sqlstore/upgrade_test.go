package sqlstore_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/pgtest"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/store/sqlstore"
	"godwit.dev/godwit/internal/wire"
)

// engine opens one database twice: raw, as an older godwit left it, and through the store.
type engine struct {
	dialect sqlstore.Dialect
	raw     func(t *testing.T) *sql.DB
	open    func(t *testing.T) *sqlstore.Store
}

func engines(t *testing.T) map[string]engine {
	path := filepath.Join(t.TempDir(), "hub.db")
	var dsn string // one fresh PostgreSQL database, made on first use (skipped without a server)
	pgDSN := func(t *testing.T) string {
		if dsn == "" {
			dsn = pgtest.DSN(t)
		}
		return dsn
	}
	return map[string]engine{
		"sqlite": {
			dialect: sqlite.Dialect(),
			raw: func(t *testing.T) *sql.DB {
				db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_txlock=immediate")
				if err != nil {
					t.Fatal(err)
				}
				return db
			},
			open: func(t *testing.T) *sqlstore.Store {
				s, err := sqlite.Open(t.Context(), path)
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
		},
		"postgres": {
			dialect: postgres.Dialect(),
			raw: func(t *testing.T) *sql.DB {
				db, err := sql.Open("pgx", pgDSN(t))
				if err != nil {
					t.Fatal(err)
				}
				return db
			},
			open: func(t *testing.T) *sqlstore.Store {
				s, err := postgres.Open(t.Context(), pgDSN(t))
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
		},
	}
}

// Events stored by schema version 5 (keyed by id, indexes ending in id) survive the move to
// arrival-keyed events: every one is listed, newest first and across pages, a re-sent id is
// still a duplicate, and events stored afterwards sort in among them.
func TestEventsSurviveTheUpgradeToSeq(t *testing.T) {
	for name, e := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			raw := e.raw(t)
			if err := sqlstore.MigrateTo(ctx, raw, e.dialect, 5); err != nil {
				t.Fatal(err)
			}
			base := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
			agent := uuid.Must(uuid.NewV7()).String()
			var ids []string
			for i := range 5 {
				id := uuid.Must(uuid.NewV7()).String()
				ids = append(ids, id)
				at := base.Add(time.Duration(i/2) * time.Minute) // two pairs share a time
				body := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/agents/%s","type":"agent.started","time":%q,"severity":"info","data":{"agent_id":%q}}`,
					id, agent, at.Format(time.RFC3339Nano), agent)
				if _, err := raw.ExecContext(ctx, `INSERT INTO events (id, time, received_at, source, type, severity, agent_id, migration, body)
					VALUES ($1, $2, $3, $4, $5, 0, $6, '', $7)`, id, at.UnixMicro(), at.UnixMicro(), "/agents/"+agent, wire.EventAgentStarted, agent, body); err != nil {
					t.Fatal(err)
				}
			}
			if err := raw.Close(); err != nil {
				t.Fatal(err)
			}

			s := e.open(t)
			defer s.Close()
			if v, err := s.SchemaVersion(ctx); err != nil || v != sqlstore.LatestVersion(name) {
				t.Fatalf("schema version after upgrade = %d, %v", v, err)
			}
			later := wire.NewEvent(wire.AgentSource(agent), wire.EventAgentStarted, wire.SeverityInfo, wire.EventData{AgentID: agent})
			later.Time = base.Add(time.Hour)
			again := store.StoredEvent{Event: later, ReceivedAt: later.Time}
			dup := again
			dup.ID = ids[0]
			n, err := s.InsertEvents(ctx, []store.StoredEvent{again, dup}, nil)
			if err != nil || n != 1 {
				t.Fatalf("InsertEvents after upgrade = %d, %v; want 1 (the old id is a duplicate)", n, err)
			}

			var got []string
			q := store.EventQuery{AgentID: agent, Limit: 2}
			for {
				page, next, err := s.QueryEvents(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, ev := range page {
					got = append(got, ev.ID)
				}
				if next == "" {
					break
				}
				q.Cursor = next
			}
			// Newest time first; of two events of the same time, the later arrival first.
			want := []string{later.ID, ids[4], ids[3], ids[2], ids[1], ids[0]}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("events after upgrade:\n got %v\nwant %v", got, want)
			}
		})
	}
}

// Agents enrolled before names were unique (schema 6) may share a name: the upgrade keeps them
// all, and the name stays taken while one of them is unrevoked. Sessions made before roles
// existed were made with the admin token and keep its role.
func TestDuplicateNamesSurviveTheUpgradeToUniqueNames(t *testing.T) {
	for name, e := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			raw := e.raw(t)
			if err := sqlstore.MigrateTo(ctx, raw, e.dialect, 6); err != nil {
				t.Fatal(err)
			}
			for _, a := range []struct{ id, name string }{{"a1", "web-1"}, {"a2", "WEB-1"}, {"a3", "db-1"}} {
				if _, err := raw.ExecContext(ctx, `INSERT INTO agents (id, name, enrolled_at, cred_hash) VALUES ($1, $2, 1, 'x')`, a.id, a.name); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := raw.ExecContext(ctx, `INSERT INTO ui_sessions (id_hash, csrf, created_at, expires_at) VALUES ('old', 'c', 1, $1)`,
				time.Now().Add(time.Hour).UnixMicro()); err != nil {
				t.Fatal(err)
			}
			if _, err := raw.ExecContext(ctx, `INSERT INTO enroll_tokens (id, hash, max_uses, expires_at, created_at) VALUES ('t', 'secret', 9, $1, 1)`,
				time.Now().Add(time.Hour).UnixMicro()); err != nil {
				t.Fatal(err)
			}
			if err := raw.Close(); err != nil {
				t.Fatal(err)
			}

			s := e.open(t)
			defer s.Close()
			agents, err := s.ListAgents(ctx)
			if err != nil || len(agents) != 3 {
				t.Fatalf("agents after upgrade = %+v, %v", agents, err)
			}
			sess, err := s.GetSession(ctx, "old", time.Now())
			if err != nil || sess.Role != wire.RoleAdmin || sess.TokenID != wire.AdminTokenID {
				t.Fatalf("session after upgrade = %+v, %v; want the admin token's", sess, err)
			}
			now := time.Now()
			enroll := func(id, agentName string) error {
				return s.Enroll(ctx, "secret", now, wire.Agent{ID: id, Name: agentName, EnrolledAt: now}, "x")
			}
			for _, n := range []string{"web-1", "Web-1", "db-1"} {
				if err := enroll("new-"+n, n); fault.Code(err) != "conflict" {
					t.Fatalf("Enroll(%s) after upgrade = %v, want conflict", n, err)
				}
			}
			if err := s.RevokeAgent(ctx, "a1", now); err != nil {
				t.Fatal(err)
			}
			if err := enroll("b1", "web-1"); fault.Code(err) != "conflict" {
				t.Fatalf("Enroll(web-1) with a2 unrevoked = %v, want conflict", err)
			}
			if err := s.RevokeAgent(ctx, "a2", now); err != nil {
				t.Fatal(err)
			}
			if err := enroll("b2", "web-1"); err != nil {
				t.Fatalf("Enroll(web-1) with both revoked: %v", err)
			}
		})
	}
}

// Attempts stored before the latest attempt was a column (schema 14) are marked by the upgrade:
// an agent's retried attempts are hidden behind its last one, in counts and listings.
func TestLatestAttemptsSurviveTheUpgrade(t *testing.T) {
	for name, e := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			raw := e.raw(t)
			if err := sqlstore.MigrateTo(ctx, raw, e.dialect, 14); err != nil {
				t.Fatal(err)
			}
			for _, a := range []struct {
				agent   string
				attempt int
				state   string
			}{{"a1", 1, "failed"}, {"a1", 2, "failed"}, {"a1", 3, "succeeded"}, {"a2", 1, "rollback_failed"}, {"a3", 2, "pending"}, {"a3", 1, "failed"}} {
				if _, err := raw.ExecContext(ctx, `INSERT INTO assignments (migration, agent_id, attempt, batch, state, created_at, updated_at)
					VALUES ('m', $1, $2, 0, $3, 1, 1)`, a.agent, a.attempt, a.state); err != nil {
					t.Fatal(err)
				}
			}
			if err := raw.Close(); err != nil {
				t.Fatal(err)
			}
			s := e.open(t)
			defer s.Close()
			latest, err := s.LatestAssignments(ctx, store.LatestQuery{Migration: "m"})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range latest {
				got = append(got, fmt.Sprintf("%s#%d", a.AgentID, a.Attempt))
			}
			if want := "a1#3,a2#1,a3#2"; strings.Join(got, ",") != want {
				t.Fatalf("latest attempts after the upgrade = %v, want %s", got, want)
			}
			counts, err := s.CountLatestAssignments(ctx, "m")
			if err != nil {
				t.Fatal(err)
			}
			if want := []store.AssignmentCount{{State: "pending", N: 1}, {State: "rollback_failed", N: 1}, {State: "succeeded", N: 1}}; fmt.Sprint(counts) != fmt.Sprint(want) {
				t.Fatalf("counts after the upgrade = %v, want %v", counts, want)
			}
			if broken, err := s.RollbackFailures(ctx, nil); err != nil || fmt.Sprint(broken) != "map[a2:[m]]" {
				t.Fatalf("rollback failures after the upgrade = %v, %v", broken, err)
			}
		})
	}
}
