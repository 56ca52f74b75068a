package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// fakeClock is a Clock that moves only when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

var _ Clock = (*fakeClock)(nil)

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), ch: ch})
	return ch
}

// Advance moves the clock and fires every timer that is due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now
	}
	c.timers = kept
}

// dropTimers forgets the timers nobody waits on any more (those of a stopped Run).
func (c *fakeClock) dropTimers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timers = nil
}

// Waiters is the number of timers not yet fired.
func (c *fakeClock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// sink is a fake hub: it de-duplicates by event id, as the hub's store does, remembers the order
// of first arrival, and fails while told to.
type sink struct {
	mu       sync.Mutex
	failing  bool
	order    []string       // ids in order of first arrival
	seen     map[string]int // deliveries per id, duplicates included
	payload  map[string][]byte
	attempts map[string]int // Entry.Attempts at the first delivery
	raw      int            // successful deliveries, duplicates included
	calls    []int          // entries per successful call of publish
	failures int            // failed calls
}

func newSink() *sink {
	return &sink{seen: map[string]int{}, payload: map[string][]byte{}, attempts: map[string]int{}}
}

func (s *sink) publish(_ context.Context, entries []Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing {
		s.failures++
		return errors.New("hub unreachable")
	}
	s.calls = append(s.calls, len(entries))
	for _, e := range entries {
		s.raw++
		if s.seen[e.ID] == 0 {
			s.order = append(s.order, e.ID)
			s.payload[e.ID] = e.Payload
			s.attempts[e.ID] = e.Attempts
		}
		s.seen[e.ID]++
	}
	return nil
}

func (s *sink) setFailing(v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = v
}

func (s *sink) snapshot() (order []string, raw, failures int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...), s.raw, s.failures
}

// check fails the test unless the sink received exactly want, in order, each id once after
// de-duplication, with rawDeliveries deliveries in all.
func (s *sink) check(t *testing.T, want []string, rawDeliveries int) {
	t.Helper()
	order, raw, _ := s.snapshot()
	if len(order) != len(want) {
		t.Fatalf("sink holds %d distinct events, want %d", len(order), len(want))
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("event %d is %s, want %s (out of order)", i, order[i], want[i])
		}
	}
	if raw != rawDeliveries {
		t.Errorf("%d deliveries in all, want %d", raw, rawDeliveries)
	}
}

const testAgent = "0195b4a2-7d3c-7000-8000-00000000a9e1"

func newEvent(severity string, n int) wire.Event {
	return wire.NewEvent(wire.AgentSource(testAgent), wire.EventExecutionFailed, severity,
		wire.EventData{AgentID: testAgent, Migration: "m1", Message: fmt.Sprintf("event %d", n)})
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func journalPath(t *testing.T) string { return filepath.Join(t.TempDir(), "outbox.db") }

// open opens an outbox closed at the end of the test.
func open(t *testing.T, path string, lim Limits, clock Clock) *Outbox {
	t.Helper()
	o, err := Open(path, lim, testLogger(t), clock)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := o.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return o
}

// run starts o.Run and returns a function that stops it and waits for it to return.
func run(t *testing.T, o *Outbox, pub Publisher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx, pub) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return within 10s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls fn until it returns nil, or fails the test after total.
func waitFor(t *testing.T, total time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("condition not met within %s: %v", total, err)
}

// waitLen waits until the journal holds n events.
func waitLen(t *testing.T, o *Outbox, n int, total time.Duration) {
	t.Helper()
	waitFor(t, total, func() error {
		got, err := o.Len()
		if err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("outbox holds %d events, want %d", got, n)
		}
		return nil
	})
}

// waitBackoff waits until Run is waiting out a back-off on the fake clock.
func waitBackoff(t *testing.T, c *fakeClock) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		if c.Waiters() == 0 {
			return errors.New("Run is not waiting on the clock")
		}
		return nil
	})
}

func appendN(t *testing.T, o *Outbox, severity string, from, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for i := from; i < from+n; i++ {
		e := newEvent(severity, i)
		if err := o.Append(t.Context(), e); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

// sqlOpen opens a SQLite file directly, as another program would.
func sqlOpen(path string) (*sql.DB, error) { return sql.Open("sqlite", path) }
