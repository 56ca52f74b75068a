// Package sqlite opens the hub store on a SQLite file (the embedded default) through the pure-Go
// modernc.org/sqlite driver: no cgo, nothing to install.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"godwit.dev/godwit/internal/datadir"
	"godwit.dev/godwit/internal/store/sqlstore"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteMagic is the first 16 bytes of every SQLite 3 database file.
const sqliteMagic = "SQLite format 3\x00"

// Open opens (creating if absent) the database file at path and applies migrations.
//
// An existing file that is not a SQLite database is refused with an error naming it; it is never
// overwritten. The database and its -wal and -shm files are readable by this user only (0600),
// whatever the umask or the mode an older version left them with.
func Open(ctx context.Context, path string) (*sqlstore.Store, error) {
	if err := checkFile(path); err != nil {
		return nil, err
	}
	if err := datadir.PrivateSQLite(path); err != nil {
		return nil, fmt.Errorf("sqlite database %s: %w", path, err)
	}
	q := url.Values{}
	// busy_timeout first: switching to WAL needs a lock another opener may hold. A 16 MiB page
	// cache per connection (SQLite's default is 2 MiB) keeps the index pages that event batches
	// write to in memory. No connection checkpoints on commit: Dialect's Maintain does, in the
	// background, so that copying the WAL into the database is not on the writers' path.
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "foreign_keys(ON)", "synchronous(NORMAL)",
		"cache_size(-16384)", "wal_autocheckpoint(0)"} {
		q.Add("_pragma", p)
	}
	// Write transactions take the write lock at BEGIN, so two writers never deadlock upgrading.
	q.Set("_txlock", "immediate")
	// Escaped, so that '?', '#' or '%' in the path cannot point SQLite at another file.
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// One writer at a time is SQLite's nature; a small pool keeps readers concurrent with it.
	db.SetMaxOpenConns(4)
	if err := ping(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	var check string
	if err := db.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&check); err != nil || check != "ok" {
		_ = db.Close()
		if err == nil {
			err = errors.New(check)
		}
		return nil, fmt.Errorf("sqlite database %s is corrupt (%v); restore it from a backup, it was left untouched", path, err)
	}
	s, err := sqlstore.Open(ctx, db, Dialect())
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	return s, nil
}

// ping opens the first connection. Switching a new file to WAL takes an exclusive lock that
// SQLite does not wait for with the busy handler, so openers racing on a new file retry briefly.
func ping(ctx context.Context, db *sql.DB) error {
	delay := 10 * time.Millisecond
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := db.PingContext(ctx)
		if err == nil || !IsTransient(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

func checkFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sqlite database %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() == 0 {
		return nil
	}
	head := make([]byte, len(sqliteMagic))
	if n, _ := f.Read(head); n < len(head) || string(head) != sqliteMagic {
		return fmt.Errorf("%s exists and is not a SQLite database; refusing to touch it", path)
	}
	return nil
}

// Dialect is the SQLite dialect. Migrations run inside BEGIN IMMEDIATE, which serialises them
// against any other connection to the same file.
func Dialect() sqlstore.Dialect {
	return sqlstore.Dialect{
		Name: "sqlite",
		Lock: func(ctx context.Context, conn *sql.Conn) (func(), error) {
			// The hub holds the data-dir lock, so only one process opens this file for writing.
			// A second opener anyway is serialised by each migration's BEGIN IMMEDIATE (_txlock),
			// inside which migrate checks again whether the migration is already applied.
			if _, err := conn.ExecContext(ctx, "PRAGMA busy_timeout = 10000"); err != nil {
				return nil, err
			}
			return func() {}, nil
		},
		IsTransient: IsTransient,
		// In process, a prepared statement executed once per row beats multi-row statements
		// (SQLite materialises a multi-row VALUES list before inserting it).
		RowsPerInsert:  1,
		OneEventWriter: true,
		OneWriter:      true,
		Maintain:       checkpoint,
	}
}

// CheckpointInterval is how often the background checkpointer copies the WAL into the database:
// the WAL holds about a quarter of a second of writes.
const CheckpointInterval = 250 * time.Millisecond

// checkpoint copies committed WAL frames into the database every CheckpointInterval, without
// waiting for readers or writers (PASSIVE), until ctx ends. A WAL whose frames have all been
// copied is started over by the next write, so it stays about as large as what is written
// between two checkpoints. The last connection to close checkpoints what is left.
func checkpoint(ctx context.Context, db *sql.DB) {
	t := time.NewTicker(CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Errors (a busy database, the store closing) only delay the next checkpoint.
		_, _ = db.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
	}
}

// IsTransient reports SQLITE_BUSY / SQLITE_LOCKED, which clear by themselves.
func IsTransient(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
	}
	return err != nil && strings.Contains(err.Error(), "database is locked")
}
