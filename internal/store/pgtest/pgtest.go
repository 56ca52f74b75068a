// Package pgtest gives a test a PostgreSQL database of its own: created fresh on the server named
// by GODWIT_TEST_POSTGRES (default: local, trust auth) and dropped when the test ends.
//
// Without a reachable server the test is skipped, except in CI (CI=true), where the PostgreSQL run
// is mandatory and an unreachable server fails the test.
package pgtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultServer is used when GODWIT_TEST_POSTGRES is unset.
const DefaultServer = "postgres://root@127.0.0.1:5432/postgres?sslmode=disable"

// DSN creates a uniquely named database and returns a DSN for it; the database is dropped (with
// any connections still open to it) at t.Cleanup.
func DSN(t testing.TB) string {
	t.Helper()
	server := os.Getenv("GODWIT_TEST_POSTGRES")
	if server == "" {
		server = DefaultServer
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL at %s is not reachable (%v); set GODWIT_TEST_POSTGRES to a server DSN", redact(server), err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: the PostgreSQL run is mandatory)")
		}
		t.Skip(msg)
	}
	defer conn.Close(context.Background())

	name := "godwit_test_" + strings.ToLower(rand.Text()[:16])
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, server)
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return withDatabase(server, name)
}

// withDatabase points a DSN, URL or keyword/value form, at database name.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path, u.RawPath = "/"+name, ""
		return u.String()
	}
	return dsn + " dbname=" + name // a later keyword wins
}

// redact hides a password in a URL DSN for messages.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "GODWIT_TEST_POSTGRES"
}
