package sqlstore_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

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
