package agent

import (
	"context"
	"testing"
	"time"
)

// paceHarness drives desiredPace with channels the test controls, and waits for each step to be
// handled by watching onTick and read calls.
type paceHarness struct {
	tick   chan time.Time
	nudge  chan struct{}
	retry  chan chan time.Time // each after() the loop asks for
	reads  chan struct{}       // one per read
	ticks  chan struct{}       // one per onTick
	result struct{ newer, failed bool }
	set    chan struct{ newer, failed bool }
}

func startPace(t *testing.T, every int) *paceHarness {
	t.Helper()
	h := &paceHarness{tick: make(chan time.Time), nudge: make(chan struct{}), retry: make(chan chan time.Time, 10),
		reads: make(chan struct{}, 100), ticks: make(chan struct{}, 100), set: make(chan struct{ newer, failed bool }, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		desiredPace(ctx, h.tick, h.nudge, every, func() (bool, bool) {
			select {
			case r := <-h.set:
				h.result = r
			default:
			}
			h.reads <- struct{}{}
			return h.result.newer, h.result.failed
		}, func() { h.ticks <- struct{}{} }, func(time.Duration) <-chan time.Time {
			c := make(chan time.Time, 1)
			h.retry <- c
			return c
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	<-h.reads // the first read, at the start
	<-h.ticks
	return h
}

// interval sends one tick and reports whether it caused a read.
func (h *paceHarness) interval() bool {
	h.tick <- time.Time{}
	<-h.ticks // onTick runs after any read of that tick
	select {
	case <-h.reads:
		return true
	default:
		return false
	}
}

func TestDesiredIsReadEveryNthIntervalWhenNothingNudges(t *testing.T) {
	h := startPace(t, 6)
	var readAt []int
	for i := 1; i <= 12; i++ {
		if h.interval() {
			readAt = append(readAt, i)
		}
	}
	if len(readAt) != 2 || readAt[0] != 6 || readAt[1] != 12 {
		t.Fatalf("reads on intervals %v, want [6 12]", readAt)
	}
}

func TestFailedReadIsRetriedOnTheNextInterval(t *testing.T) {
	h := startPace(t, 6)
	h.set <- struct{ newer, failed bool }{failed: true}
	for i := 1; i <= 5; i++ {
		h.interval()
	}
	if !h.interval() { // the 6th: a read, which fails
		t.Fatal("no read on the 6th interval")
	}
	if !h.interval() {
		t.Fatal("a failed read was not tried again on the next interval")
	}
	h.set <- struct{ newer, failed bool }{}
	if !h.interval() { // still the failure's retry; this one works
		t.Fatal("no retry after the second failure")
	}
	if h.interval() {
		t.Fatal("read again after a read that worked, before the 6th interval")
	}
}

func TestNudgeReadsAtOnceAndRetriesAStaleRead(t *testing.T) {
	h := startPace(t, 6)
	h.nudge <- struct{}{}
	<-h.reads // nothing newer: a retry is scheduled
	reads := 0
	for c := range h.retry {
		c <- time.Time{}
		<-h.reads
		reads++
		if reads == 5 {
			break
		}
	}
	h.interval() // the loop has handled the fifth retry
	select {
	case <-h.retry:
		t.Fatal("a sixth retry was scheduled")
	default:
	}
	// A nudged read that finds something newer schedules no retry.
	h.set <- struct{ newer, failed bool }{newer: true}
	h.nudge <- struct{}{}
	<-h.reads
	h.interval() // the loop has handled the nudge
	select {
	case <-h.retry:
		t.Fatal("a retry after a read that found a newer revision")
	default:
	}
}
