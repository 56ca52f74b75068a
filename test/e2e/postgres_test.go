package e2e

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"godwit.dev/godwit/internal/store/pgtest"
	"godwit.dev/godwit/internal/store/sqlstore"
)

// Two hub processes started at the same moment on one PostgreSQL database, their embedded NATS
// servers one cluster, both come up, with one schema applied once and one admin token printed
// once.
func TestTwoHubsStartTogetherOnPostgres(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	root := t.TempDir()
	hubs := make([]*hubProc, 2)
	routes := []string{freeAddr(t), freeAddr(t)}
	var wg sync.WaitGroup
	for i := range hubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hubs[i] = startHub(t, filepath.Join(root, []string{"a", "b"}[i]), "--database", dsn,
				"--nats-cluster-listen", routes[i], "--nats-route", "nats://"+routes[1-i])
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	printed := 0
	for _, h := range hubs {
		if strings.Contains(h.output(), "admin token created") {
			printed++
		}
	}
	if printed != 1 {
		t.Fatalf("admin token created by %d hubs, want exactly 1", printed)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows, distinct, max int
	err = db.QueryRowContext(context.Background(),
		`SELECT COUNT(*), COUNT(DISTINCT version), MAX(version) FROM godwit_schema_migrations`).Scan(&rows, &distinct, &max)
	if err != nil {
		t.Fatal(err)
	}
	if want := sqlstore.LatestVersion("postgres"); rows != want || distinct != want || max != want {
		t.Fatalf("schema rows=%d distinct=%d max=%d, want each %d", rows, distinct, max, want)
	}
	// The hub that printed the token lets both hubs' APIs accept it: one shared admin token.
	var token string
	for _, h := range hubs {
		if h.token != "" {
			token = h.token
		}
	}
	for _, h := range hubs {
		h.token = token
		h.cli(t, "get", "agents")
	}
}
