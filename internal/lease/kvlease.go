package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"godwit.dev/godwit/internal/fault"
)

// Reason says why a transition happened; it is the reason label of
// godwit_lease_transitions_total.
type Reason string

// Transition reasons. The first five begin or end a term; the last three are the health of this
// replica's store calls.
const (
	ReasonAcquired Reason = "acquired" // a term began
	ReasonReplaced Reason = "replaced" // another holder wrote the key: ended at once
	ReasonWatchdog Reason = "watchdog" // no renew succeeded for TTL − Margin after the last one was sent
	ReasonReleased Reason = "released" // Stop, or the leader work returned: the key was handed on
	ReasonLost     Reason = "lost"     // the key was deleted or purged, or holds something unreadable
	ReasonDegraded Reason = "degraded" // a store call failed
	// ReasonRenewedAfterDegraded: a degraded leader's renews succeeded RecoverAfter times in a row.
	ReasonRenewedAfterDegraded Reason = "renewed-after-degraded"
	// ReasonRecovered: a degraded follower's calls succeeded RecoverAfter times in a row; it may
	// acquire again.
	ReasonRecovered Reason = "recovered"
)

var allReasons = []Reason{ReasonAcquired, ReasonReplaced, ReasonWatchdog, ReasonReleased, ReasonLost,
	ReasonDegraded, ReasonRenewedAfterDegraded, ReasonRecovered}

// Why a term ended: context.Cause of its context. All but ErrReleased wrap fault.ErrFenced.
var (
	ErrReplaced = fmt.Errorf("lease taken over by another holder: %w", fault.ErrFenced)
	ErrWatchdog = fmt.Errorf("lease not renewed within ttl − margin: %w", fault.ErrFenced)
	ErrLost     = fmt.Errorf("lease record deleted or unreadable: %w", fault.ErrFenced)
	ErrReleased = errors.New("lease released")
)

func causeOf(r Reason) error {
	switch r {
	case ReasonReplaced:
		return ErrReplaced
	case ReasonWatchdog:
		return ErrWatchdog
	case ReasonLost:
		return ErrLost
	default:
		return ErrReleased
	}
}

// Config configures a Lease.
type Config struct {
	Name   string // the lease's name: the lease label of its metrics, in logs
	Key    string // the key in the bucket; "" means Name
	Holder string // this replica's name, written in the record for others to read
	KV     KV     // the bucket (a jetstream.KeyValue)
	Timing Timing
	Clock  Clock        // nil: RealClock
	Logger *slog.Logger // nil: discard
	// Registry receives the godwit_lease_* metrics; nil keeps them unexported.
	Registry prometheus.Registerer
	// Lead runs the leader work of one term, in its own goroutine, and must return soon after
	// the term's context ends. The next term begins only after it returned. If it returns while
	// the term is still live, the lease is handed on and this replica sits out one TTL. Nil:
	// hold the lease without work (observe it with Status and OnTransition).
	Lead func(Term)
	// OnTransition, if set, is called with every transition, in order per goroutine, outside
	// the lease's lock.
	OnTransition func(Transition)
}

// Transition is one change of a lease, as logged.
type Transition struct {
	Lease  string
	Reason Reason
	Epoch  uint64    // the term's epoch; 0 for a follower's health transitions
	At     time.Time // Clock reading: for a term's start taken before Lead runs, for its end after the context was cancelled
	By     string    // for ReasonReplaced, the holder now in the record when known
	Err    error     // the store error behind ReasonDegraded or ReasonLost, if any
	// Deadline is, for a term's end, the watchdog deadline the term had: At after Deadline
	// means the term outlived it (the process or its watchdog ran late).
	Deadline time.Time
}

// Term is one period of leadership.
type Term struct {
	Epoch   uint64    // the fencing token: carry it into every write the leader makes
	Started time.Time // Clock reading when the term began
	t       *term
}

// Context ends when the term does; context.Cause tells why (ErrReplaced, ErrWatchdog, ErrLost,
// ErrReleased).
func (t Term) Context() context.Context { return t.t.ctx }

// Check returns nil while the term is live, else why it ended. It reads the clock itself, so
// it is right even when the watchdog's goroutine has not run yet (a process resumed after a
// pause): call it just before a write.
func (t Term) Check() error {
	t.t.l.expire(t.t)
	return context.Cause(t.t.ctx)
}

// Deadline returns when the watchdog ends the term unless a renew succeeds first.
func (t Term) Deadline() time.Time {
	t.t.l.mu.Lock()
	defer t.t.l.mu.Unlock()
	return t.t.deadline
}

// term is a Term's state.
type term struct {
	l        *Lease
	epoch    uint64
	started  time.Time
	ctx      context.Context
	cancel   context.CancelCauseFunc
	leadDone chan struct{} // closed when Lead returned

	// guarded by l.mu
	deadline time.Time // TTL − Margin after the last successful renew was sent
	ended    bool
	reason   Reason
	stopDog  func() bool

	// the loop's own
	rev       uint64    // the revision of our last write known to be applied
	revSent   time.Time // the earliest send that may have written rev
	firstSend time.Time // the first renew sent over rev; zero before it
	uncertain bool      // a renew since rev had an unknown outcome: it may have landed
	nextRenew time.Time // when the next renew attempt starts
}

// Status is a snapshot of a lease, for status pages.
type Status struct {
	Lease    string
	Holder   string // this replica
	Leader   bool
	Epoch    uint64    // the current term's when leading, else the epoch in the record last read
	Since    time.Time // Clock reading when the current term began; zero when not leading
	Degraded bool
	Record   RecordStatus
}

// RecordStatus is what this replica last read from the key.
type RecordStatus struct {
	Read      bool // a read has succeeded
	Absent    bool // the key is absent, deleted or purged
	Readable  bool // it holds a lease record
	Holder    string
	Epoch     uint64
	Released  bool
	Revision  uint64
	Created   time.Time     // the store's time of the write, on the server's clock: for display
	Unchanged time.Duration // how long this replica has counted this revision unchanged (from when it saw it, or from when a renew seen late was sent)
}

// Lease is one replica's side of a leadership over a key-value key. See the package comment.
type Lease struct {
	cfg      Config
	t        Timing
	key      string
	clock    Clock
	log      *slog.Logger
	m        *metrics
	cell     Cell
	instance string

	startStop sync.Mutex
	cancel    context.CancelFunc
	done      chan struct{}
	base      context.Context // Start's context without its cancellation: parent of terms

	mu        sync.Mutex
	stopCtx   context.Context // set by Stop before it ends the loop
	stopErr   error
	stray     <-chan struct{} // a Lead that Stop gave up waiting for: no term before it returns
	term      *term
	health    Health
	seen      Staleness
	last      observation
	notBefore time.Time // no acquiring before this (after handing the lease on)

	watchMu sync.Mutex
	watched *Entry        // newest entry delivered by the watch, not yet taken by the loop
	wake    chan struct{} // capacity 1: something for the loop to look at

	idle func(until time.Time) // tests: the loop waits until until (zero: it woke)
}

// observation is the record last read.
type observation struct {
	ok     bool  // a read has succeeded
	entry  Entry // the read (Revision 0 when Get found nothing)
	absent bool
	rec    Record
	recErr error // the value is not a lease record
}

// New checks cfg and returns a Lease; Start runs it.
func New(cfg Config) (*Lease, error) {
	var errs []error
	if cfg.Name == "" {
		errs = append(errs, fault.Invalid("Name", "must not be empty"))
	}
	if cfg.Holder == "" {
		errs = append(errs, fault.Invalid("Holder", "must not be empty"))
	}
	if cfg.KV == nil {
		errs = append(errs, fault.Invalid("KV", "must be set"))
	}
	field, key := "Name", cfg.Name
	if cfg.Key != "" {
		field, key = "Key", cfg.Key
	}
	if key != "" && !validKey(key) {
		errs = append(errs, fault.Invalid(field,
			"%q is not a key-value key: letters, digits and - _ = / . only, not starting or ending with a dot", key))
	}
	errs = append(errs, cfg.Timing.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	l := &Lease{cfg: cfg, t: cfg.Timing, key: cfg.Key, clock: cfg.Clock, log: cfg.Logger,
		wake: make(chan struct{}, 1)}
	if l.key == "" {
		l.key = cfg.Name
	}
	if l.clock == nil {
		l.clock = RealClock{}
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.log = l.log.With("lease", cfg.Name, "holder", cfg.Holder)
	l.m = newMetrics(cfg.Registry, cfg.Name)
	l.cell = Cell{KV: cfg.KV, Key: l.key, Timeout: l.t.CallTimeout, Clock: l.clock}
	l.health = Health{FailuresToDegrade: 1, SuccessesToRecover: l.t.RecoverAfter}
	var b [8]byte
	_, _ = rand.Read(b[:])
	l.instance = hex.EncodeToString(b[:])
	return l, nil
}

// validKey is nats.go's rule for key-value keys.
func validKey(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-/_=.", c)) {
			return false
		}
	}
	return true
}

// Start runs the lease until Stop: it contends, leads when it wins, and contends again when a
// term ends. Safe to call twice.
func (l *Lease) Start(ctx context.Context) error {
	l.startStop.Lock()
	defer l.startStop.Unlock()
	if l.cancel != nil {
		return nil
	}
	l.base = context.WithoutCancel(ctx)
	rctx, cancel := context.WithCancel(l.base)
	l.cancel, l.done = cancel, make(chan struct{})
	l.mu.Lock()
	l.stopCtx, l.stopErr = nil, nil
	l.seen.Reset() // a new run counts from its own reads
	l.last = observation{}
	l.mu.Unlock()
	go l.run(rctx)
	return nil
}

// Stop ends a term in progress, waits for Lead to return and hands the lease on, all within
// ctx; if Lead does not return in time the key is left to expire. Safe to call twice.
func (l *Lease) Stop(ctx context.Context) error {
	l.startStop.Lock()
	defer l.startStop.Unlock()
	if l.cancel == nil {
		return nil
	}
	l.mu.Lock()
	l.stopCtx = ctx
	l.mu.Unlock()
	l.cancel()
	select {
	case <-l.done:
	case <-ctx.Done():
		// The loop is still in a store call (bounded by CallTimeout); a later Stop waits again.
		return fmt.Errorf("lease %s: stop: %w", l.cfg.Name, ctx.Err())
	}
	l.cancel = nil
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopErr
}

// Status returns a snapshot.
func (l *Lease) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Status{Lease: l.cfg.Name, Holder: l.cfg.Holder, Degraded: l.health.Degraded()}
	o := l.last
	s.Record = RecordStatus{Read: o.ok, Absent: o.absent, Readable: o.ok && !o.absent && o.recErr == nil,
		Revision: o.entry.Revision, Created: o.entry.Created}
	if s.Record.Readable {
		s.Record.Holder, s.Record.Epoch, s.Record.Released = o.rec.Holder, o.rec.EpochAt(o.entry.Revision), o.rec.Released
	}
	if o.ok {
		s.Record.Unchanged = l.seen.Unchanged(l.clock.Now())
	}
	s.Epoch = s.Record.Epoch
	if t := l.term; t != nil && !t.ended {
		s.Leader, s.Epoch, s.Since = true, t.epoch, t.started
	}
	return s
}

// Current returns the live term, if any.
func (l *Lease) Current() (Term, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t := l.term; t != nil && !t.ended {
		return Term{Epoch: t.epoch, Started: t.started, t: t}, true
	}
	return Term{}, false
}
