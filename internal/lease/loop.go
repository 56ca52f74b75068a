package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/fault"
)

// The loop is one goroutine: it reads the key, acquires, renews and releases. Two things run
// beside it: the watchdog of the current term (a clock callback that ends the term at its
// deadline whatever the loop is doing) and the watch of the key (which only hands entries to
// the loop and wakes it).

func (l *Lease) run(ctx context.Context) {
	defer close(l.done)
	wctx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		l.watch(wctx)
	}()
	defer func() {
		stopWatch()
		<-watchDone
	}()

	l.mu.Lock()
	prevLead := l.stray // the Lead of the last term, until it returned
	l.stray = nil
	l.mu.Unlock()
	nextPoll := l.clock.Now()
	for {
		if ctx.Err() != nil {
			l.shutdown(prevLead)
			return
		}
		l.mu.Lock()
		t := l.term
		l.mu.Unlock()
		if t != nil {
			if over := l.leadStep(ctx, t); over {
				l.finish(t)
				prevLead = t.leadDone
				nextPoll = l.clock.Now() // read at once: who holds it now?
			}
			continue
		}
		if prevLead != nil {
			// No new term while the last one's leader work still runs.
			select {
			case <-prevLead:
				prevLead = nil
			case <-ctx.Done():
			}
			continue
		}
		nextPoll = l.followStep(ctx, nextPoll)
	}
}

// followStep reads the key when a read is due, acquires when the rules allow, and waits.
func (l *Lease) followStep(ctx context.Context, nextPoll time.Time) time.Time {
	if e, ok := l.takeWatched(); ok && e.Revision > l.lastRevision() {
		l.observe(e, e.Deleted, l.clock.Now()) // the time after the entry was delivered
	}
	now := l.clock.Now()
	if !now.Before(nextPoll) {
		nextPoll = now.Add(l.t.RenewInterval)
		e, err := l.cell.Read(context.Background())
		switch {
		case err == nil:
			l.note(nil)
			l.observe(e, false, l.clock.Now())
		case errors.Is(err, fault.ErrNotFound):
			l.note(nil)
			l.observe(Entry{}, true, l.clock.Now())
		default:
			l.note(err)
		}
		if l.isDegraded() {
			// Leaving the degraded state takes RecoverAfter successes in a row: probe that many
			// times per interval, so that a store back from an outage (a stream leader elected
			// after its server was lost) is trusted again after about one interval, not several.
			nextPoll = now.Add(l.t.RenewInterval / time.Duration(max(l.t.RecoverAfter, 1)))
		}
	}

	now = l.clock.Now()
	// Stop may have come while the read was on the wire: a replica being stopped takes no term
	// (its leader work would start only to be stopped, and the lease bounce through it).
	if rev, create, ok := l.decide(now); ok && ctx.Err() == nil {
		rec := Record{Holder: l.cfg.Holder, Instance: l.instance}
		sent := l.clock.Now()
		var got uint64
		var err error
		if create {
			got, err = l.cell.Create(context.Background(), rec.Encode())
		} else {
			got, err = l.cell.Swap(context.Background(), rev, rec.Encode())
		}
		switch {
		case err == nil || errors.Is(err, ErrLate):
			// Applied. A late answer still counts as a failure, but the key is ours: leaving it
			// would keep everyone waiting a TTL.
			l.note(err)
			if t := l.begin(got, sent); t != nil {
				return nextPoll
			}
			l.log.Warn("lease acquired too late to use: its watchdog deadline had passed", "epoch", got)
			return l.clock.Now() // our own record: take it over again at once if eligible
		case errors.Is(err, fault.ErrConflict):
			// Someone else wrote first. Count afresh from the next read: a read served by a
			// lagging replica could otherwise show the old revision and start a race again.
			l.note(nil)
			l.mu.Lock()
			l.seen.Reset()
			l.last.ok = false
			l.mu.Unlock()
		default:
			l.note(err) // it may have landed: the next read tells
			l.log.Debug("lease acquire failed", "err", err)
			// Degraded now: start the recoverAfter reads at once (the pace of a degraded
			// contender), not at the read that was due before this call.
			if soon := l.clock.Now().Add(l.t.RenewInterval / time.Duration(max(l.t.RecoverAfter, 1))); soon.Before(nextPoll) {
				nextPoll = soon
			}
		}
	}

	until := nextPoll
	l.mu.Lock()
	if _, since, ok := l.seen.Current(); ok && l.last.ok {
		if at := since.Add(l.t.TTL); at.After(now) && at.Before(until) {
			until = at
		}
	}
	if l.notBefore.After(now) && l.notBefore.Before(until) {
		until = l.notBefore
	}
	l.mu.Unlock()
	l.wait(ctx, until, nil)
	return nextPoll
}

// decide says whether to acquire now: create (the key is absent) or take over revision rev.
func (l *Lease) decide(now time.Time) (rev uint64, create, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := l.last
	if !o.ok || l.health.Degraded() || now.Before(l.notBefore) {
		return 0, false, false
	}
	if o.absent {
		return 0, true, true
	}
	if o.recErr == nil && (o.rec.Released || o.rec.Instance == l.instance) {
		// Released, or written by this very process, which no longer leads: nobody else has
		// written since (they would have moved the revision), so nobody else leads.
		return o.entry.Revision, false, true
	}
	if cur, since, seen := l.seen.Current(); seen && cur == o.entry.Revision && now.Sub(since) >= l.t.TTL {
		return cur, false, true
	}
	return 0, false, false
}

// leadStep renews when due and otherwise waits; it reports whether the term is over.
func (l *Lease) leadStep(ctx context.Context, t *term) (over bool) {
	if t.ctx.Err() != nil {
		return true
	}
	if l.expire(t) {
		return true // the loop ran before the watchdog's callback (the process was paused)
	}
	if e, ok := l.takeWatched(); ok && e.Revision > t.rev {
		l.leaderSaw(t, e)
		if t.ctx.Err() != nil {
			return true
		}
	}
	if l.clock.Now().Before(t.nextRenew) {
		l.wait(ctx, t.nextRenew, t.ctx.Done())
		return t.ctx.Err() != nil
	}
	l.renew(t)
	return t.ctx.Err() != nil
}

// leaderSaw handles a write the leader did not know of: its own renew that it thought had
// failed, or someone else's.
func (l *Lease) leaderSaw(t *term, e Entry) {
	rec, err := DecodeRecord(e.Value, e.Revision)
	switch {
	case e.Deleted:
		l.end(t, ReasonLost, "", errors.New("the lease key was deleted or purged"))
	case err != nil:
		l.end(t, ReasonLost, "", err)
	case l.ours(t, rec, e.Revision):
		t.learned(e.Revision)
	default:
		l.end(t, ReasonReplaced, rec.Holder, nil)
	}
}

// wrote notes that the renew sent at sent wrote revision rev (the store said so).
func (t *term) wrote(rev uint64, sent time.Time) {
	t.rev, t.revSent, t.firstSend, t.uncertain = rev, sent, time.Time{}, false
}

// learned notes that revision rev holds a write of this term whose answer was lost: one of the
// renews sent over t.rev, the first of them at the earliest.
func (t *term) learned(rev uint64) {
	sent := t.firstSend
	if sent.IsZero() { // cannot happen: only a renew writes over t.rev; the older bound is safe
		sent = t.revSent
	}
	t.wrote(rev, sent)
}

func (l *Lease) ours(t *term, rec Record, rev uint64) bool {
	return rec.Instance == l.instance && rec.EpochAt(rev) == t.epoch && !rec.Released
}

// renew writes the record on the last revision; success moves the watchdog deadline to
// TTL − Margin after this renew was sent.
func (l *Lease) renew(t *term) {
	sent := l.clock.Now()
	t.nextRenew = sent.Add(l.t.RenewInterval)
	if t.firstSend.IsZero() {
		t.firstSend = sent
	}
	rec := Record{Holder: l.cfg.Holder, Instance: l.instance, Epoch: t.epoch,
		Prev: t.rev, GapMs: gapMs(sent.Sub(t.revSent))}
	rev, err := l.cell.Swap(context.Background(), t.rev, rec.Encode())
	switch {
	case err == nil:
		t.wrote(rev, sent)
		l.mu.Lock()
		live := !t.ended && l.clock.Now().Before(t.deadline)
		if d := sent.Add(l.t.Watchdog()); live && d.After(t.deadline) {
			t.deadline = d
		}
		l.mu.Unlock()
		l.note(nil)
		if !live {
			// Answered after the deadline: the term was over by then, whether or not the
			// watchdog's callback has run. A term is never revived.
			l.end(t, ReasonWatchdog, "", nil)
		}
	case errors.Is(err, ErrLate):
		// Applied, but too late to count: keep the revision, not the deadline.
		t.wrote(rev, sent)
		l.m.renewFailures.Inc()
		l.note(err)
	case errors.Is(err, fault.ErrConflict):
		// Not counted either way: the store answered, but the renew did not succeed. Only a
		// renew that succeeds in time counts towards recovery.
		l.m.renewFailures.Inc()
		if !t.uncertain {
			// Our last write is known, and the key moved after it. Almost always someone else
			// wrote: replaced. But a write of ours whose answer was lost and then sent again by
			// the client (a stream leader change on a cluster does that) may be what moved
			// it: the key then holds our own record, which no other holder has written over,
			// and the term goes on. One read tells; it has a deadline, and the watchdog bounds
			// the term meanwhile, as for any renew.
			e, rerr := l.cell.Read(context.Background())
			var r Record
			derr := rerr
			if rerr == nil && !e.Deleted {
				r, derr = DecodeRecord(e.Value, e.Revision)
			}
			if derr == nil && !e.Deleted && e.Revision > t.rev && l.ours(t, r, e.Revision) {
				l.log.Info("lease renew conflicted with a write of our own that had landed unseen; still leading",
					"epoch", t.epoch, "revision", e.Revision)
				t.learned(e.Revision)
				t.nextRenew = l.clock.Now() // renew on it at once to move the deadline
				return
			}
			l.end(t, ReasonReplaced, "", nil)
			if derr == nil && !e.Deleted {
				l.log.Warn("lease now held by another replica", "by", r.Holder, "their_epoch", r.EpochAt(e.Revision), "epoch", t.epoch)
			}
			return
		}
		l.resolve(t)
	default:
		t.uncertain = true
		l.m.renewFailures.Inc()
		l.note(err)
		l.log.Debug("lease renew failed", "epoch", t.epoch, "err", err)
	}
}

// resolve follows a conflict after a renew of unknown outcome: if that renew landed, the key
// holds our record at a newer revision and the term goes on; if not, we were replaced. Only a
// revision newer than the one that conflicted tells: an older one is a read served by a
// lagging replica, and leaves the outcome unknown until the next renew.
func (l *Lease) resolve(t *term) {
	e, err := l.cell.Read(context.Background())
	switch {
	case errors.Is(err, fault.ErrNotFound):
		l.end(t, ReasonLost, "", errors.New("the lease key was deleted or purged"))
	case err != nil:
		l.note(err) // still unknown; the watchdog bounds the term
	case e.Revision <= t.rev:
		l.log.Debug("lease read older than the conflict; retrying at the next renew", "revision", e.Revision, "known", t.rev)
	default:
		rec, derr := DecodeRecord(e.Value, e.Revision)
		switch {
		case derr != nil:
			l.end(t, ReasonLost, "", derr)
		case l.ours(t, rec, e.Revision):
			t.learned(e.Revision)
			t.nextRenew = l.clock.Now() // renew on it at once to move the deadline
		default:
			l.end(t, ReasonReplaced, rec.Holder, nil)
		}
	}
}

// begin starts a term whose first write, sent at sent, was stored at revision rev. It returns
// nil if the watchdog deadline has already passed (the loop stalled after the write).
func (l *Lease) begin(rev uint64, sent time.Time) *term {
	ctx, cancel := context.WithCancelCause(l.base)
	t := &term{l: l, epoch: rev, rev: rev, revSent: sent, ctx: ctx, cancel: cancel, leadDone: make(chan struct{}),
		deadline: sent.Add(l.t.Watchdog())}
	t.nextRenew = sent.Add(l.t.RenewInterval)
	l.mu.Lock()
	now := l.clock.Now()
	if !now.Before(t.deadline) {
		l.mu.Unlock()
		cancel(ErrWatchdog)
		return nil
	}
	t.started = now
	l.term = t
	t.stopDog = l.clock.AfterFunc(t.deadline.Sub(now), func() { l.dog(t) })
	l.m.isLeader.Set(1)
	l.m.epoch.Set(float64(rev))
	l.mu.Unlock()
	l.transition(Transition{Reason: ReasonAcquired, Epoch: rev, At: now})

	if l.cfg.Lead == nil {
		close(t.leadDone)
		return t
	}
	pub := Term{Epoch: rev, Started: now, t: t}
	go func() {
		defer l.nudge()
		defer close(t.leadDone)
		l.cfg.Lead(pub)
		// Returned while still leading: hand the lease on.
		l.end(t, ReasonReleased, "", errors.New("the leader work returned"))
	}()
	return t
}

// expire ends t if its deadline has passed, and reports whether it is over.
func (l *Lease) expire(t *term) bool {
	l.mu.Lock()
	over := !t.ended && !l.clock.Now().Before(t.deadline)
	l.mu.Unlock()
	if over {
		l.end(t, ReasonWatchdog, "", nil)
	}
	return t.ctx.Err() != nil
}

// dog is the watchdog: it ends the term at its deadline, or sleeps again until the deadline a
// renew moved it to.
func (l *Lease) dog(t *term) {
	l.mu.Lock()
	if t.ended {
		l.mu.Unlock()
		return
	}
	if left := t.deadline.Sub(l.clock.Now()); left > 0 {
		t.stopDog = l.clock.AfterFunc(left, func() { l.dog(t) })
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.end(t, ReasonWatchdog, "", nil)
	l.nudge()
}

// end ends term t (once): its context is cancelled before anything else.
func (l *Lease) end(t *term, reason Reason, by string, err error) {
	l.mu.Lock()
	if t.ended {
		l.mu.Unlock()
		return
	}
	t.ended, t.reason = true, reason
	t.cancel(causeOf(reason))
	at := l.clock.Now()
	if t.stopDog != nil {
		t.stopDog()
	}
	l.m.isLeader.Set(0)
	deadline := t.deadline
	l.mu.Unlock()
	l.transition(Transition{Reason: reason, Epoch: t.epoch, At: at, By: by, Err: err, Deadline: deadline})
}

// finish clears an ended term; one that ended because its Lead returned is handed on.
func (l *Lease) finish(t *term) {
	l.mu.Lock()
	l.term = nil
	reason := t.reason
	l.mu.Unlock()
	if reason != ReasonReleased {
		return
	}
	<-t.leadDone // it returned: that is what released it
	l.release(context.Background(), t)
	l.mu.Lock()
	l.notBefore = l.clock.Now().Add(l.t.TTL)
	l.mu.Unlock()
}

// shutdown ends the term, waits for its Lead and hands the lease on, within Stop's context.
func (l *Lease) shutdown(prevLead <-chan struct{}) {
	l.mu.Lock()
	t, ctx := l.term, l.stopCtx
	l.mu.Unlock()
	if ctx == nil {
		ctx = context.Background()
	}
	if prevLead != nil {
		select {
		case <-prevLead:
		case <-ctx.Done():
			l.stopFailed(ctx, prevLead)
			return
		}
	}
	if t == nil {
		return
	}
	l.end(t, ReasonReleased, "", nil)
	select {
	case <-t.leadDone:
	case <-ctx.Done():
		l.mu.Lock()
		l.term = nil
		l.mu.Unlock()
		l.stopFailed(ctx, t.leadDone)
		return
	}
	l.mu.Lock()
	l.term = nil
	reason := t.reason
	l.mu.Unlock()
	if reason == ReasonReleased {
		l.release(ctx, t)
	}
}

// stopFailed notes that Stop gave up waiting for a Lead: the key is left to expire, and a later
// Start waits for that Lead before it may lead again.
func (l *Lease) stopFailed(ctx context.Context, lead <-chan struct{}) {
	l.log.Error("lease: the leader work did not return before the stop deadline; the lease is left to expire", "err", ctx.Err())
	l.mu.Lock()
	l.stopErr = fmt.Errorf("lease %s: the leader work did not return before the stop deadline: %w", l.cfg.Name, ctx.Err())
	l.stray = lead
	l.mu.Unlock()
}

// release marks the record released, on the revision of the term's last write, so that the
// next replica need not wait for the TTL. The epoch stays: the next term's is its own write's
// revision, which is larger.
func (l *Lease) release(ctx context.Context, t *term) {
	rec := Record{Holder: l.cfg.Holder, Instance: l.instance, Epoch: t.epoch, Released: true}
	rev := t.rev
	for try := 0; try < 2; try++ {
		_, err := l.cell.Swap(ctx, rev, rec.Encode())
		if err == nil || errors.Is(err, ErrLate) {
			l.log.Info("lease handed on", "epoch", t.epoch)
			return
		}
		if !errors.Is(err, fault.ErrConflict) || !t.uncertain {
			l.log.Warn("lease not handed on; it expires after the ttl", "epoch", t.epoch, "err", err)
			return
		}
		// A renew of unknown outcome may have landed: release on it if it did.
		e, rerr := l.cell.Read(ctx)
		if rerr != nil {
			l.log.Warn("lease not handed on; it expires after the ttl", "epoch", t.epoch, "err", rerr)
			return
		}
		r, derr := DecodeRecord(e.Value, e.Revision)
		if derr != nil || !l.ours(t, r, e.Revision) {
			return // someone else holds it now
		}
		rev, t.uncertain = e.Revision, false
	}
}

// observe records a read of the key that returned at local time at. A read of a revision older
// than the one being timed is ignored (Staleness.Observe says why): the last observation stays
// the newer one, and so does its count.
func (l *Lease) observe(e Entry, absent bool, at time.Time) {
	o := observation{ok: true, entry: e, absent: absent}
	if !absent {
		o.rec, o.recErr = DecodeRecord(e.Value, e.Revision)
	}
	l.mu.Lock()
	if !absent && l.seen.Behind(e.Revision) {
		cur, _, _ := l.seen.Current()
		l.mu.Unlock()
		l.log.Debug("lease read served by a lagging replica; ignored", "revision", e.Revision, "seen", cur)
		return
	}
	prev, _, _ := l.seen.Current()
	from := at
	if !absent && o.recErr == nil && l.last.ok && !l.last.absent && l.last.recErr == nil &&
		l.last.entry.Revision == prev && e.Revision > prev {
		from = renewFrom(l.last.rec, prev, l.seen.FirstSeen(), o.rec, e.Revision, at)
	}
	changed := l.seen.ObserveFrom(e.Revision, at, from)
	l.last = o
	leading := l.term != nil && !l.term.ended
	l.mu.Unlock()
	if !leading && !absent && o.recErr == nil {
		l.m.epoch.Set(float64(o.rec.EpochAt(e.Revision)))
	}
	if changed {
		l.log.Debug("lease key changed", "revision", e.Revision, "previous", prev, "absent", absent,
			"dated_earlier_by", at.Sub(from))
	}
	if changed && at.Sub(from) > l.t.RenewInterval {
		// Worth a line at an incident: the renew was committed late (a stream election), and
		// the takeover is timed from its send.
		l.log.Info("lease renew seen late; timing the ttl from when it was sent", "revision", e.Revision,
			"previous", prev, "seen_late_by", at.Sub(from))
	}
	if changed && !absent && o.recErr != nil {
		l.log.Warn("lease key holds something that is not a lease record; it is taken over once it stays unchanged for the ttl",
			"revision", e.Revision, "err", o.recErr)
	}
}

// renewFrom dates a write seen at local time at: the earliest local time at which its writer
// may have sent it. Usually that is at itself. But when the write is a renew of the very term
// whose write at prevRev this process first saw at prevSeen, and it was written over prevRev,
// its writer sent it GapMs after the earliest send that may have written prevRev, on its own
// clock; that send came before prevRev was stored, hence before prevSeen. So the renew was sent
// no earlier than prevSeen + GapMs, whenever it became visible: a renew committed only after
// the stream elected a new leader (the dying stream leader had proposed it) is then timed from
// about when it was sent, not from the election. The result is clamped to [prevSeen, at].
// Only monotonic clock differences are used — the holder's GapMs and this process's own
// readings — never a store timestamp (docs/ha.md, "A renew seen late").
func renewFrom(prevRec Record, prevRev uint64, prevSeen time.Time, rec Record, rev uint64, at time.Time) time.Time {
	if prevRev == 0 || prevSeen.IsZero() || rec.Epoch == 0 || rec.Released || rec.Prev != prevRev ||
		rec.Instance != prevRec.Instance || rec.EpochAt(rev) != prevRec.EpochAt(prevRev) {
		return at
	}
	span := at.Sub(prevSeen)
	if span < 0 || rec.GapMs > uint64(span/time.Millisecond) {
		return at // the gap reaches past the sight (compared in milliseconds: no overflow)
	}
	return prevSeen.Add(rec.Gap())
}

func (l *Lease) lastRevision() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last.entry.Revision
}

func (l *Lease) isDegraded() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.health.Degraded()
}

// note records the outcome of a store call (nil: it answered in time).
func (l *Lease) note(err error) {
	l.mu.Lock()
	changed := l.health.Record(err == nil)
	degraded := l.health.Degraded()
	t := l.term
	leading := t != nil && !t.ended
	l.mu.Unlock()
	if !changed {
		return
	}
	tr := Transition{Reason: ReasonRecovered, Err: err}
	if leading {
		tr.Epoch = t.epoch
	}
	switch {
	case degraded:
		tr.Reason = ReasonDegraded
		l.m.degraded.Set(1)
	case leading:
		tr.Reason = ReasonRenewedAfterDegraded
		l.m.degraded.Set(0)
	default:
		l.m.degraded.Set(0)
	}
	tr.At = l.clock.Now()
	l.transition(tr)
}

// transition counts, logs and reports tr.
func (l *Lease) transition(tr Transition) {
	tr.Lease = l.cfg.Name
	l.m.transitions.WithLabelValues(string(tr.Reason)).Inc()
	level, msg := slog.LevelInfo, ""
	switch tr.Reason {
	case ReasonAcquired:
		msg = "lease acquired: leading"
	case ReasonReplaced:
		level, msg = slog.LevelWarn, "lease replaced by another holder: stopped leading"
	case ReasonWatchdog:
		level, msg = slog.LevelWarn, "lease not renewed in time: the watchdog stopped leading"
	case ReasonReleased:
		msg = "lease released: stopped leading"
	case ReasonLost:
		level, msg = slog.LevelWarn, "lease record gone or unreadable: stopped leading"
	case ReasonDegraded:
		level, msg = slog.LevelWarn, "lease store calls failing: degraded"
	case ReasonRenewedAfterDegraded:
		msg = "lease renewed after being degraded: healthy"
	case ReasonRecovered:
		msg = "lease store calls recovered: may acquire again"
	}
	attrs := []any{"reason", string(tr.Reason)}
	if tr.Epoch != 0 {
		attrs = append(attrs, "epoch", tr.Epoch)
	}
	if tr.By != "" {
		attrs = append(attrs, "by", tr.By)
	}
	if tr.Err != nil {
		attrs = append(attrs, "err", tr.Err)
	}
	if late := tr.At.Sub(tr.Deadline); !tr.Deadline.IsZero() && late > 0 {
		level = slog.LevelWarn
		attrs = append(attrs, "past_deadline", late)
	}
	l.log.Log(context.Background(), level, msg, attrs...)
	if l.cfg.OnTransition != nil {
		l.cfg.OnTransition(tr)
	}
}

// wait sleeps until the clock reads until, or something wakes the loop.
func (l *Lease) wait(ctx context.Context, until time.Time, ended <-chan struct{}) {
	d := until.Sub(l.clock.Now())
	if d <= 0 {
		return
	}
	fired := make(chan struct{})
	stop := l.clock.AfterFunc(d, func() { close(fired) })
	defer stop()
	if l.idle != nil {
		l.idle(until)
		defer l.idle(time.Time{})
	}
	select {
	case <-fired:
	case <-ctx.Done():
	case <-l.wake:
	case <-ended:
	}
}

func (l *Lease) nudge() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// watch follows the key and hands each entry to the loop: a release is then taken over at
// once and a replacement noticed before the next renew. It only speeds things up; the loop
// reads the key itself on schedule, so a watch that fails or stalls changes nothing else.
func (l *Lease) watch(ctx context.Context) {
	for {
		w, err := l.cfg.KV.Watch(ctx, l.key)
		if err == nil {
			l.follow(ctx, w)
			_ = w.Stop()
		} else if ctx.Err() == nil {
			l.log.Debug("lease watch failed; reading on schedule only", "err", err)
		}
		if ctx.Err() != nil {
			return
		}
		fired := make(chan struct{})
		stop := l.clock.AfterFunc(l.t.RenewInterval, func() { close(fired) })
		select {
		case <-fired:
		case <-ctx.Done():
			stop()
			return
		}
	}
}

func (l *Lease) follow(ctx context.Context, w jetstream.KeyWatcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue
			}
			ent := EntryOf(e)
			l.watchMu.Lock()
			if l.watched == nil || ent.Revision > l.watched.Revision {
				l.watched = &ent
			}
			l.watchMu.Unlock()
			l.nudge()
		}
	}
}

func (l *Lease) takeWatched() (Entry, bool) {
	l.watchMu.Lock()
	defer l.watchMu.Unlock()
	if l.watched == nil {
		return Entry{}, false
	}
	e := *l.watched
	l.watched = nil
	return e, true
}
