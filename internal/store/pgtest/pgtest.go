// Package pgtest gives a test a PostgreSQL database of its own: created fresh on the server named
// by GODWIT_TEST_POSTGRES (default: postgres.LocalServer) and dropped when the test ends.
//
// Without a reachable server the test is skipped, except in CI (CI=true), where the PostgreSQL run
// is mandatory and an unreachable server fails the test.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store/postgres"
)

// DSN creates a uniquely named database and returns a DSN for it; the database is dropped (with
// any connections still open to it) at t.Cleanup.
func DSN(t testing.TB) string {
	t.Helper()
	server := os.Getenv("GODWIT_TEST_POSTGRES")
	if server == "" {
		server = postgres.LocalServer
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := postgres.Reachable(ctx, server); err != nil {
		msg := fmt.Sprintf("PostgreSQL at %s is not reachable (%v); set GODWIT_TEST_POSTGRES to a server DSN", postgres.Redact(server), err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: the PostgreSQL run is mandatory)")
		}
		t.Skip(msg)
	}
	dsn, drop, err := postgres.TempDatabase(ctx, server, "godwit_test_")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return dsn
}
