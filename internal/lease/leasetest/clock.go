// Package leasetest holds test doubles for code built on package lease: a manual clock, and a
// key-value wrapper that injects latency, partitions, stalls and crashes into a real bucket. It
// does not import package lease, so lease's own tests can use it; its types satisfy lease.Clock
// and lease.KV.
package leasetest

import (
	"sort"
	"sync"
	"time"
)

// ManualClock is a clock that moves only when Advance is called. Timers fire inside Advance, in
// deadline order, each with Now reading its deadline, in Advance's goroutine.
type ManualClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers map[uint64]*manualTimer
}

type manualTimer struct {
	at  time.Time
	seq uint64
	f   func()
}

// NewManualClock returns a clock reading a fixed instant.
func NewManualClock() *ManualClock {
	return &ManualClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), timers: map[uint64]*manualTimer{}}
}

// Now returns the clock's reading.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc calls f when the clock has been advanced by d; d ≤ 0 calls it at once in its own
// goroutine, as time.AfterFunc does.
func (c *ManualClock) AfterFunc(d time.Duration, f func()) func() bool {
	if d <= 0 {
		go f()
		return func() bool { return false }
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &manualTimer{at: c.now.Add(d), seq: c.seq, f: f}
	c.timers[t.seq] = t
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.timers[t.seq]
		delete(c.timers, t.seq)
		return ok
	}
}

// Advance moves the clock forward by d, firing the timers that fall due on the way.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var due []*manualTimer
		for _, t := range c.timers {
			if !t.at.After(target) {
				due = append(due, t)
			}
		}
		if len(due) == 0 {
			c.now = target
			c.mu.Unlock()
			return
		}
		sort.Slice(due, func(i, j int) bool {
			if !due[i].at.Equal(due[j].at) {
				return due[i].at.Before(due[j].at)
			}
			return due[i].seq < due[j].seq
		})
		t := due[0]
		delete(c.timers, t.seq)
		if t.at.After(c.now) {
			c.now = t.at
		}
		c.mu.Unlock()
		t.f()
	}
}

// Jump moves the clock forward by d without firing the timers that fall due: they fire at the
// next Advance. It is a process resumed after a pause, whose timers are late.
func (c *ManualClock) Jump(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Pending returns the number of timers not yet fired.
func (c *ManualClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}
