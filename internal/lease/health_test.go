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
	// A lower revision (a stale read, a recreated bucket) restarts the count too.
	if !s.Observe(3, t0.Add(5*time.Second)) || s.Unchanged(t0.Add(6*time.Second)) != time.Second {
		t.Fatal("a different revision must restart the count")
	}
	rev, since, ok := s.Current()
	if !ok || rev != 3 || !since.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("Current = %d %v %v", rev, since, ok)
	}
	s.Reset()
	if _, _, ok := s.Current(); ok {
		t.Fatal("Reset must forget")
	}
}
