package ratelimit

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newLimiter(t *testing.T, burst int, interval time.Duration, maxKeys int) (*Limiter, *clock) {
	t.Helper()
	c := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l, err := New(Config{Burst: burst, Interval: interval, MaxKeys: maxKeys, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return l, c
}

// After Burst failures a key is refused, told how long to wait, and allowed again exactly then;
// another key is not affected.
func TestBurstThenRefill(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(t, 3, 10*time.Second, 100)
	for i := range 3 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
		l.Fail("a")
	}
	ok, wait := l.Allow("a")
	if ok || wait != 10*time.Second {
		t.Fatalf("after 3 failures: Allow = %v, %v; want false, 10s", ok, wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key refused")
	}
	c.add(4 * time.Second)
	if ok, wait := l.Allow("a"); ok || wait != 6*time.Second {
		t.Fatalf("4s later: Allow = %v, %v; want false, 6s", ok, wait)
	}
	c.add(6 * time.Second)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("refused after the wait it was given")
	}
	l.Fail("a")
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("one earned attempt allowed two")
	}
	// Time fills the bucket up to Burst, no further.
	c.add(time.Hour)
	for i := range 3 {
		l.Fail("a")
		if ok, _ := l.Allow("a"); ok != (i < 2) {
			t.Fatalf("after an hour and %d failures: Allow = %v", i+1, ok)
		}
	}
}

// Successes are not counted: a key that never fails is never remembered or refused.
func TestOnlyFailuresCount(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t, 1, time.Minute, 10)
	for range 100 {
		if ok, _ := l.Allow("good"); !ok {
			t.Fatal("a key without failures refused")
		}
	}
	if l.Keys() != 0 {
		t.Fatalf("%d keys remembered without a failure", l.Keys())
	}
}

// The map never holds more than MaxKeys: full buckets go first, then the fullest, so a key
// that is refused stays refused while others come and go.
func TestBoundedKeys(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(t, 2, time.Minute, 3)
	l.Fail("blocked")
	l.Fail("blocked")
	l.Fail("x")
	c.add(time.Minute) // x is full again, blocked has one token back
	l.Fail("y")
	l.Fail("z") // the map is full: x (full) is dropped, nothing evicted
	if l.Keys() != 3 || l.Evicted() != 0 {
		t.Fatalf("keys %d, evicted %d; want 3, 0", l.Keys(), l.Evicted())
	}
	l.Fail("blocked")
	for i := range 50 {
		l.Fail(fmt.Sprint("rot-", i))
		if l.Keys() > 3 {
			t.Fatalf("%d keys, bound 3", l.Keys())
		}
	}
	if l.Evicted() == 0 {
		t.Fatal("nothing evicted from a full map")
	}
	if ok, _ := l.Allow("blocked"); ok {
		t.Fatal("the emptiest key was evicted instead of fuller ones")
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t, 1000, time.Hour, 50)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				k := fmt.Sprint(g, "-", i%60)
				l.Allow(k)
				l.Fail(k)
			}
		})
	}
	wg.Wait()
	if l.Keys() > 50 {
		t.Fatalf("%d keys, bound 50", l.Keys())
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []Config{{Burst: -1}, {Interval: -time.Second}, {MaxKeys: -5}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestKey(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"192.0.2.7":                 "192.0.2.7",
		"::ffff:192.0.2.7":          "192.0.2.7",
		"2001:db8:1:2:3:4:5:6":      "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff::1": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":           "2001:db8:1:3::/64",
		"::1":                       "::/64",
	}
	for in, want := range cases {
		if got := Key(netip.MustParseAddr(in)); got != want {
			t.Errorf("Key(%s) = %s, want %s", in, got, want)
		}
	}
	if Key(netip.Addr{}) != "" {
		t.Error("Key of the zero address")
	}
}

// A bucket judged on a caller's clock: it refills with that clock, and a time earlier than the
// last adds nothing (a stream's timestamps may arrive a little out of order).
func TestRateOnAGivenClock(t *testing.T) {
	t.Parallel()
	r := Rate{PerSecond: 2, Burst: 4}
	var b Bucket
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 4 {
		if !r.Take(&b, 1, t0) {
			t.Fatalf("take %d of a full bucket refused", i+1)
		}
	}
	if r.Take(&b, 1, t0) || r.Take(&b, 1, t0.Add(-time.Hour)) {
		t.Fatal("an empty bucket gave a token (or an earlier time refilled it)")
	}
	if w := r.Wait(&b, 1, t0); w != 500*time.Millisecond {
		t.Fatalf("Wait = %v, want 500ms", w)
	}
	if !r.Take(&b, 1, t0.Add(500*time.Millisecond)) {
		t.Fatal("refused after the wait")
	}
	if r.Take(&b, 3, t0.Add(time.Second)) || !r.Take(&b, 1, t0.Add(time.Second)) {
		t.Fatal("take of 3 with 1 held, or of 1 with 1 held")
	}
	if got := r.Level(&b, t0.Add(time.Hour)); got != 4 {
		t.Fatalf("level after an hour = %v, want the burst 4", got)
	}
}
