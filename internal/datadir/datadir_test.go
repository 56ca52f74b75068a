package datadir

import (
	"os"
	"path/filepath"
	"testing"
)

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// A state directory others can read or enter is tightened to 0700 on open, and Open says so.
func TestOpenTightensMode(t *testing.T) {
	t.Parallel()
	for _, m := range []os.FileMode{0o755, 0o750, 0o701, 0o777} {
		t.Run(m.String(), func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), "hub")
			d, err := Open(p, KindHub)
			if err != nil {
				t.Fatal(err)
			}
			if d.Tightened != 0 || mode(t, p) != 0o700 {
				t.Fatalf("new dir: mode %#o, Tightened %#o; want 0700, 0", mode(t, p), d.Tightened)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, m); err != nil {
				t.Fatal(err)
			}
			d, err = Open(p, KindHub)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Tightened != m || mode(t, p) != 0o700 {
				t.Fatalf("reopened %#o dir: mode %#o, Tightened %#o; want 0700, %#o", m, mode(t, p), d.Tightened, m)
			}
		})
	}
	t.Run("already private", func(t *testing.T) {
		t.Parallel()
		p := filepath.Join(t.TempDir(), "agent")
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		d, err := Open(p, KindAgent)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if d.Tightened != 0 {
			t.Fatalf("Tightened = %#o for a 0700 dir", d.Tightened)
		}
	})
}

func TestPrivateSQLite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "x.db")
	if err := PrivateSQLite(db); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(db); err != nil || st.Size() != 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("new database file: %v, %v", st, err)
	}
	for _, f := range []string{db, db + "-wal", db + "-shm", db + "-journal"} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := PrivateSQLite(db); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{db, db + "-wal", db + "-shm", db + "-journal"} {
		if m := mode(t, f); m != 0o600 {
			t.Errorf("%s: mode %#o, want 0600", filepath.Base(f), m)
		}
		if b, _ := os.ReadFile(f); string(b) != "x" {
			t.Errorf("%s: content changed to %q", filepath.Base(f), b)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "d.db-wal"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := PrivateSQLite(filepath.Join(dir, "d.db")); err == nil {
		t.Fatal("a directory in place of the WAL was accepted")
	}
}
