package lease

import (
	"testing"
	"time"
)

func TestHealthHysteresis(t *testing.T) {
	h := Health{FailuresToDegrade: 2, SuccessesToRecover: 3}
	steps := []struct {
		ok       bool
		changed  bool
		degraded bool
	}{
		{false, false, false}, // one failure: not yet
		{true, false, false},  // the run is broken
		{false, false, false},
		{false, true, true}, // two in a row: degraded
		{false, false, true},
		{true, false, true},
		{true, false, true},
		{false, false, true}, // a failure restarts the count of successes
		{true, false, true},
		{true, false, true},
		{true, true, false}, // three in a row: healthy
		{true, false, false},
	}
	for i, s := range steps {
		if got := h.Record(s.ok); got != s.changed || h.Degraded() != s.degraded {
			t.Fatalf("step %d Record(%v) = %v, degraded %v; want %v, %v", i, s.ok, got, h.Degraded(), s.changed, s.degraded)
		}
	}
	var zero Health
	if !zero.Record(false) || !zero.Degraded() || !zero.Record(true) || zero.Degraded() {
		t.Error("the zero Health must degrade on one failure and recover on one success")
	}
}

func TestStaleness(t *testing.T) {
	var s Staleness
	t0 := time.Unix(1000, 0)
	if s.Unchanged(t0) != 0 {
		t.Fatal("Unchanged before any observation must be 0")
	}
	if !s.Observe(5, t0) {
		t.Fatal("the first observation is a change")
	}
	if s.Observe(5, t0.Add(3*time.Second)) {
		t.Fatal("the same revision again is not a change")
	}
	if got := s.Unchanged(t0.Add(4 * time.Second)); got != 4*time.Second {
		t.Fatalf("Unchanged = %s, want 4s counted from the first sight", got)
	}
	// A lower revision is a read served by a lagging replica: it changes nothing.
	if !s.Behind(3) || s.Behind(5) || s.Behind(6) || s.Behind(0) {
		t.Fatal("Behind must hold for a lower revision only, never for an absent key")
	}
	if s.Observe(3, t0.Add(5*time.Second)) || s.Unchanged(t0.Add(6*time.Second)) != 6*time.Second {
		t.Fatal("a lower revision must not restart the count")
	}
	// A higher one does.
	if !s.Observe(7, t0.Add(7*time.Second)) || s.Unchanged(t0.Add(8*time.Second)) != time.Second {
		t.Fatal("a higher revision must restart the count")
	}
	rev, since, ok := s.Current()
	if !ok || rev != 7 || !since.Equal(t0.Add(7*time.Second)) {
		t.Fatalf("Current = %d %v %v", rev, since, ok)
	}
	// An absent key restarts it too (deleted or purged: Create comes next, and conflicts if not).
	if !s.Observe(0, t0.Add(9*time.Second)) {
		t.Fatal("an absent key must restart the count")
	}
	s.Reset()
	if _, _, ok := s.Current(); ok {
		t.Fatal("Reset must forget")
	}
}

func TestStalenessObserveFrom(t *testing.T) {
	var s Staleness
	t0 := time.Unix(1000, 0)
	s.Observe(5, t0)
	// A newer revision dated earlier than it was seen: the count runs from the date, the first
	// sight stays the observation.
	if !s.ObserveFrom(6, t0.Add(9*time.Second), t0.Add(2*time.Second)) {
		t.Fatal("a newer revision is a change")
	}
	if _, since, _ := s.Current(); !since.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("count runs from %s, want 2s", since.Sub(t0))
	}
	if !s.FirstSeen().Equal(t0.Add(9 * time.Second)) {
		t.Fatalf("FirstSeen = %s, want the observation at 9s", s.FirstSeen().Sub(t0))
	}
	if got := s.Unchanged(t0.Add(10 * time.Second)); got != 8*time.Second {
		t.Fatalf("Unchanged = %s, want 8s", got)
	}
	// A date after the observation is clamped to it.
	s.ObserveFrom(7, t0.Add(11*time.Second), t0.Add(20*time.Second))
	if _, since, _ := s.Current(); !since.Equal(t0.Add(11 * time.Second)) {
		t.Fatalf("count runs from %s, want the observation at 11s", since.Sub(t0))
	}
	// The same revision again changes neither.
	if s.ObserveFrom(7, t0.Add(12*time.Second), t0) {
		t.Fatal("the same revision again is not a change")
	}
	if _, since, _ := s.Current(); !since.Equal(t0.Add(11 * time.Second)) {
		t.Fatal("the same revision again must not move the count")
	}
}

// renewFrom dates a renew from the previous write's first sight plus the holder's gap, and only
// a renew of the same term written over the very revision this process saw; everything else
// is dated when it was seen.
func TestRenewFrom(t *testing.T) {
	seen := time.Unix(1000, 0) // prev (revision 7) first seen
	at := seen.Add(9 * time.Second)
	prev := Record{Holder: "a", Instance: "i", Epoch: 3}
	renew := Record{Holder: "a", Instance: "i", Epoch: 3, Prev: 7, GapMs: 2001}
	cases := []struct {
		name     string
		prev     Record
		prevRev  uint64
		prevSeen time.Time
		rec      Record
		want     time.Time
	}{
		{"renew over the revision seen", prev, 7, seen, renew, seen.Add(2001 * time.Millisecond)},
		{"renew over the term's first write", Record{Holder: "a", Instance: "i"}, 3, seen,
			Record{Holder: "a", Instance: "i", Epoch: 3, Prev: 3, GapMs: 500}, seen.Add(500 * time.Millisecond)},
		{"gap reaches past the sight: clamped", prev, 7, seen, Record{Holder: "a", Instance: "i", Epoch: 3, Prev: 7, GapMs: 60000}, at},
		{"over a revision not seen (one was missed)", prev, 6, seen, renew, at},
		{"another instance", Record{Holder: "a", Instance: "j", Epoch: 3}, 7, seen, renew, at},
		{"another term", Record{Holder: "a", Instance: "i", Epoch: 2}, 7, seen, renew, at},
		{"a term's first write", prev, 7, seen, Record{Holder: "a", Instance: "i", Prev: 7, GapMs: 1}, at},
		{"released", prev, 7, seen, Record{Holder: "a", Instance: "i", Epoch: 3, Prev: 7, GapMs: 1, Released: true}, at},
		{"no previous revision named (an older writer)", prev, 7, seen, Record{Holder: "a", Instance: "i", Epoch: 3}, at},
		{"nothing seen before", prev, 0, time.Time{}, renew, at},
		{"gap beyond any duration", prev, 7, seen, Record{Holder: "a", Instance: "i", Epoch: 3, Prev: 7, GapMs: 1 << 62}, at},
	}
	for _, c := range cases {
		if got := renewFrom(c.prev, c.prevRev, c.prevSeen, c.rec, 9, at); !got.Equal(c.want) {
			t.Errorf("%s: renewFrom = seen%+v, want seen%+v", c.name, got.Sub(seen), c.want.Sub(seen))
		}
	}
}
