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
