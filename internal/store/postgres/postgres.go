// Package postgres opens the hub store on PostgreSQL through pgx, for hubs that scale out:
// several replicas share one database.
package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"godwit.dev/godwit/internal/store/sqlstore"
)

// migrationLockKey is the advisory lock id under which hubs apply migrations ("godwit" in hex).
const migrationLockKey int64 = 0x676f64776974

// Open connects to dsn and applies migrations under a PostgreSQL advisory lock, so hubs that
// start at the same moment apply them once, one after the other.
func Open(ctx context.Context, dsn string) (*sqlstore.Store, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	db.SetMaxOpenConns(16)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	s, err := sqlstore.Open(ctx, db, Dialect())
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return s, nil
}

// Dialect is the PostgreSQL dialect.
func Dialect() sqlstore.Dialect {
	return sqlstore.Dialect{
		Name: "postgres",
		Lock: func(ctx context.Context, conn *sql.Conn) (func(), error) {
			if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
				return nil, err
			}
			return func() {
				_, _ = conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock($1)", migrationLockKey)
			}, nil
		},
		IsTransient: IsTransient,
		ArrayParams: true,
	}
}

// IsTransient reports connection failures, serialization/deadlock/admin-shutdown errors and a
// database in read-only mode.
// A connection the server closed without a word (it crashed, or a pooler or proxy in front of
// it restarted) is one too: pgx reports the end of stream it read (io.EOF,
// io.ErrUnexpectedEOF), and then that the connection is closed (pgconn.ErrConnClosed), and
// neither is a net.Error.
func IsTransient(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", "40", "57", "53": // connection, transaction rollback, operator intervention, resources
			return true
		}
		// A database that takes no writes for now: a standby reached during a failover, or
		// default_transaction_read_only set for maintenance. Waited for, as one that is down.
		return pgErr.Code == "25006" // read_only_sql_transaction
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
