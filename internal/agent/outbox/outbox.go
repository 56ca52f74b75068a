package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"

	"godwit.dev/godwit/internal/agent/health"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// Defaults for Limits.
const (
	DefaultSoftMaxEvents       = 100_000
	DefaultHardMaxBytes  int64 = 256 << 20
)

// PublishTimeout bounds one call of the Publisher, so that a request lost in a dying connection
// cannot stall the queue.
const PublishTimeout = 10 * time.Second

// Sending: back-off doubling from the first delay to the cap, and how many events are read, sent
// in one message and then deleted in one go (the most that are resent after a crash).
const (
	backoffFirst = 500 * time.Millisecond
	backoffMax   = 30 * time.Second
	batchSize    = wire.MaxBatchEvents
	// failureLogEvery spaces the warnings of one long outage.
	failureLogEvery = 10 * time.Minute
	// vacuumFreePages is how many free pages an empty journal may keep before it is shrunk.
	vacuumFreePages = 1024
)

// ErrOutboxFull is returned by Append for an info event that would take the journal over
// Limits.HardMaxBytes.
var ErrOutboxFull = errors.New("outbox full")

// ErrClosed is returned by an Outbox that has been closed.
var ErrClosed = errors.New("outbox closed")

// Limits bound the journal; see the package comment for the policy. Zero fields take the defaults.
type Limits struct {
	// SoftMaxEvents is the number of queued events at which Full reports true.
	SoftMaxEvents int
	// HardMaxBytes bounds the encoded events queued; past it info events are refused.
	HardMaxBytes int64
}

func (l Limits) withDefaults() (Limits, error) {
	if l.SoftMaxEvents < 0 {
		return l, fault.Invalid("SoftMaxEvents", "must not be negative")
	}
	if l.HardMaxBytes < 0 {
		return l, fault.Invalid("HardMaxBytes", "must not be negative")
	}
	if l.SoftMaxEvents == 0 {
		l.SoftMaxEvents = DefaultSoftMaxEvents
	}
	if l.HardMaxBytes == 0 {
		l.HardMaxBytes = DefaultHardMaxBytes
	}
	if l.HardMaxBytes < 2*wire.MaxEventBytes {
		return l, fault.Invalid("HardMaxBytes", "must be at least %d (two events of the largest size)", 2*wire.MaxEventBytes)
	}
	return l, nil
}

// softMaxBytes is where Full turns true on size: the last eighth of HardMaxBytes is headroom
// for the info events of work already running.
func (l Limits) softMaxBytes() int64 { return l.HardMaxBytes - l.HardMaxBytes/8 }

// Entry is one queued event as the Publisher sees it.
type Entry struct {
	ID        string    // the event's id, to be sent as the de-duplication id
	Payload   []byte    // the encoded wire.Event, at most wire.MaxEventBytes
	CreatedAt time.Time // when it was appended, on the outbox's clock
	Attempts  int       // failed sends so far, across restarts
}

// Publisher sends entries, in order, and returns nil only once the broker has acknowledged every
// one of them (a duplicate acknowledgement included); after an error the outbox sends them all
// again later. It is called from one goroutine, oldest entries first, with 1 to
// wire.MaxBatchEvents entries that fit in one event batch (wire.MaxBatchBytes, no entry holding
// a newline), so that it can send them as one message (bus.SendEvents does).
type Publisher func(ctx context.Context, entries []Entry) error

// Clock is the time source of the outbox; tests inject a fake one to jump hours ahead.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Outbox is the agent's journal of events not yet acknowledged by the hub. Its methods are safe
// for concurrent use; Run must run at most once at a time.
type Outbox struct {
	path  string
	db    *sql.DB
	lim   Limits
	log   *slog.Logger
	clock Clock

	wake    chan struct{} // an Append happened; capacity 1
	closing chan struct{} // closed by Close
	cond    *health.Condition

	// mu serialises writes to the journal and guards the fields below. events and bytes mirror
	// the journal's contents (derived from it at Open, updated after each commit).
	mu      sync.Mutex
	closed  bool
	running chan struct{} // non-nil while Run runs; closed when it returns
	events  int
	bytes   int64
	full    bool // the last state logged
}

// Open opens the journal at path, creating it when absent. A file that is not an outbox journal,
// or is damaged, is refused with an error naming it and left untouched. A nil log discards; a nil
// clock is the real one.
func Open(path string, lim Limits, log *slog.Logger, clock Clock) (*Outbox, error) {
	lim, err := lim.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if clock == nil {
		clock = realClock{}
	}
	if err := checkFile(path); err != nil {
		return nil, err
	}
	q := url.Values{}
	// None of these touches the file, so a damaged one is still untouched when quick_check runs.
	// synchronous is per connection, so it belongs here, where every new connection gets it.
	for _, p := range []string{"busy_timeout(10000)", "synchronous(FULL)", "journal_size_limit(4194304)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	// Escaped, so that '?', '#' or '%' in the path cannot point SQLite at another file.
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	// One connection: the outbox is the journal's only user, and its writes are serialised
	// anyway; a single connection also keeps SQLITE_BUSY out of the picture.
	db.SetMaxOpenConns(1)
	o := &Outbox{path: path, db: db, lim: lim, log: log, clock: clock,
		wake: make(chan struct{}, 1), closing: make(chan struct{}),
		cond: health.NewCondition("the event outbox "+path, log, clock.Now)}
	if err := o.init(context.Background()); err != nil {
		_ = db.Close()
		return nil, err
	}
	o.full = o.fullLocked()
	if o.full {
		o.log.Warn("outbox is full: no new work starts until the hub has received the backlog",
			"path", path, "events", o.events, "bytes", o.bytes,
			"soft_max_events", lim.SoftMaxEvents, "hard_max_bytes", lim.HardMaxBytes)
	}
	return o, nil
}

// appID marks a SQLite file as a Godwit outbox journal ("GWOB").
const (
	appID         = 0x47574f42
	schemaVersion = 1
)

const schema = `
CREATE TABLE outbox (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT, -- insertion order, never reused
	id         TEXT    NOT NULL UNIQUE,           -- the producer's event id (UUIDv7)
	severity   TEXT    NOT NULL,
	payload    BLOB    NOT NULL,                  -- the encoded wire.Event
	created_at INTEGER NOT NULL,                  -- Unix nanoseconds on the outbox's clock
	attempts   INTEGER NOT NULL DEFAULT 0         -- failed sends so far
);`

func (o *Outbox) init(ctx context.Context) error {
	var check string
	err := o.db.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&check)
	switch {
	case err == nil && check == "ok":
	case err != nil && (health.Classify(err) == health.Wait || health.Classify(err) == health.Operator && !health.Damaged(err)):
		// A full disk, a read-only file system, a permission: not the file's fault.
		return fmt.Errorf("open outbox %s: %w", o.path, err)
	default:
		if err == nil {
			detail := strings.Join(strings.Fields(check), " ")
			if len(detail) > 200 {
				detail = detail[:200] + "…"
			}
			err = errors.New(detail)
		}
		return health.NeedsOperator(fmt.Errorf("outbox journal %s is damaged (%v); it may hold events the hub has not received: "+
			"move it aside (keep it for inspection) and restart the agent; it was left untouched", o.path, err))
	}
	var id, ver, tables int
	if err := o.db.QueryRowContext(ctx, "PRAGMA application_id").Scan(&id); err != nil {
		return fmt.Errorf("open outbox %s: %w", o.path, err)
	}
	if err := o.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&ver); err != nil {
		return fmt.Errorf("open outbox %s: %w", o.path, err)
	}
	if err := o.db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&tables); err != nil {
		return fmt.Errorf("open outbox %s: %w", o.path, err)
	}
	switch {
	case id == 0 && ver == 0 && tables == 0:
		// A new (or empty) file. auto_vacuum can only be chosen before the first table.
		if _, err := o.db.ExecContext(ctx, "PRAGMA auto_vacuum = INCREMENTAL"); err != nil {
			return fmt.Errorf("create outbox %s: %w", o.path, err)
		}
		if err := o.walMode(ctx); err != nil {
			return err
		}
		tx, err := o.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("create outbox %s: %w", o.path, err)
		}
		defer func() { _ = tx.Rollback() }()
		for _, stmt := range []string{schema,
			fmt.Sprintf("PRAGMA application_id = %d", appID),
			fmt.Sprintf("PRAGMA user_version = %d", schemaVersion)} {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("create outbox %s: %w", o.path, err)
			}
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("create outbox %s: %w", o.path, err)
		}
	case id != appID:
		return health.NeedsOperator(fmt.Errorf("%s is a SQLite database but not a Godwit outbox journal; refusing to touch it", o.path))
	case ver > schemaVersion:
		return health.NeedsOperator(fmt.Errorf("outbox journal %s has schema version %d, newer than this agent's %d; "+
			"run the newer agent (it holds undelivered events); the file was left untouched", o.path, ver, schemaVersion))
	default:
		if err := o.walMode(ctx); err != nil {
			return err
		}
	}
	err = o.db.QueryRowContext(ctx, "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").Scan(&o.events, &o.bytes)
	if err != nil {
		return fmt.Errorf("open outbox %s: %w", o.path, err)
	}
	return nil
}

func (o *Outbox) walMode(ctx context.Context) error {
	var mode string
	if err := o.db.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return fmt.Errorf("open outbox %s: journal mode: %w", o.path, err)
	}
	if mode != "wal" {
		return fmt.Errorf("open outbox %s: journal mode is %q, want wal", o.path, mode)
	}
	return nil
}

// sqliteMagic is the first 16 bytes of every SQLite 3 database file.
const sqliteMagic = "SQLite format 3\x00"

// checkFile refuses a file that exists, is not empty and is not a SQLite database, before SQLite
// gets a chance to write to it.
func checkFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("outbox journal %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("outbox journal %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return health.NeedsOperator(fmt.Errorf("outbox journal %s is not a regular file; refusing to touch it", path))
	}
	if st.Size() == 0 {
		return nil
	}
	head := make([]byte, len(sqliteMagic))
	if n, _ := f.Read(head); n < len(head) || string(head) != sqliteMagic {
		return health.NeedsOperator(fmt.Errorf("outbox journal %s exists and is not a SQLite database; it may hold events the hub "+
			"has not received: move it aside and restart the agent; refusing to touch it", path))
	}
	return nil
}

// Append writes e to the journal and returns once the write is durable (fsynced). An event over
// wire.MaxEventBytes is truncated to fit (see the package comment), never dropped. Past
// Limits.HardMaxBytes an info event is refused with an error wrapping ErrOutboxFull; warning and
// error events are always written.
//
// Appending an id already queued does nothing, so an Append that failed ambiguously (ctx ended
// during the commit) can simply be repeated with the same event. A failure of the journal itself
// (a full disk: see package health) makes the outbox degraded until a write succeeds again; the
// caller keeps the event and offers it again.
func (o *Outbox) Append(ctx context.Context, e wire.Event) error {
	if _, err := uuid.Parse(e.ID); err != nil || len(e.ID) != 36 {
		return fault.Invalid("id", "event id %q is not a UUID", e.ID)
	}
	if wire.SeverityRank(e.Severity) < 0 {
		return fault.Invalid("severity", "event %s has unknown severity %q", e.ID, e.Severity)
	}
	payload, cut, err := encode(e)
	if err != nil {
		return fmt.Errorf("outbox append: %w", err)
	}
	if len(cut) > 0 {
		o.log.Warn("event over the size limit truncated", "event_id", e.ID, "type", e.Type,
			"limit", wire.MaxEventBytes, "truncated", cut)
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	size := int64(len(payload))
	if e.Severity == wire.SeverityInfo && o.bytes+size > o.lim.HardMaxBytes {
		return fmt.Errorf("%w: info event %s (%s) not recorded: the journal %s holds %d undelivered events "+
			"(%d bytes, limit %d); the hub has not acknowledged events for a long time. Warning and error "+
			"events are still recorded", ErrOutboxFull, e.ID, e.Type, o.path, o.events, o.bytes, o.lim.HardMaxBytes)
	}
	var res sql.Result
	err = health.Injected()
	if err == nil {
		res, err = o.db.ExecContext(ctx,
			"INSERT INTO outbox (id, severity, payload, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
			e.ID, e.Severity, payload, o.clock.Now().UnixNano())
	}
	o.noteWrite(err)
	if err != nil {
		// The write may have committed all the same (an interrupted COMMIT): count again.
		o.recountLocked()
		return fmt.Errorf("outbox append %s: %w", e.ID, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 1 {
		o.events++
		o.bytes += size
		o.noteFullLocked()
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return nil
}

// Degraded is "" while the journal takes every write, and otherwise says which write fails since
// when.
func (o *Outbox) Degraded() string { return o.cond.Reason() }

// noteWrite keeps the journal's condition after a write.
func (o *Outbox) noteWrite(err error) {
	switch {
	case err == nil:
		o.cond.OK()
	case health.Classify(err) == health.Wait:
		o.cond.Failed(err)
	}
}

// Full reports whether the agent must stop starting new work: the journal holds SoftMaxEvents
// events, or 7/8 of HardMaxBytes.
func (o *Outbox) Full() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fullLocked()
}

func (o *Outbox) fullLocked() bool {
	return o.events >= o.lim.SoftMaxEvents || o.bytes >= o.lim.softMaxBytes()
}

// noteFullLocked logs each change of Full, once.
func (o *Outbox) noteFullLocked() {
	full := o.fullLocked()
	if full == o.full {
		return
	}
	o.full = full
	if full {
		o.log.Warn("outbox is full: no new work starts until the hub has received the backlog",
			"path", o.path, "events", o.events, "bytes", o.bytes,
			"soft_max_events", o.lim.SoftMaxEvents, "hard_max_bytes", o.lim.HardMaxBytes)
	} else {
		o.log.Info("outbox is below its limits again: new work may start", "events", o.events, "bytes", o.bytes)
	}
}

// Len returns the number of events not yet acknowledged, counted in the journal.
func (o *Outbox) Len() (int, error) {
	o.mu.Lock()
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	var n int
	if err := o.db.QueryRow("SELECT count(*) FROM outbox").Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox len: %w", err)
	}
	return n, nil
}

// Run sends the queued events with pub, oldest first, until ctx ends or the outbox is closed;
// it then returns nil. Each call of pub gets what is queued, up to one batch's worth (see
// Publisher), and the entries are deleted only after pub returned nil for them. A failed send is
// retried after a back-off, forever, and counts an attempt for each of its entries; an Append
// wakes an idle Run at once.
func (o *Outbox) Run(ctx context.Context, pub Publisher) error {
	o.mu.Lock()
	switch {
	case o.closed:
		o.mu.Unlock()
		return ErrClosed
	case o.running != nil:
		o.mu.Unlock()
		return errors.New("outbox: Run is already running")
	}
	done := make(chan struct{})
	o.running = done
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		o.running = nil
		o.mu.Unlock()
		close(done)
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-o.closing:
			cancel()
		case <-ctx.Done():
		}
	}()

	s := sender{o: o, pub: pub}
	for ctx.Err() == nil {
		batch, err := o.head(ctx, batchSize)
		if err != nil {
			if ctx.Err() == nil {
				s.journalFailed(ctx, err)
			}
			continue
		}
		if len(batch) == 0 {
			select {
			case <-o.wake:
			case <-ctx.Done():
			}
			continue
		}
		batch = batch[:wire.BatchPrefix(payloads(batch), wire.MaxBatchBytes)]
		if err := s.send(ctx, batch); err != nil {
			if ctx.Err() == nil {
				s.failed(ctx, batch, err)
			}
			continue
		}
		// Acknowledged events are deleted even when ctx has just ended: otherwise they would be
		// sent again after the restart (harmless, but avoidable). A delete the journal refuses
		// (a full disk) is retried by itself, without sending the events again, until it
		// succeeds or ctx ends; they are sent again only after a restart.
		for {
			derr := o.remove(context.WithoutCancel(ctx), batch)
			if derr == nil {
				s.journalOK()
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			s.journalFailed(ctx, fmt.Errorf("delete %d acknowledged events: %w", len(batch), derr))
		}
		s.succeeded()
	}
	return nil
}

// sender is the state of one Run: the back-off and the current outage, for the logs.
type sender struct {
	o        *Outbox
	pub      Publisher
	backoff  time.Duration
	failures int       // consecutive failures
	since    time.Time // first failure of the current outage
	lastWarn time.Time
	jfail    int // consecutive failures of the journal itself
}

// journalFailed waits out a failure of the journal (not of the hub): with health's back-off,
// which is short, so that the outbox notices within seconds that space came back.
func (s *sender) journalFailed(ctx context.Context, err error) {
	s.jfail++
	if s.jfail == 1 {
		s.o.log.Error("outbox: the journal fails; retrying", "err", err)
	}
	s.o.noteWrite(err)
	select {
	case <-s.o.clock.After(health.Backoff(s.jfail)):
	case <-ctx.Done():
	}
}

func (s *sender) journalOK() {
	s.o.noteWrite(nil)
	if s.jfail > 0 {
		s.o.log.Info("outbox: the journal works again", "failed_attempts", s.jfail)
	}
	s.jfail = 0
}

// send publishes the batch with one call of the Publisher.
func (s *sender) send(ctx context.Context, batch []row) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries := make([]Entry, len(batch))
	for n, r := range batch {
		entries[n] = r.Entry
	}
	pctx, cancel := context.WithTimeout(ctx, PublishTimeout)
	defer cancel()
	return s.pub(pctx, entries)
}

func payloads(batch []row) [][]byte {
	out := make([][]byte, len(batch))
	for n, r := range batch {
		out[n] = r.Payload
	}
	return out
}

func (s *sender) succeeded() {
	if s.failures > 0 {
		s.o.log.Info("outbox: sending again after failures", "failed_attempts", s.failures,
			"outage", s.o.clock.Now().Sub(s.since).Round(time.Second))
	}
	s.failures, s.backoff = 0, 0
}

// failed records a failed attempt on each entry of the batch, logs, and waits out the back-off.
func (s *sender) failed(ctx context.Context, batch []row, err error) {
	now := s.o.clock.Now()
	if s.failures == 0 {
		s.since = now
	}
	s.failures++
	if uerr := s.o.attempted(ctx, batch); uerr != nil && ctx.Err() == nil {
		s.o.log.Error("outbox: record a failed attempt", "err", uerr)
	}
	s.backoff = min(max(2*s.backoff, backoffFirst), backoffMax)
	if s.failures == 1 || now.Sub(s.lastWarn) >= failureLogEvery {
		s.lastWarn = now
		s.o.log.Warn("outbox: cannot send events to the hub; retrying", "err", err, "consecutive_failures", s.failures,
			"retry_in", s.backoff, "since", s.since.UTC().Format(time.RFC3339),
			"events", len(batch), "event_id", batch[0].ID, "attempts", batch[0].Attempts+1)
	}
	// Up to 20% less, so that a fleet cut off together does not retry in step.
	d := s.backoff - rand.N(s.backoff/5+1)
	select {
	case <-s.o.clock.After(d):
	case <-ctx.Done():
	}
}

// row is an Entry with its place in the journal.
type row struct {
	Entry
	seq int64
}

// head returns up to n of the oldest entries.
func (o *Outbox) head(ctx context.Context, n int) ([]row, error) {
	rows, err := o.db.QueryContext(ctx,
		"SELECT seq, id, payload, created_at, attempts FROM outbox ORDER BY seq LIMIT ?", n)
	if err != nil {
		return nil, fmt.Errorf("outbox read: %w", err)
	}
	defer rows.Close()
	var out []row
	for rows.Next() {
		var r row
		var created int64
		if err := rows.Scan(&r.seq, &r.ID, &r.Payload, &created, &r.Attempts); err != nil {
			return nil, fmt.Errorf("outbox read: %w", err)
		}
		r.CreatedAt = time.Unix(0, created)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox read: %w", err)
	}
	return out, nil
}

// recountLocked sets the counters from the journal after a write that failed, and may or may not
// have committed.
func (o *Outbox) recountLocked() {
	err := o.db.QueryRow("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").Scan(&o.events, &o.bytes)
	if err != nil {
		o.log.Warn("outbox: count the journal", "err", err)
		return
	}
	o.noteFullLocked()
}

// remove deletes acknowledged entries in one transaction.
func (o *Outbox) remove(ctx context.Context, acked []row) (err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer func() {
		if err != nil {
			o.recountLocked()
		}
	}()
	if err := health.Injected(); err != nil {
		return err
	}
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var n int
	var size int64
	for _, r := range acked {
		res, err := tx.ExecContext(ctx, "DELETE FROM outbox WHERE seq = ?", r.seq)
		if err != nil {
			return err
		}
		if k, err := res.RowsAffected(); err == nil && k == 1 {
			n++
			size += int64(len(r.Payload))
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	o.events -= n
	o.bytes -= size
	o.noteFullLocked()
	if o.events == 0 {
		o.shrinkLocked(ctx)
	}
	return nil
}

// shrinkLocked gives the pages of a drained backlog back to the file system, so a journal that
// grew during an outage does not keep its size for ever.
func (o *Outbox) shrinkLocked(ctx context.Context) {
	var free int
	if err := o.db.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free); err != nil || free < vacuumFreePages {
		return
	}
	if _, err := o.db.ExecContext(ctx, "PRAGMA incremental_vacuum"); err != nil {
		o.log.Warn("outbox: shrink the journal", "err", err)
	}
}

// attempted counts a failed attempt for each entry of a batch, in one transaction.
func (o *Outbox) attempted(ctx context.Context, batch []row) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	err := health.Injected()
	if err == nil {
		// The batch is consecutive entries of the journal, in order (never empty: Run sends at
		// least the oldest).
		_, err = o.db.ExecContext(ctx, "UPDATE outbox SET attempts = attempts + 1 WHERE seq BETWEEN ? AND ?",
			batch[0].seq, batch[len(batch)-1].seq)
	}
	o.noteWrite(err)
	return err
}

// Close stops Run, waits for it to return and closes the journal. It is safe to call twice.
func (o *Outbox) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	close(o.closing)
	running := o.running
	o.mu.Unlock()
	if running != nil {
		<-running
	}
	if err := o.db.Close(); err != nil {
		return fmt.Errorf("close outbox %s: %w", o.path, err)
	}
	return nil
}
