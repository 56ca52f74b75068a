package postgres_test

import (
	"database/sql"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/pgtest"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/store/sqlstore"
	"godwit.dev/godwit/internal/store/storetest"
)

func TestStore(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := postgres.Open(t.Context(), pgtest.DSN(t))
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestConcurrentOpen(t *testing.T) {
	t.Parallel()
	// Hub replicas starting at the same moment against a fresh database: the advisory lock makes
	// them apply each migration once, one after the other, and none of them fails.
	dsn := pgtest.DSN(t)
	const n = 8
	stores := make([]*sqlstore.Store, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = postgres.Open(t.Context(), dsn)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Open #%d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() { _ = stores[i].Close() })
	}
	if t.Failed() {
		return
	}

	latest := sqlstore.LatestVersion("postgres")
	for i, s := range stores {
		if v, err := s.SchemaVersion(t.Context()); err != nil || v != latest {
			t.Errorf("store #%d SchemaVersion = %d, %v; want %d", i, v, err, latest)
		}
	}
	rows, err := stores[0].DB().QueryContext(t.Context(),
		`SELECT version, COUNT(*) FROM godwit_schema_migrations GROUP BY version ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	want := 1
	for rows.Next() {
		var version, count int
		if err := rows.Scan(&version, &count); err != nil {
			t.Fatal(err)
		}
		if version != want || count != 1 {
			t.Fatalf("godwit_schema_migrations: version %d recorded %d times, want version %d once", version, count, want)
		}
		want++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want-1 != latest {
		t.Fatalf("godwit_schema_migrations holds versions 1..%d, want 1..%d", want-1, latest)
	}
}

// A database that takes no writes for now (a standby the connection reached during a failover,
// default_transaction_read_only set for maintenance) is waited for, as one that is down: the
// ingest keeps the events in the stream instead of dead-lettering them after a few deliveries.
func TestReadOnlyDatabaseIsTransient(t *testing.T) {
	t.Parallel()
	db, err := sql.Open("pgx", pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(t.Context(), &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	_, err = tx.ExecContext(t.Context(), `CREATE TABLE read_only_probe (i int)`)
	if err == nil {
		t.Fatal("a write in a read-only transaction went through")
	}
	if !postgres.IsTransient(fmt.Errorf("insert events: %w", err)) {
		t.Fatalf("IsTransient(%v) = false; want true", err)
	}
	// A refusal of the statement itself stays permanent.
	if postgres.IsTransient(&pgconn.PgError{Code: "23505"}) {
		t.Fatal("a unique violation counted as transient")
	}
}
