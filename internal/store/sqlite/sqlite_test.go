package sqlite_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/store/sqlstore"
	"godwit.dev/godwit/internal/store/storetest"
	"godwit.dev/godwit/internal/wire"
)

func TestStore(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "hub.db"))
	})
}

func open(t testing.TB, path string) *sqlstore.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestOpenRefusesForeignFile(t *testing.T) {
	t.Parallel()
	noise := make([]byte, 8192)
	_, _ = rand.Read(noise)
	tests := []struct {
		name    string
		content []byte
	}{
		{"text", []byte("db_password = hunter2\nthis is somebody's config file, not a database\n")},
		{"short", []byte("SQLite")},
		{"random", noise},
		{"magic then garbage", append([]byte("SQLite format 3\x00"), noise...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "hub.db")
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Stat(path)
			s, err := sqlite.Open(t.Context(), path)
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open of a %s file succeeded", tt.name)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, tt.content) {
				t.Errorf("file changed: %d bytes before, %d after", len(tt.content), len(after))
			}
			if st, _ := os.Stat(path); !st.ModTime().Equal(before.ModTime()) || st.Mode() != before.Mode() {
				t.Errorf("file metadata changed: %v %v → %v %v", before.Mode(), before.ModTime(), st.Mode(), st.ModTime())
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("directory holds %v, want only hub.db", names)
			}
		})
	}
}

func TestOpenEmptyFile(t *testing.T) {
	t.Parallel()
	// An empty file is what `touch` leaves: there is nothing to protect, so it becomes the database.
	path := filepath.Join(t.TempDir(), "hub.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, path)
	if v, err := s.SchemaVersion(t.Context()); err != nil || v != sqlstore.LatestVersion("sqlite") {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, sqlstore.LatestVersion("sqlite"))
	}
}

func TestReopenKeepsData(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "hub.db")
	now := time.Date(2025, 6, 1, 12, 0, 0, 123456000, time.UTC)

	s := open(t, path)
	ctx := t.Context()
	if _, err := s.InitAdminToken(ctx, "admin", now); err != nil {
		t.Fatal(err)
	}
	tk := wire.EnrollToken{ID: "tok", MaxUses: 3, ExpiresAt: now.Add(time.Hour), CreatedAt: now}
	if err := s.CreateEnrollToken(ctx, tk, "secret"); err != nil {
		t.Fatal(err)
	}
	a := wire.Agent{ID: "a1", Name: "node-1", Labels: map[string]string{"site": "ams"}, EnrolledAt: now}
	if err := s.Enroll(ctx, "secret", now, a, "cred"); err != nil {
		t.Fatal(err)
	}
	applied := migrations(t, s)
	if len(applied) != sqlstore.LatestVersion("sqlite") {
		t.Fatalf("migrations applied = %v, want %d", applied, sqlstore.LatestVersion("sqlite"))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path)
	if err := s.CheckAdminToken(ctx, "admin"); err != nil {
		t.Fatalf("admin token after reopen: %v", err)
	}
	if created, err := s.InitAdminToken(ctx, "other", now); err != nil || created {
		t.Fatalf("InitAdminToken after reopen = %v, %v; want false, nil", created, err)
	}
	got, err := s.GetAgent(ctx, "a1")
	if err != nil || got.Name != "node-1" || got.Labels["site"] != "ams" || !got.EnrolledAt.Equal(now) {
		t.Fatalf("agent after reopen = %+v, %v", got, err)
	}
	tokens, err := s.ListEnrollTokens(ctx)
	if err != nil || len(tokens) != 1 || tokens[0].Uses != 1 {
		t.Fatalf("tokens after reopen = %+v, %v", tokens, err)
	}
	// The bookkeeping rows are the very same: nothing was applied again.
	if again := migrations(t, s); !slices.Equal(again, applied) {
		t.Fatalf("migrations after reopen = %v, before %v", again, applied)
	}
}

func TestConcurrentOpen(t *testing.T) {
	t.Parallel()
	// Two openers of one fresh file (a hub and `godwit` tooling, or a test) must not both try to
	// apply the same migration.
	path := filepath.Join(t.TempDir(), "hub.db")
	const n = 4
	stores := make([]*sqlstore.Store, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = sqlite.Open(t.Context(), path)
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
	applied := migrations(t, stores[0])
	if len(applied) != sqlstore.LatestVersion("sqlite") {
		t.Fatalf("migrations = %v, want versions 1..%d once each", applied, sqlstore.LatestVersion("sqlite"))
	}
}

type migrationRow struct {
	version   int
	appliedAt int64
}

// migrations reads the bookkeeping rows, checking each version appears once and in order.
func migrations(t *testing.T, s *sqlstore.Store) []migrationRow {
	t.Helper()
	rows, err := s.DB().QueryContext(t.Context(), `SELECT version, applied_at FROM godwit_schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []migrationRow
	for rows.Next() {
		var r migrationRow
		if err := rows.Scan(&r.version, &r.appliedAt); err != nil {
			t.Fatal(err)
		}
		if r.version != len(out)+1 {
			t.Fatalf("migration version %d at position %d", r.version, len(out)+1)
		}
		out = append(out, r)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOpenPathWithURIMetacharacters(t *testing.T) {
	t.Parallel()
	// The path goes into a file: URI; characters that mean something there must not change
	// which file is opened.
	dir := filepath.Join(t.TempDir(), "data #1 ?50%25 off")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hub.db")
	s := open(t, path)
	if _, err := s.InitAdminToken(t.Context(), "admin", time.Now()); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 16)
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("database not at %s: %v", path, err)
	}
	defer f.Close()
	if _, err := f.Read(head); err != nil || string(head) != "SQLite format 3\x00" {
		t.Fatalf("%s is not the database: %q, %v", path, head, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Fatalf("files created outside %s: %v", dir, entries)
	}
}

// Commits do not copy the WAL into the database file (no connection checkpoints on commit); the
// store's background checkpointer does, within a few intervals, while the store stays open.
func TestBackgroundCheckpoint(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "hub.db")
	s := open(t, path)
	size := func(p string) int64 {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	before := size(path)
	events := make([]store.StoredEvent, 2000)
	for i := range events {
		e := wire.NewEvent(wire.HubSource("h"), wire.EventOperatorAction, wire.SeverityInfo,
			wire.EventData{Message: strings.Repeat("x", 1000)})
		events[i] = store.StoredEvent{Event: e, ReceivedAt: e.Time}
	}
	if _, err := s.InsertEvents(t.Context(), events, nil); err != nil {
		t.Fatal(err)
	}
	if wal := size(path + "-wal"); wal < 2<<20 {
		t.Fatalf("WAL holds %d bytes after 2 MB of events", wal)
	}
	deadline := time.Now().Add(20 * sqlite.CheckpointInterval)
	for size(path) < before+(2<<20) {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes (was %d) after %s: nothing checkpointed the WAL",
				size(path), before, 20*sqlite.CheckpointInterval)
		}
		time.Sleep(sqlite.CheckpointInterval / 5)
	}
}

// The database and the files SQLite keeps beside it are readable by this user only, whatever the
// umask (here none at all) and whatever mode an older version left them with. Not parallel: the
// umask is the process's.
func TestFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "hub.db")
	check := func(when string) {
		t.Helper()
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("%s: %s has mode %#o, want 0600", when, filepath.Base(p), st.Mode().Perm())
			}
		}
	}
	s := open(t, path)
	if _, err := s.InitAdminToken(t.Context(), "h", time.Now()); err != nil {
		t.Fatal(err)
	}
	check("new database")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// As an older version under umask 0 would have left them.
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(p, nil, 0o666); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(p, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	s = open(t, path)
	if _, err := s.InitAdminToken(t.Context(), "h2", time.Now()); err != nil {
		t.Fatal(err)
	}
	check("reopened database")
}
