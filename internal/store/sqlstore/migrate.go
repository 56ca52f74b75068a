package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one numbered schema change. A file NNNN_name.sql applies to every engine; a file
// NNNN_name.<engine>.sql replaces it for that engine.
type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations(engine string) ([]migration, error) {
	return loadMigrationsFrom(migrationFS, engine)
}

func loadMigrationsFrom(fsys fs.FS, engine string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, err
	}
	byVersion := map[int]migration{}
	for _, e := range entries {
		base := strings.TrimSuffix(e.Name(), ".sql")
		specific := false
		if i := strings.LastIndexByte(base, '.'); i >= 0 {
			if base[i+1:] != engine {
				continue
			}
			base, specific = base[:i], true
		}
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration file %q: name must be NNNN_name.sql", e.Name())
		}
		if prev, seen := byVersion[v]; seen {
			// One version is one change: an engine's file may stand in for the shared one of the
			// same name, but two different changes under one number would drop one silently.
			if prev.name != name {
				return nil, fmt.Errorf("migrations: version %d is both %q and %q; renumber one", v, prev.name, name)
			}
			if !specific {
				continue
			}
		}
		body, err := fs.ReadFile(fsys, "migrations/"+e.Name())
		if err != nil {
			return nil, err
		}
		byVersion[v] = migration{version: v, name: name, sql: string(body)}
	}
	out := make([]migration, 0, len(byVersion))
	for _, m := range byVersion {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migrations: version %d missing", i+1)
		}
	}
	return out, nil
}

// LatestVersion is the schema version this binary brings.
func LatestVersion(engine string) int {
	ms, err := loadMigrations(engine)
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrate applies pending migrations on conn, which the caller holds under the engine's
// migration lock. Each migration runs in its own transaction together with its bookkeeping row.
func migrate(ctx context.Context, conn *sql.Conn, engine string) error {
	return migrateTo(ctx, conn, engine, 0)
}

// migrateTo is migrate stopping after version upTo (0: the latest).
func migrateTo(ctx context.Context, conn *sql.Conn, engine string, upTo int) error {
	ms, err := loadMigrations(engine)
	if err != nil {
		return err
	}
	if upTo > 0 && upTo < len(ms) {
		ms = ms[:upTo]
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS godwit_schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	var current int
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM godwit_schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > len(ms) {
		return fmt.Errorf("database schema is at version %d but this godwit knows only up to %d: refusing to run an older binary against a newer database", current, len(ms))
	}
	for _, m := range ms[current:] {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		// Another opener may have applied m since current was read: the SQLite lock is only the
		// write transaction itself (BEGIN IMMEDIATE), so look again inside it.
		var done int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM godwit_schema_migrations WHERE version = $1`, m.version).Scan(&done); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
		}
		if done > 0 {
			_ = tx.Rollback()
			continue
		}
		for _, stmt := range splitStatements(m.sql) {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				_ = tx.Rollback()
				return fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO godwit_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			m.version, m.name, time.Now().UnixMicro()); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migration %04d_%s: record: %w", m.version, m.name, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %04d_%s: commit: %w", m.version, m.name, err)
		}
	}
	return nil
}

// splitStatements splits a migration file on semicolons at line ends, dropping comments.
// Migrations are plain DDL; none contains a semicolon inside a string or a function body.
func splitStatements(src string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}
