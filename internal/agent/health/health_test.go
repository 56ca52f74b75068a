package health

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/health/fulldisk"
)

func TestClassifyErrnos(t *testing.T) {
	t.Parallel()
	path := func(e syscall.Errno) error {
		return fmt.Errorf("open runner journal: %w", &os.PathError{Op: "open", Path: "/x/journal.db", Err: e})
	}
	cases := []struct {
		err     error
		class   Class
		summary string
	}{
		{path(syscall.ENOSPC), Wait, "disk full"},
		{path(syscall.EDQUOT), Wait, "disk quota exceeded"},
		{path(syscall.EIO), Wait, "I/O error"},
		{path(syscall.EROFS), Operator, "read-only"},
		{path(syscall.EACCES), Operator, "permission denied"},
		{path(syscall.EPERM), Operator, "permission denied"},
		{path(syscall.ENOENT), Other, "storage failing"},
		{errors.New("something else"), Other, "storage failing"},
		{NeedsOperator(errors.New("runner journal x is damaged")), Operator, "storage failing"},
		{fmt.Errorf("open: %w", NeedsOperator(errors.New("damaged"))), Operator, "storage failing"},
		{nil, Other, "storage failing"},
	}
	for _, tc := range cases {
		if got := Classify(tc.err); got != tc.class {
			t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.class)
		}
		if got := Summary(tc.err); got != tc.summary {
			t.Errorf("Summary(%v) = %q, want %q", tc.err, got, tc.summary)
		}
	}
	marked := NeedsOperator(errors.New("the text"))
	if marked.Error() != "the text" || !errors.Is(marked, ErrNeedsOperator) {
		t.Fatalf("NeedsOperator changed the text or lost the mark: %q", marked)
	}
	if NeedsOperator(nil) != nil {
		t.Fatal("NeedsOperator(nil) is not nil")
	}
}

func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=synchronous(FULL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// The errors SQLite really returns on a full, then a read-only, file system are classified as
// the agent must act on them.
func TestClassifySQLiteOnASmallFileSystem(t *testing.T) {
	fs, err := fulldisk.Mount(t, 1<<20)
	if err != nil {
		t.Skipf("no small file system to fill: %v", err)
	}
	path := filepath.Join(fs.Dir, "j.db")
	db := openDB(t, path)
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode = WAL").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal mode %q, %v", mode, err)
	}
	if _, err := db.Exec("CREATE TABLE x (b BLOB)"); err != nil {
		t.Fatal(err)
	}
	fs.Fill()
	_, err = db.Exec("INSERT INTO x VALUES (randomblob(100000))")
	if Classify(err) != Wait || Summary(err) != "disk full" {
		t.Fatalf("insert on a full file system: %v: class %v, summary %q; want wait, disk full", err, Classify(err), Summary(err))
	}
	fs.Free()
	if _, err := db.Exec("INSERT INTO x VALUES (1)"); err != nil {
		t.Fatalf("insert after space came back: %v", err)
	}
	// Closed cleanly (the write-ahead log and shared memory go), then opened on a full file
	// system: the shared-memory file cannot be made.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fs.Fill()
	db = openDB(t, path)
	var check string
	err = db.QueryRow("PRAGMA quick_check").Scan(&check)
	if Classify(err) != Wait || Summary(err) != "disk full" || Damaged(err) {
		t.Fatalf("open on a full file system: %v: class %v, summary %q", err, Classify(err), Summary(err))
	}
	fs.Free()
	if err := db.QueryRow("PRAGMA quick_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("quick_check after space came back: %q, %v", check, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fs.SetReadOnly(true); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fs.SetReadOnly(false) }()
	db = openDB(t, path)
	_, err = db.Exec("INSERT INTO x VALUES (2)")
	if Classify(err) != Operator || Damaged(err) {
		t.Fatalf("insert on a read-only file system: %v: class %v", err, Classify(err))
	}
}

func TestClassifyDamagedFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "d.db")
	body := append([]byte("SQLite format 3\x00"), make([]byte, 8192)...)
	for i := range body[16:] {
		body[16+i] = byte(i * 7)
	}
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	var check string
	err := openDB(t, path).QueryRow("PRAGMA quick_check").Scan(&check)
	if err == nil {
		t.Skipf("quick_check of garbage answered %q", check)
	}
	if Classify(err) != Operator || !Damaged(err) || Summary(err) != "damaged" {
		t.Fatalf("%v: class %v, damaged %v, summary %q", err, Classify(err), Damaged(err), Summary(err))
	}
}

func TestCondition(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := NewCondition("the journal /x/j.db", nil, func() time.Time { return now })
	if c.Reason() != "" {
		t.Fatalf("a new condition has a reason: %q", c.Reason())
	}
	c.OK()
	full := &os.PathError{Op: "write", Path: "/x/j.db", Err: syscall.ENOSPC}
	if n := c.Failed(full); n != 1 {
		t.Fatalf("failures = %d", n)
	}
	now = now.Add(time.Minute)
	if n := c.Failed(full); n != 2 {
		t.Fatalf("failures = %d", n)
	}
	want := "disk full: cannot write the journal /x/j.db since 2026-01-02T03:04:05Z (2 failed attempts): write /x/j.db: no space left on device"
	if got := c.Reason(); got != want {
		t.Fatalf("reason\n got %q\nwant %q", got, want)
	}
	c.OK()
	if c.Reason() != "" {
		t.Fatalf("reason after a success: %q", c.Reason())
	}
	if n := c.Failed(full); n != 1 || !strings.Contains(c.Reason(), "since 2026-01-02T03:05:05Z (1 failed attempts)") {
		t.Fatalf("a new episode: %d, %q", n, c.Reason())
	}
	var zero Condition
	zero.Failed(full)
	if !strings.HasPrefix(zero.Reason(), "disk full: ") {
		t.Fatalf("zero condition: %q", zero.Reason())
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for n := 1; n <= 40; n++ {
		d := Backoff(n)
		want := min(RetryFirst<<min(n-1, 30), RetryMax)
		if d > want || d < want-want/5 {
			t.Fatalf("Backoff(%d) = %s, want within 20%% under %s", n, d, want)
		}
	}
}
