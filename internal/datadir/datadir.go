// Package datadir guards the directories Godwit keeps state in: the hub's --data-dir and the
// agent's --state-dir.
//
// A directory is claimed with a marker file naming its kind, and held with an exclusive lock for
// as long as the process runs. A directory that holds something else — another program's files,
// the other kind's state, a corrupt marker — is refused with a clear error and never written to.
//
// The directory holds secrets (tokens, credentials, keys, databases), so it is kept 0700: one
// that group or others can read, write or enter is tightened to 0700 when it is opened, and the
// caller is told (Dir.Tightened) so it can say so in its log. Secrets and databases in it are
// written 0600 (WriteFile, PrivateSQLite), whatever the umask.
package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Kinds of directory.
const (
	KindHub   = "hub"
	KindAgent = "agent"
)

const (
	markerName = "godwit.json"
	lockName   = "LOCK"
	format     = 1
)

type marker struct {
	Kind      string    `json:"kind"`
	Format    int       `json:"format"`
	CreatedAt time.Time `json:"created_at"`
}

// ErrInUse is the refusal of a directory another process holds.
var ErrInUse = errors.New("directory in use")

// Dir is a claimed, locked state directory.
type Dir struct {
	Path string
	lock *os.File
	// Fresh is true when this call created the marker (first start).
	Fresh bool
	// Tightened is the mode the directory had when Open found it open to group or others and
	// set it to 0700; zero otherwise.
	Tightened os.FileMode
}

// Open claims path for kind: it creates the directory (0700) and marker when absent, checks the
// marker when present, and takes the directory lock.
func Open(path, kind string) (*Dir, error) {
	if path == "" {
		return nil, errors.New("state directory path is empty")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", abs, err)
	}
	d := &Dir{Path: abs}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", abs)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(abs, 0o700); err != nil {
			return nil, fmt.Errorf("%s is open to other users (mode %#o) and could not be tightened to 0700: %w", abs, perm, err)
		}
		d.Tightened = perm
	}
	mpath := filepath.Join(abs, markerName)
	raw, err := os.ReadFile(mpath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		entries, err := os.ReadDir(abs)
		if err != nil {
			return nil, err
		}
		if len(entries) > 0 {
			return nil, fmt.Errorf("%s is not empty and holds no %s marker: it is not a Godwit %s directory; refusing to use it (choose an empty or new directory)", abs, markerName, kind)
		}
		d.Fresh = true
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", mpath, err)
	default:
		var m marker
		if err := json.Unmarshal(raw, &m); err != nil || m.Kind == "" {
			return nil, fmt.Errorf("%s is corrupt (%v); refusing to use %s", mpath, errOrEmpty(err), abs)
		}
		if m.Kind != kind {
			return nil, fmt.Errorf("%s is a Godwit %s directory, not a %s directory", abs, m.Kind, kind)
		}
		if m.Format > format {
			return nil, fmt.Errorf("%s has format %d, newer than this godwit understands (%d)", abs, m.Format, format)
		}
	}
	lf, err := os.OpenFile(filepath.Join(abs, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lf.Close()
		return nil, fmt.Errorf("%s is in use by another godwit process (%w): %w", abs, err, ErrInUse)
	}
	d.lock = lf
	if d.Fresh {
		b, _ := json.Marshal(marker{Kind: kind, Format: format, CreatedAt: time.Now().UTC()})
		if err := d.WriteFile(markerName, b); err != nil {
			_ = d.Close()
			return nil, err
		}
	}
	return d, nil
}

func errOrEmpty(err error) any {
	if err == nil {
		return "no kind"
	}
	return err
}

// Join returns a path inside the directory.
func (d *Dir) Join(name string) string { return filepath.Join(d.Path, name) }

// WriteFile writes name atomically with mode 0600 (write to a temp file, fsync, rename).
func (d *Dir) WriteFile(name string, data []byte) error {
	return WriteFileAtomic(d.Join(name), data)
}

// WriteFileAtomic writes path atomically with mode 0600 (also for files outside a data dir, e.g. TLS material).
func WriteFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// sqliteCompanions are the files SQLite keeps beside a database.
var sqliteCompanions = []string{"", "-wal", "-shm", "-journal"}

// PrivateSQLite makes the SQLite database at path and its companion files (-wal, -shm, -journal)
// readable by this user only, before the database is opened: an absent database is created
// empty with mode 0600 (SQLite gives the files it creates later the database's mode), and
// existing files — from an older version, or made under a lax umask — are set to 0600.
func PrivateSQLite(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	switch {
	case err == nil:
		if err := f.Close(); err != nil {
			return err
		}
	case !errors.Is(err, os.ErrExist):
		return fmt.Errorf("create %s: %w", path, err)
	}
	for _, suffix := range sqliteCompanions {
		p := path + suffix
		st, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file; refusing to use it", p)
		}
		if st.Mode().Perm() != 0o600 {
			if err := os.Chmod(p, 0o600); err != nil {
				return fmt.Errorf("make %s private: %w", p, err)
			}
		}
	}
	return nil
}

// Close releases the lock. Safe to call twice.
func (d *Dir) Close() error {
	if d.lock == nil {
		return nil
	}
	err := d.lock.Close()
	d.lock = nil
	return err
}
