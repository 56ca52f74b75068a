// Package health decides what the agent does when its own storage fails, and keeps what is
// wrong with it right now.
//
// The agent's journal and outbox (SQLite files in the state directory) can fail in two ways:
//
//   - for a while: the file system is full (ENOSPC, SQLITE_FULL), a quota is exhausted (EDQUOT),
//     an I/O error that a retry may not meet again (EIO, SQLITE_IOERR), a lock held by another
//     process (SQLITE_BUSY). The agent waits these out: it stays up, degraded — it takes no new
//     work, reports the reason in every heartbeat, retries the write with back-off, and resumes by
//     itself when the write succeeds. Nothing it has journaled or queued is dropped meanwhile.
//   - until an operator acts: a read-only file system or file (EROFS, SQLITE_READONLY), a
//     permission refused (EACCES, EPERM, SQLITE_CANTOPEN, SQLITE_PERM), a damaged file
//     (SQLITE_CORRUPT, SQLITE_NOTADB, a failed integrity check), a journal of a newer schema.
//     Waiting would not help and a restart would not either: the agent exits with its own exit
//     code (see docs/operations.md), so that a supervisor can stop restarting it.
//
// Anything else is neither: the caller's usual handling applies.
//
// A [Condition] is one component's "writes are failing since …"; the agent joins the reasons of
// its components into the degraded reason of its heartbeat.
package health

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Class is what to do about a storage error.
type Class int

// Classes.
const (
	// Other: neither of the two below; the caller's usual handling applies.
	Other Class = iota
	// Wait: wait it out, degraded, and retry with back-off.
	Wait
	// Operator: only an operator can fix it; the agent exits with ExitNeedsOperator.
	Operator
)

func (c Class) String() string {
	switch c {
	case Wait:
		return "wait"
	case Operator:
		return "operator"
	}
	return "other"
}

// ErrNeedsOperator marks an error only an operator can fix. The command line maps it to its
// own exit code.
var ErrNeedsOperator = errors.New("needs an operator")

// NeedsOperator marks err as one only an operator can fix, keeping its text.
func NeedsOperator(err error) error {
	if err == nil {
		return nil
	}
	return operatorError{err}
}

type operatorError struct{ err error }

func (e operatorError) Error() string   { return e.err.Error() }
func (e operatorError) Unwrap() []error { return []error{e.err, ErrNeedsOperator} }

// Classify tells what to do about err, an error of the agent's journal or outbox or of a file
// in its state directory.
func Classify(err error) Class {
	if err == nil {
		return Other
	}
	if errors.Is(err, ErrNeedsOperator) {
		return Operator
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return Wait
		case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH,
			sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
			return Operator
		}
		return Other
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EIO:
			return Wait
		case syscall.EROFS, syscall.EACCES, syscall.EPERM:
			return Operator
		}
	}
	return Other
}

// Damaged reports whether err says a file is not a sound SQLite database (SQLITE_CORRUPT,
// SQLITE_NOTADB): an Operator error that is the file's fault, not the file system's.
func Damaged(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code() & 0xff
	return c == sqlite3.SQLITE_CORRUPT || c == sqlite3.SQLITE_NOTADB
}

// DrillDiskFullEnv names the environment variable of the full-disk drill, for machines where the
// drill cannot mount a small file system: while the file it names exists, every write of the
// agent's journal and outbox fails with ENOSPC before it reaches SQLite. Unset (always, outside
// that drill), it costs nothing.
const DrillDiskFullEnv = "GODWIT_DRILL_DISK_FULL"

var drillDiskFull = os.Getenv(DrillDiskFullEnv)

// Injected returns the failure the full-disk drill injects into a write right now, or nil.
func Injected() error {
	if drillDiskFull == "" {
		return nil
	}
	if _, err := os.Stat(drillDiskFull); err != nil {
		return nil
	}
	return &os.PathError{Op: "write", Path: drillDiskFull + " (" + DrillDiskFullEnv + ")", Err: syscall.ENOSPC}
}

// Back-off of the retries of a write that failed with a Wait error: doubling from the first
// delay to the cap, so that space coming back is noticed within the cap.
const (
	RetryFirst = 250 * time.Millisecond
	RetryMax   = 5 * time.Second
)

// Backoff is the delay before retry n (1 for the first retry), with up to 20% less at random.
func Backoff(n int) time.Duration {
	d := RetryFirst
	for i := 1; i < n && d < RetryMax; i++ {
		d *= 2
	}
	d = min(d, RetryMax)
	return d - rand.N(d/5+1)
}

// Condition is one component's failing writes: set by a failure, cleared by the next success.
// The zero value is ready (healthy, logging nothing); use NewCondition to log transitions.
type Condition struct {
	what string
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	err      error
	since    time.Time
	failures int
}

// NewCondition returns a healthy condition of the component what (e.g. "journal
// /var/lib/godwit/agent/journal.db"), which logs when it turns degraded and when it recovers.
// A nil log discards; a nil now is time.Now.
func NewCondition(what string, log *slog.Logger, now func() time.Time) *Condition {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Condition{what: what, log: log, now: now}
}

// Failed records a failed write. It returns how many writes failed in a row, this one included.
func (c *Condition) Failed(err error) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures++
	c.err = err
	if c.failures == 1 {
		c.since = c.clock()
		if c.log != nil {
			c.log.Error("cannot write "+c.what+"; the agent takes no new work and retries until the write succeeds",
				"err", err, "class", Classify(err).String())
		}
	}
	return c.failures
}

// OK records a successful write.
func (c *Condition) OK() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failures == 0 {
		return
	}
	if c.log != nil {
		c.log.Info(c.what+" can be written again; the agent takes new work again", "failed_writes", c.failures,
			"degraded_for", c.clock().Sub(c.since).Round(time.Millisecond).String())
	}
	c.failures, c.err = 0, nil
}

// Reason is "" while writes succeed, and otherwise says what fails since when.
func (c *Condition) Reason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failures == 0 {
		return ""
	}
	return fmt.Sprintf("%s: cannot write %s since %s (%d failed attempts): %v", Summary(c.err), c.what,
		c.since.UTC().Format(time.RFC3339), c.failures, c.err)
}

// sqliteIOErrShmSize is SQLITE_IOERR_SHMSIZE: the shared-memory file of a WAL journal could not
// be extended, which on opening a journal means the file system is full.
const sqliteIOErrShmSize = sqlite3.SQLITE_IOERR | 19<<8

// Summary names the kind of a storage failure in a few words, for listings.
func Summary(err error) string {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch {
		case se.Code()&0xff == sqlite3.SQLITE_FULL, se.Code() == sqliteIOErrShmSize:
			return "disk full"
		case se.Code()&0xff == sqlite3.SQLITE_IOERR:
			return "I/O error"
		case se.Code()&0xff == sqlite3.SQLITE_BUSY, se.Code()&0xff == sqlite3.SQLITE_LOCKED:
			return "locked by another process"
		case se.Code()&0xff == sqlite3.SQLITE_READONLY:
			return "read-only"
		case Damaged(err):
			return "damaged"
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOSPC:
			return "disk full"
		case syscall.EDQUOT:
			return "disk quota exceeded"
		case syscall.EIO:
			return "I/O error"
		case syscall.EROFS:
			return "read-only"
		case syscall.EACCES, syscall.EPERM:
			return "permission denied"
		}
	}
	return "storage failing"
}

func (c *Condition) clock() time.Time {
	if c.now == nil {
		return time.Now()
	}
	return c.now()
}
