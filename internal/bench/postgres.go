package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultPostgres is the server the ingest benchmark tries when --postgres is not given: the
// local one the tests use (store/pgtest).
const DefaultPostgres = "postgres://root@127.0.0.1:5432/postgres?sslmode=disable"

// pgServer is a PostgreSQL server on which the benchmark creates databases of its own.
type pgServer struct{ dsn string }

// reachable checks that the server answers within a few seconds.
func (p pgServer) reachable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.dsn)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// tempDatabase creates a uniquely named database and returns its DSN and a function that drops
// it (with any connection still open to it).
func (p pgServer) tempDatabase(ctx context.Context) (string, func() error, error) {
	conn, err := pgx.Connect(ctx, p.dsn)
	if err != nil {
		return "", nil, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(context.Background())
	name := "godwit_bench_" + strings.ToLower(rand.Text()[:16])
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", nil, fmt.Errorf("postgres: create database %s: %w", name, err)
	}
	drop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, p.dsn)
		if err != nil {
			return fmt.Errorf("postgres: drop database %s: %w", name, err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("postgres: drop database %s: %w", name, err)
		}
		return nil
	}
	return withDatabase(p.dsn, name), drop, nil
}

// withDatabase points a DSN, URL or keyword/value form, at database name.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path, u.RawPath = "/"+name, ""
		return u.String()
	}
	return dsn + " dbname=" + name // a later keyword wins
}

// redact hides a password in a URL DSN.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "(keyword/value DSN)"
}
