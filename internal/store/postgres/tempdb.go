package postgres

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// LocalServer is the PostgreSQL server that tests (store/pgtest) and godwit bench use when none
// is named: the local one, as root with trust authentication.
const LocalServer = "postgres://root@127.0.0.1:5432/postgres?sslmode=disable"

// Reachable reports whether the server accepts a connection within ctx.
func Reachable(ctx context.Context, server string) error {
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// TempDatabase creates a database named prefix plus a random suffix on server, and returns its
// DSN and a function that drops it (closing any connection still open to it).
func TempDatabase(ctx context.Context, server, prefix string) (dsn string, drop func() error, err error) {
	name := prefix + strings.ToLower(rand.Text()[:16])
	dsn, created, err := KeptDatabase(ctx, server, name)
	if err != nil {
		return "", nil, err
	}
	if !created {
		return "", nil, fmt.Errorf("postgres: database %s exists already", name)
	}
	return dsn, func() error { return DropDatabase(server, name) }, nil
}

// KeptDatabase returns the DSN of database name on server, and creates it when it does not
// exist; created says whether it did.
func KeptDatabase(ctx context.Context, server, name string) (dsn string, created bool, err error) {
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		return "", false, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", false, fmt.Errorf("postgres: look up database %s: %w", name, err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return "", false, fmt.Errorf("postgres: create database %s: %w", name, err)
		}
	}
	return withDatabase(server, name), !exists, nil
}

// DropDatabase drops database name on server if it exists, closing any connection still open
// to it.
func DropDatabase(server, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		return fmt.Errorf("postgres: drop database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("postgres: drop database %s: %w", name, err)
	}
	return nil
}

// withDatabase points a DSN, URL or keyword/value form, at database name.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path, u.RawPath = "/"+name, ""
		return u.String()
	}
	return dsn + " dbname=" + name // a later keyword wins
}

// Redact makes a DSN fit for a message: a URL with its password hidden; a keyword/value DSN,
// which may hold one anywhere, not at all.
func Redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "(keyword/value DSN)"
}
