package lease

import "time"

// Health turns a run of call outcomes into a state that does not flap: it becomes degraded
// after FailuresToDegrade failures in a row and healthy again only after SuccessesToRecover
// successes in a row. The zero value degrades on the first failure and recovers on the first
// success. Not safe for concurrent use.
type Health struct {
	FailuresToDegrade  int // consecutive failures that degrade; below 1 means 1
	SuccessesToRecover int // consecutive successes that recover; below 1 means 1

	failures, successes int
	degraded            bool
}

// Record adds one outcome and reports whether the state changed.
func (h *Health) Record(ok bool) (changed bool) {
	if ok {
		h.failures = 0
		h.successes++
		if h.degraded && h.successes >= max(h.SuccessesToRecover, 1) {
			h.degraded = false
			return true
		}
		return false
	}
	h.successes = 0
	h.failures++
	if !h.degraded && h.failures >= max(h.FailuresToDegrade, 1) {
		h.degraded = true
		return true
	}
	return false
}

// Degraded reports the state.
func (h *Health) Degraded() bool { return h.degraded }

// Streak returns the current run: consecutive failures or consecutive successes (one is 0).
func (h *Health) Streak() (failures, successes int) { return h.failures, h.successes }

// Staleness tells how long a key has kept one revision, by the local clock, counting from when
// this process first saw that revision — or from an earlier local time the caller proved the
// write could not precede (ObserveFrom) — never from the store's timestamp, which was taken on
// another machine's clock. A revision is the store's sequence number, so "same revision" means
// "not written since", however long the reader was away or its reads failed. Not safe for
// concurrent use.
type Staleness struct {
	rev    uint64
	since  time.Time // the count runs from here
	seenAt time.Time // when this process first saw rev
	seen   bool
}

// Observe records that a read which returned at local time at found revision rev (0: absent),
// and reports whether it restarted the count. A higher revision, or an absent key, restarts it;
// the same revision does not. A lower revision does not either: revisions only grow, so it is a
// read served by a replica that lags behind one already seen (a clustered bucket answers reads
// from any replica, and a replica that has just restarted, or lost its stream leader, answers
// from what it has). Counting afresh from it would restart the count each time reads alternate
// between replicas, for as long as one lags. Use Behind to tell such a read apart, and Reset
// when a compare-and-set on the revision being timed conflicted (the bucket may have been
// recreated, its revisions started again).
func (s *Staleness) Observe(rev uint64, at time.Time) bool { return s.ObserveFrom(rev, at, at) }

// ObserveFrom is Observe for a revision the caller knows was written no earlier than local time
// from: when it restarts the count, the count runs from from, clamped to at the latest. Only a
// bound that holds whatever the store did may be given (the lease's is in docs/ha.md, "A renew
// seen late"); an earlier from shortens the wait of whoever takes over on the count.
func (s *Staleness) ObserveFrom(rev uint64, at, from time.Time) bool {
	if s.seen && (rev == s.rev || s.Behind(rev)) {
		return false
	}
	if from.After(at) {
		from = at
	}
	s.rev, s.since, s.seenAt, s.seen = rev, from, at, true
	return true
}

// Behind reports whether rev is a revision older than the one being timed: a read served by a
// lagging replica. An absent key (rev 0) is never behind.
func (s *Staleness) Behind(rev uint64) bool { return s.seen && rev != 0 && rev < s.rev }

// Current returns the revision being timed and the time its count runs from; ok is false
// before the first observation.
func (s *Staleness) Current() (rev uint64, since time.Time, ok bool) { return s.rev, s.since, s.seen }

// FirstSeen returns when this process first saw the revision being timed (zero before the
// first observation): the time of an observation, never an estimate.
func (s *Staleness) FirstSeen() time.Time { return s.seenAt }

// Unchanged returns how long the current revision's count has run at local time now (0 before
// the first observation).
func (s *Staleness) Unchanged(now time.Time) time.Duration {
	if !s.seen {
		return 0
	}
	return now.Sub(s.since)
}

// Reset forgets the revision being timed: the next observation starts a new count.
func (s *Staleness) Reset() { *s = Staleness{} }
