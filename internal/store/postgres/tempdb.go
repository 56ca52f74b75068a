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
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		return "", nil, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(context.Background())
	name := prefix + strings.ToLower(rand.Text()[:16])
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", nil, fmt.Errorf("postgres: create database %s: %w", name, err)
	}
	drop = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, server)
		if err != nil {
			return fmt.Errorf("postgres: drop database %s: %w", name, err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("postgres: drop database %s: %w", name, err)
		}
		return nil
	}
	return withDatabase(server, name), drop, nil
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
