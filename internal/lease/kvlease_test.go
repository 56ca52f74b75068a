package lease

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"godwit.dev/godwit/internal/lease/leasetest"
)

// manualTiming is the timing of the tests on a manual clock: the watchdog at 8 s after the
// last successful renew was sent, a contender after 10 s.
var manualTiming = Timing{TTL: 10 * time.Second, RenewInterval: time.Second, CallTimeout: 500 * time.Millisecond,
	Margin: 2 * time.Second, RecoverAfter: 3}

// mbundle is a test on a manual clock over a real bucket.
type mbundle struct {
	t     *testing.T
	clock *leasetest.ManualClock
	kv    jetstream.KeyValue
	rec   *recorder
	key   string
}

func newManual(t *testing.T) *mbundle {
	ns := startNATS(t)
	kv, _ := ns.bucket(t)
	return &mbundle{t: t, clock: leasetest.NewManualClock(), kv: kv, rec: &recorder{}, key: "hub"}
}

// replica is one contender of a test.
type replica struct {
	l    *Lease
	f    *leasetest.FaultKV
	idle *idleTracker
	lead *blockingLead
	reg  *prometheus.Registry
}

func (b *mbundle) replica(holder string, mods ...func(*Config)) *replica {
	t := b.t
	f := leasetest.NewFaultKV(b.kv, b.clock)
	r := &replica{f: f, lead: &blockingLead{clock: b.clock}, reg: prometheus.NewRegistry()}
	cfg := Config{Name: b.key, Holder: holder, KV: f, Timing: manualTiming, Clock: b.clock, Logger: testLogger(t),
		Registry: r.reg, Lead: r.lead.lead, OnTransition: b.rec.on(holder)}
	for _, m := range mods {
		m(&cfg)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.l = l
	r.idle = track(l)
	if err := l.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close() // first: a killed or frozen replica's loop is stuck in a call
		stopAll(t, l)
	})
	return r
}

func (r *replica) leader() bool { return r.l.Status().Leader }

// noWatch makes a replica rely on reading the key: its Watch calls fail.
func noWatch(c *Config) { c.KV.(*leasetest.FaultKV).RefuseWatch(true) }

// waitLeader waits until r leads and its loop settled, and returns its term.
func (b *mbundle) waitLeader(r *replica) Term {
	b.t.Helper()
	waitFor(b.t, 20*time.Second, r.l.cfg.Holder+" to lead", r.leader)
	settle(b.t, b.clock, r.idle)
	term, ok := r.l.Current()
	if !ok {
		b.t.Fatalf("%s lost its term at once:%s", r.l.cfg.Holder, b.rec)
	}
	return term
}

// revision reads the key's revision straight from the bucket.
func (b *mbundle) revision() uint64 {
	b.t.Helper()
	e, err := b.kv.Get(b.t.Context(), b.key)
	if err != nil {
		b.t.Fatal(err)
	}
	return e.Revision()
}

// A contender that just started waits the whole TTL, counted from its own first read, before
// it takes over from a holder that stopped renewing; the holder's watchdog stopped it earlier.
func TestTakeoverWaitsForTheTTL(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	a := b.replica("a")
	aTerm := b.waitLeader(a)
	acquiredAt := b.clock.Now() // a's first write was sent at this reading
	a.f.Kill()                  // a writes nothing more

	t0 := b.clock.Now()
	c := b.replica("b")
	settle(t, b.clock, c.idle) // b has read a's record at t0
	if st := c.l.Status(); st.Leader || st.Record.Holder != "a" {
		t.Fatalf("b after its first read: %+v", st)
	}
	const step = 250 * time.Millisecond
	for b.clock.Now().Add(step).Before(t0.Add(manualTiming.TTL)) {
		b.clock.Advance(step)
		settle(t, b.clock, c.idle)
		if c.leader() {
			t.Fatalf("b took over %s after its first read, before the ttl (%s):%s", b.clock.Now().Sub(t0), manualTiming.TTL, b.rec)
		}
	}
	b.clock.Advance(t0.Add(manualTiming.TTL).Sub(b.clock.Now()))
	bTerm := b.waitLeader(c)

	acq, _ := b.rec.find("b", ReasonAcquired)
	if acq.At.Before(t0.Add(manualTiming.TTL)) {
		t.Errorf("b acquired at %s after its first read, before the ttl", acq.At.Sub(t0))
	}
	dog, ok := b.rec.find("a", ReasonWatchdog)
	if !ok {
		t.Fatalf("a's term did not end by its watchdog:%s", b.rec)
	}
	if want := acquiredAt.Add(manualTiming.TTL - manualTiming.Margin); !dog.At.Equal(want) {
		t.Errorf("a's watchdog fired %s after its last successful write was sent, want ttl − margin = %s",
			dog.At.Sub(acquiredAt), manualTiming.Watchdog())
	}
	if !dog.At.Before(acq.At) || aTerm.Context().Err() == nil {
		t.Errorf("a's term ended at %s, b's began at %s", dog.At, acq.At)
	}
	if !errors.Is(context.Cause(aTerm.Context()), ErrWatchdog) {
		t.Errorf("cause of a's end = %v", context.Cause(aTerm.Context()))
	}
	if bTerm.Epoch <= aTerm.Epoch {
		t.Errorf("epoch went from %d to %d", aTerm.Epoch, bTerm.Epoch)
	}
}

// laggingKV answers every other read with an older revision of the key, as a clustered bucket
// does when reads go to any replica and one of them lags (restarted, or waiting for its stream
// to elect a leader). It cannot watch: the contender reads.
type laggingKV struct {
	jetstream.KeyValue
	stale   atomic.Uint64 // the revision the lagging replica has; 0: none lags
	reads   atomic.Int64
	watches bool // Watch works (else it fails: the contender reads)
}

func (k *laggingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if rev := k.stale.Load(); rev != 0 && k.reads.Add(1)%2 == 0 {
		if e, err := k.KeyValue.GetRevision(ctx, key, rev); err == nil {
			return e, nil
		}
	}
	return k.KeyValue.Get(ctx, key)
}

func (k *laggingKV) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	if !k.watches {
		return nil, errors.New("no watch in this test")
	}
	return k.KeyValue.Watch(ctx, keys, opts...)
}

// Reads that alternate between the key's revision and an older one (a lagging replica) do not
// restart the contender's count: it takes over the ttl after it first saw the newer revision.
func TestLaggingReplicaReadsDoNotRestartTheCount(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	a := b.replica("a")
	b.waitLeader(a)
	old := b.revision()
	b.clock.Advance(manualTiming.RenewInterval) // a renews once
	settle(t, b.clock, a.idle)
	if b.revision() <= old {
		t.Fatalf("a did not renew:%s", b.rec)
	}
	a.f.Kill()

	lag := &laggingKV{KeyValue: b.kv}
	lag.stale.Store(old)
	t0 := b.clock.Now()
	c := b.replica("b", func(c *Config) { c.KV = lag })
	settle(t, b.clock, c.idle)
	const step = 250 * time.Millisecond
	for !c.leader() {
		if b.clock.Now().Sub(t0) > manualTiming.TTL+manualTiming.RenewInterval {
			t.Fatalf("b does not lead %s after it first read the key (%d reads, every other one behind):%s",
				b.clock.Now().Sub(t0), lag.reads.Load(), b.rec)
		}
		b.clock.Advance(step)
		settle(t, b.clock, c.idle)
	}
	if lag.reads.Load() < 4 {
		t.Fatalf("b read the key %d times; the test needs reads that alternate", lag.reads.Load())
	}
	acq, _ := b.rec.find("b", ReasonAcquired)
	if acq.At.Sub(t0) < manualTiming.TTL {
		t.Errorf("b acquired %s after its first read, before the ttl", acq.At.Sub(t0))
	}
}

// refusingUpdates fails every Update while on, as a clustered bucket does while its stream
// elects a leader (reads are answered by any replica; writes need the leader). It cannot watch.
type refusingUpdates struct {
	jetstream.KeyValue
	on atomic.Bool
}

func (k *refusingUpdates) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	if k.on.Load() {
		return 0, errors.New("nats: no responders available for request")
	}
	return k.KeyValue.Update(ctx, key, value, revision)
}

func (k *refusingUpdates) Watch(context.Context, string, ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return nil, errors.New("no watch in this test")
}

// A takeover write that fails (the stream still electing its leader) degrades the contender,
// which starts its RecoverAfter reads at once, at the degraded pace, and writes again within
// about one renew interval, not after the read that was due next plus those reads.
func TestFailedTakeoverTriesAgainWithinOneInterval(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	a := b.replica("a")
	b.waitLeader(a)
	a.f.Kill()
	ref := &refusingUpdates{KeyValue: b.kv}
	ref.on.Store(true)
	t0 := b.clock.Now()
	c := b.replica("b", func(c *Config) { c.KV = ref })
	settle(t, b.clock, c.idle)
	const step = 50 * time.Millisecond
	for !c.l.Status().Degraded {
		if b.clock.Now().Sub(t0) > manualTiming.TTL+manualTiming.RenewInterval {
			t.Fatalf("b did not try to take over by the ttl:%s", b.rec)
		}
		b.clock.Advance(step)
		settle(t, b.clock, c.idle)
	}
	ref.on.Store(false)
	back := b.clock.Now()
	for !c.leader() {
		if b.clock.Now().Sub(back) > manualTiming.RenewInterval+step {
			t.Fatalf("b does not lead %s after its takeover failed:%s", b.clock.Now().Sub(back), b.rec)
		}
		b.clock.Advance(step)
		settle(t, b.clock, c.idle)
	}
	if n := b.rec.count("b", ReasonRecovered); n != 1 {
		t.Errorf("b recovered %d times before leading, want once (after RecoverAfter reads):%s", n, b.rec)
	}
}

// A contender whose reads failed (its store was away, as while NATS elects a new leader for the
// lease's stream) needs RecoverAfter good reads in a row before it may acquire, and makes them
// within about one renew interval: it probes faster while degraded.
func TestDegradedContenderRecoversWithinOneInterval(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	a := b.replica("a")
	b.waitLeader(a)
	c := b.replica("b", noWatch)
	settle(t, b.clock, c.idle)
	a.f.Kill()
	c.f.SetPartition(leasetest.Refuse)
	cut := b.clock.Now()
	for b.clock.Now().Before(cut.Add(2 * manualTiming.TTL)) {
		b.clock.Advance(250 * time.Millisecond)
		settle(t, b.clock, c.idle)
	}
	if st := c.l.Status(); st.Leader || !st.Degraded {
		t.Fatalf("b while its store is away: %+v", st)
	}
	c.f.SetPartition(leasetest.Connected)
	back := b.clock.Now()
	reads := c.f.Calls("get")
	const step = 50 * time.Millisecond
	for !c.leader() {
		if b.clock.Now().Sub(back) > manualTiming.RenewInterval+step {
			t.Fatalf("b does not lead %s after its store came back (%d reads):%s",
				b.clock.Now().Sub(back), c.f.Calls("get")-reads, b.rec)
		}
		b.clock.Advance(step)
		settle(t, b.clock, c.idle)
	}
	if n := c.f.Calls("get") - reads; n < manualTiming.RecoverAfter {
		t.Fatalf("b led after %d good reads, want at least RecoverAfter = %d", n, manualTiming.RecoverAfter)
	}
}

// A stalled renew loop (its goroutine frozen, as by SIGSTOP or a long GC pause) does not keep
// the term alive: the watchdog ends it at ttl − margin after the last successful renew was
// sent, while the loop is still frozen, and a contender acquires only later.
func TestStalledLoopStopsAtTheWatchdog(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after bool // the frozen renew reaches the store before the goroutine stalls
	}{{"before the renew is sent", false}, {"after the renew landed", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newManual(t)
			a := b.replica("a")
			aTerm := b.waitLeader(a)
			c := b.replica("b")
			settle(t, b.clock, a.idle, c.idle)

			b.clock.Advance(time.Second) // a renews
			settle(t, b.clock, a.idle, c.idle)
			lastSent := b.clock.Now()
			if want := lastSent.Add(manualTiming.Watchdog()); !aTerm.Deadline().Equal(want) {
				t.Fatalf("deadline after a renew sent at %s: %s, want %s", lastSent, aTerm.Deadline(), want)
			}
			rev := b.revision()
			a.f.Freeze(tc.after)
			updates := a.f.Calls("update")

			b.clock.Advance(time.Second) // a's next renew stalls
			waitFor(t, 10*time.Second, "a's renew to be made", func() bool { return a.f.Calls("update") > updates })
			landedAt := lastSent
			if tc.after {
				waitFor(t, 10*time.Second, "a's renew to land", func() bool { return b.revision() > rev })
				landedAt = b.clock.Now()
			}
			for b.clock.Now().Before(lastSent.Add(manualTiming.Watchdog())) {
				if aTerm.Context().Err() != nil {
					t.Fatalf("a's term ended at %s, before its watchdog deadline", b.clock.Now())
				}
				b.clock.Advance(250 * time.Millisecond)
				settle(t, b.clock, c.idle)
			}
			if !errors.Is(context.Cause(aTerm.Context()), ErrWatchdog) {
				t.Fatalf("a's term at its deadline, its loop frozen: cause %v", context.Cause(aTerm.Context()))
			}
			dog, _ := b.rec.find("a", ReasonWatchdog)
			if !dog.At.Equal(lastSent.Add(manualTiming.Watchdog())) {
				t.Errorf("watchdog at %s after the last successful renew was sent, want %s", dog.At.Sub(lastSent), manualTiming.Watchdog())
			}
			if c.leader() {
				t.Fatalf("b leads already:%s", b.rec)
			}
			for !c.leader() {
				b.clock.Advance(250 * time.Millisecond)
				settle(t, b.clock, c.idle)
				if b.clock.Now().Sub(lastSent) > 3*manualTiming.TTL {
					t.Fatalf("b never took over:%s", b.rec)
				}
			}
			acq, _ := b.rec.find("b", ReasonAcquired)
			if gap := acq.At.Sub(dog.At); gap < manualTiming.Margin {
				t.Errorf("b acquired %s after a's watchdog, less than the margin %s", gap, manualTiming.Margin)
			}
			if acq.At.Before(landedAt.Add(manualTiming.TTL)) {
				t.Errorf("b acquired %s after a's last write landed, before the ttl", acq.At.Sub(landedAt))
			}

			// a resumes: it finds its term over and follows b.
			a.f.Thaw()
			waitFor(t, 10*time.Second, "a to follow b", func() bool {
				st := a.l.Status()
				return !st.Leader && st.Record.Holder == "b"
			})
			if n := len(a.lead.returns()); n != 1 {
				t.Errorf("a's Lead returned %d times, want 1", n)
			}
		})
	}
}

// A renew that finds the revision moved ends the term at once: at the renew's own instant, not
// at the watchdog's. With a watch, the foreign write ends it even before the next renew.
func TestReplacedEndsTheTermAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		watch bool
	}{{"by the renew", false}, {"by the watch", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newManual(t)
			var mods []func(*Config)
			if !tc.watch {
				mods = append(mods, noWatch)
			}
			a := b.replica("a", mods...)
			aTerm := b.waitLeader(a)
			b.clock.Advance(time.Second) // one successful renew: its revision is known for sure
			settle(t, b.clock, a.idle)
			if aTerm.Context().Err() != nil {
				t.Fatal("the term ended")
			}

			intruder := Record{Holder: "intruder", Instance: "elsewhere"}
			if _, err := b.kv.Update(t.Context(), b.key, intruder.Encode(), b.revision()); err != nil {
				t.Fatal(err)
			}
			if !tc.watch {
				if aTerm.Context().Err() != nil {
					t.Fatal("without a watch the term ended before any call could tell")
				}
				b.clock.Advance(time.Second) // the renew
			}
			at := b.clock.Now()
			waitFor(t, 10*time.Second, "a's term to end", func() bool { return aTerm.Context().Err() != nil })
			if !errors.Is(context.Cause(aTerm.Context()), ErrReplaced) {
				t.Errorf("cause = %v, want ErrReplaced", context.Cause(aTerm.Context()))
			}
			tr, _ := b.rec.find("a", ReasonReplaced)
			if !tr.At.Equal(at) {
				t.Errorf("ended %s after the write was seen, want at once", tr.At.Sub(at))
			}
			if tc.watch && tr.By != "intruder" {
				t.Errorf("replaced by %q, want intruder", tr.By)
			}
			if got := metric(t, a.reg, "godwit_lease_is_leader", "lease", b.key); got != 0 {
				t.Errorf("godwit_lease_is_leader = %v after replacement", got)
			}
		})
	}
}

// A renew whose answer never came but which landed is not taken for a replacement: the next
// renew conflicts, the record is read back, it is ours, and the term goes on.
func TestUncertainRenewThatLandedKeepsTheTerm(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	a := b.replica("a", noWatch) // the conflict path, not the watch, must sort it out
	aTerm := b.waitLeader(a)
	rev := b.revision()

	a.f.SetLatency(100*time.Millisecond, time.Second) // lands soon, answers after the deadline
	updates := a.f.Calls("update")
	renewAt := b.clock.Now().Add(time.Second)
	b.clock.Advance(time.Second)
	waitFor(t, 10*time.Second, "the renew to be made", func() bool { return a.f.Calls("update") > updates })
	for b.revision() == rev {
		b.clock.Advance(50 * time.Millisecond) // up to the request landing (at 100 ms)
		// The request's goroutine needs real time to see the clock and land: moving the clock
		// on without waiting could carry it past the call's deadline first (a loaded machine).
		for wait := time.Now().Add(200 * time.Millisecond); b.revision() == rev && time.Now().Before(wait); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if deadline := renewAt.Add(manualTiming.CallTimeout); b.clock.Now().Before(deadline) {
		b.clock.Advance(deadline.Sub(b.clock.Now()))
	} else {
		t.Fatalf("the request landed at %s, after the call's deadline", b.clock.Now().Sub(renewAt))
	}
	a.f.SetLatency(0, 0)
	settle(t, b.clock, a.idle)
	if !a.l.Status().Degraded {
		t.Fatalf("a renew without an answer must degrade:%s", b.rec)
	}
	landed := b.revision()

	b.clock.Advance(renewAt.Add(time.Second).Sub(b.clock.Now())) // the next renew, on the old revision
	settle(t, b.clock, a.idle)
	if aTerm.Context().Err() != nil {
		t.Fatalf("the term ended: %v:%s", context.Cause(aTerm.Context()), b.rec)
	}
	if cur := b.revision(); cur <= landed {
		t.Fatalf("no renew after the conflict: revision %d, landed %d", cur, landed)
	}
	if want := b.clock.Now().Add(manualTiming.Watchdog()); !aTerm.Deadline().Equal(want) {
		t.Errorf("deadline %s, want %s: the renew after the conflict must have moved it", aTerm.Deadline(), want)
	}
	if b.rec.count("a", ReasonReplaced) != 0 {
		t.Errorf("a thought it was replaced:%s", b.rec)
	}
}

// An answer later than the call timeout is a failure, and a degraded leader counts as healthy
// again only after RecoverAfter renews in a row succeed. Answers alternately late and in time
// (the flapping case) keep it degraded without ending the term.
func TestLateAnswersDegradeAndRecoveryNeedsASuccessRun(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	a := b.replica("a")
	aTerm := b.waitLeader(a)

	next := b.clock.Now().Add(time.Second) // when the next renew starts
	renew := func(late bool) {
		t.Helper()
		if late {
			a.f.SetLatency(0, time.Second) // applied at once, answered after the deadline
		} else {
			a.f.SetLatency(0, 0)
		}
		updates := a.f.Calls("update")
		b.clock.Advance(next.Sub(b.clock.Now()))
		next = next.Add(time.Second)
		if late {
			waitFor(t, 10*time.Second, "the late renew to be made", func() bool { return a.f.Calls("update") > updates })
			b.clock.Advance(manualTiming.CallTimeout)
		}
		settle(t, b.clock, a.idle)
		if aTerm.Context().Err() != nil {
			t.Fatalf("the term ended: %v:%s", context.Cause(aTerm.Context()), b.rec)
		}
	}
	renewedNow := func() bool { return aTerm.Deadline().Equal(next.Add(-time.Second + manualTiming.Watchdog())) }

	renew(true)
	if f := metric(t, a.reg, "godwit_lease_renew_failures_total", "lease", b.key); !a.l.Status().Degraded || f != 1 {
		t.Fatalf("a late answer: degraded %v, renew failures %v", a.l.Status().Degraded, f)
	}
	for i := 1; i <= manualTiming.RecoverAfter; i++ {
		renew(false)
		if !renewedNow() {
			t.Fatalf("renew %d in time did not move the deadline", i)
		}
		if want := i < manualTiming.RecoverAfter; a.l.Status().Degraded != want {
			t.Fatalf("after %d renews in time: degraded %v, want %v", i, a.l.Status().Degraded, want)
		}
	}
	if b.rec.count("a", ReasonRenewedAfterDegraded) != 1 {
		t.Fatalf("want one renewed-after-degraded transition:%s", b.rec)
	}

	// Flapping: late, in time, late, in time… Degraded once, never recovered, never replaced.
	for i := 0; i < 8; i++ {
		renew(i%2 == 0)
	}
	if !a.l.Status().Degraded {
		t.Error("alternating late answers must keep the leader degraded")
	}
	if n, m := b.rec.count("a", ReasonDegraded), b.rec.count("a", ReasonRenewedAfterDegraded); n != 2 || m != 1 {
		t.Errorf("degraded %d times, recovered %d times; want 2 and 1:%s", n, m, b.rec)
	}
	if got, _ := a.l.Current(); got.Epoch != aTerm.Epoch || b.rec.count("", ReasonAcquired) != 1 {
		t.Errorf("the leadership changed:%s", b.rec)
	}
	if got := metric(t, a.reg, "godwit_lease_transitions_total", "lease", b.key, "reason", "degraded"); got != 2 {
		t.Errorf("godwit_lease_transitions_total{reason=degraded} = %v, want 2", got)
	}
}

// Term.Check reads the clock itself: in a process resumed after a pause, whose watchdog has not
// run yet, it already reports the term over.
func TestCheckWithoutTheWatchdog(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	a := b.replica("a")
	aTerm := b.waitLeader(a)
	if err := aTerm.Check(); err != nil {
		t.Fatalf("Check on a live term = %v", err)
	}
	b.clock.Jump(manualTiming.Watchdog()) // the watchdog's timer is late
	if err := aTerm.Check(); !errors.Is(err, ErrWatchdog) {
		t.Fatalf("Check past the deadline = %v, want ErrWatchdog", err)
	}
	if aTerm.Context().Err() == nil {
		t.Fatal("Check must end the term")
	}
	b.clock.Advance(0) // the late timer fires: nothing more happens
	if n := b.rec.count("a", ReasonWatchdog); n != 1 {
		t.Errorf("%d watchdog transitions, want 1", n)
	}
}

// Deleting or purging the key (an operator breaking the lease) ends the term, and the next
// term's epoch is still larger: epochs are revisions, which a delete or purge never lowers.
func TestDeleteAndPurgeNeverLowerTheEpoch(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	a := b.replica("a")
	prev := b.waitLeader(a)
	for _, op := range []string{"delete", "purge"} {
		var err error
		if op == "delete" {
			err = b.kv.Delete(t.Context(), b.key)
		} else {
			err = b.kv.Purge(t.Context(), b.key)
		}
		if err != nil {
			t.Fatal(err)
		}
		// The clock stands still: only the watch can tell, and it does.
		waitFor(t, 10*time.Second, "the term to end after the "+op, func() bool { return prev.Context().Err() != nil })
		if !errors.Is(context.Cause(prev.Context()), ErrLost) {
			t.Errorf("after %s: cause %v, want ErrLost", op, context.Cause(prev.Context()))
		}
		waitFor(t, 10*time.Second, "a new term", func() bool {
			cur, ok := a.l.Current()
			return ok && cur.Epoch != prev.Epoch
		})
		cur, _ := a.l.Current()
		if cur.Epoch <= prev.Epoch {
			t.Fatalf("after %s the epoch went from %d to %d", op, prev.Epoch, cur.Epoch)
		}
		prev = cur
	}
}

// Leader work that returns while its term is live hands the lease on: the record is released,
// another replica takes it at once, and this one sits out a ttl.
func TestLeadReturningHandsTheLeaseOn(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	quit := make(chan struct{})
	var terms atomic.Int32
	a := b.replica("a", func(c *Config) {
		c.Lead = func(t Term) {
			q := quit
			if terms.Add(1) > 1 {
				q = nil // later terms run until they end
			}
			select {
			case <-q:
			case <-t.Context().Done():
			}
		}
	})
	aTerm := b.waitLeader(a)
	c := b.replica("b")
	settle(t, b.clock, a.idle, c.idle)

	close(quit)
	bTerm := b.waitLeader(c) // the clock stands still: no ttl passed
	if !errors.Is(context.Cause(aTerm.Context()), ErrReleased) || bTerm.Epoch <= aTerm.Epoch {
		t.Fatalf("a: %v; epochs %d then %d", context.Cause(aTerm.Context()), aTerm.Epoch, bTerm.Epoch)
	}
	// b stops: the key is released again, but a sits out its ttl.
	stopAll(t, c.l)
	waitFor(t, 10*time.Second, "a to read the release", func() bool { return a.l.Status().Record.Released })
	for i := 0; i < 9; i++ {
		b.clock.Advance(time.Second)
		settle(t, b.clock, a.idle)
		if a.leader() {
			t.Fatalf("a acquired %d s after handing the lease on, within its ttl", i+1)
		}
	}
	b.clock.Advance(time.Second)
	b.waitLeader(a)
}

// Stop waits for the leader work; if it does not return in time, Stop says so and leaves the
// key to expire instead of releasing it under work still running.
func TestStopLeavesTheKeyWhenLeadDoesNotReturn(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	quit := make(chan struct{})
	a := b.replica("a", func(c *Config) { c.Lead = func(Term) { <-quit } })
	b.waitLeader(a)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err := a.l.Stop(ctx)
	if err == nil {
		t.Fatal("Stop returned nil while the leader work still runs")
	}
	e, gerr := b.kv.Get(t.Context(), b.key)
	if gerr != nil {
		t.Fatal(gerr)
	}
	if r, _ := DecodeRecord(e.Value(), e.Revision()); r.Released {
		t.Fatal("the key was released while the leader work still runs")
	}
	close(quit)
	if err := a.l.Stop(t.Context()); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("second Stop: %v", err)
	}
}

// resendKV sends an armed Update twice, as a client does that resends a request whose answer it
// lost (a stream leader change on a cluster): the first copy lands, the second conflicts with
// it, and the conflict is all the caller hears.
type resendKV struct {
	KV
	armed atomic.Bool
}

func (r *resendKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	if !r.armed.CompareAndSwap(true, false) {
		return r.KV.Update(ctx, key, value, revision)
	}
	if _, err := r.KV.Update(ctx, key, value, revision); err != nil {
		return 0, err
	}
	return r.KV.Update(ctx, key, value, revision)
}

// A renew that is answered with a conflict although its own first copy landed unseen (and no
// one else wrote) keeps the term: the key holds the leader's own record. Another holder's write
// still ends it (TestReplacedEndsTheTermAtOnce).
func TestRenewConflictWithItsOwnLandedCopyKeepsTheTerm(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	var rk *resendKV
	a := b.replica("a", noWatch, func(c *Config) { rk = &resendKV{KV: c.KV}; c.KV = rk })
	aTerm := b.waitLeader(a)
	rev := b.revision()

	rk.armed.Store(true)
	b.clock.Advance(time.Second) // the next renew, sent twice
	waitFor(t, 10*time.Second, "the resent renew", func() bool { return !rk.armed.Load() && b.revision() > rev })
	settle(t, b.clock, a.idle)
	if aTerm.Context().Err() != nil {
		t.Fatalf("the term ended: %v:%s", context.Cause(aTerm.Context()), b.rec)
	}
	if b.rec.count("a", ReasonReplaced) != 0 {
		t.Fatalf("a thought it was replaced by its own write:%s", b.rec)
	}
	landed := b.revision()
	b.clock.Advance(time.Second)
	settle(t, b.clock, a.idle)
	if cur := b.revision(); cur <= landed {
		t.Fatalf("no renew after the conflict: revision %d, landed %d", cur, landed)
	}
	if got, ok := a.l.Current(); !ok || got.Epoch != aTerm.Epoch {
		t.Fatalf("a leads %v (%v), want the same term at epoch %d", got, ok, aTerm.Epoch)
	}
}

// hidingKV serves reads of the key only up to revision upto (0: the latest), as a clustered
// bucket does with a renew that the stream's leader had proposed and replicated but not
// committed when it died: the renew is stored, and every reader sees it only once a new stream
// leader, elected seconds later, commits it. It cannot watch: the contender reads.
type hidingKV struct {
	jetstream.KeyValue
	upto atomic.Uint64
}

func (k *hidingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := k.KeyValue.Get(ctx, key)
	if u := k.upto.Load(); err == nil && u != 0 && e.Revision() > u {
		return k.KeyValue.GetRevision(ctx, key, u)
	}
	return e, err
}

func (k *hidingKV) Watch(context.Context, string, ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return nil, errors.New("no watch in this test")
}

// A renew that its holder sent just before it died, and that the contender sees only seconds
// later (committed after the stream's election), is timed from about when it was sent — the
// contender's first sight of the revision it replaced plus the gap the holder wrote in it — so
// the takeover comes a ttl after the send, not a ttl after the election. Never earlier than the
// ttl after the send: the holder's watchdog has stopped it by then. When the contender missed a
// revision in between, it cannot date the renew so, and times it from its own sight.
func TestRenewSeenLateIsTimedFromItsSend(t *testing.T) {
	t.Parallel()
	const election = 6 * time.Second
	for _, missed := range []bool{false, true} {
		name := "saw the revision it replaced"
		if missed {
			name = "missed the revision it replaced"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := newManual(t)
			a := b.replica("a")
			b.waitLeader(a)
			hide := &hidingKV{KeyValue: b.kv}
			c := b.replica("b", func(c *Config) { c.KV = hide })
			settle(t, b.clock, a.idle, c.idle) // b read a's first write
			if missed {
				hide.upto.Store(b.revision()) // b sees nothing newer until the end
			}
			b.clock.Advance(manualTiming.RenewInterval) // a renews: revision prev
			settle(t, b.clock, a.idle, c.idle)
			prev := b.revision()
			if !missed {
				hide.upto.Store(prev)
			}
			b.clock.Advance(manualTiming.RenewInterval) // a renews again, over prev: b does not see it
			settle(t, b.clock, a.idle, c.idle)
			sent := b.clock.Now()
			late := b.revision()
			a.f.Kill() // a dies at once
			e, err := b.kv.Get(t.Context(), b.key)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := DecodeRecord(e.Value(), e.Revision())
			if err != nil || late <= prev || rec.Prev != prev || rec.Gap() != manualTiming.RenewInterval {
				t.Fatalf("a's last renew: revision %d (previous %d), record %+v, %v; want it over %d, sent one renew interval later",
					late, prev, rec, err, prev)
			}
			if st := c.l.Status(); st.Record.Revision >= late {
				t.Fatalf("b saw revision %d before it was committed:%s", st.Record.Revision, b.rec)
			}

			const step = 250 * time.Millisecond
			for b.clock.Now().Before(sent.Add(election)) {
				b.clock.Advance(step)
				settle(t, b.clock, c.idle)
			}
			hide.upto.Store(0) // the new stream leader commits the renew: everyone sees it
			shown := b.clock.Now()
			for !c.leader() {
				if b.clock.Now().Sub(shown) > manualTiming.TTL+manualTiming.RenewInterval {
					t.Fatalf("b does not lead %s after the renew was shown:%s", b.clock.Now().Sub(shown), b.rec)
				}
				b.clock.Advance(step)
				settle(t, b.clock, c.idle)
			}
			acq, _ := b.rec.find("b", ReasonAcquired)
			dog, ok := b.rec.find("a", ReasonWatchdog)
			if !ok || !dog.At.Before(acq.At) {
				t.Fatalf("a's watchdog did not stop it before b acquired:%s", b.rec)
			}
			if acq.At.Before(sent.Add(manualTiming.TTL)) {
				t.Errorf("b acquired %s after a's last renew was sent, before the ttl", acq.At.Sub(sent))
			}
			if missed {
				if acq.At.Before(shown.Add(manualTiming.TTL)) {
					t.Errorf("b acquired %s after it first saw a renew it could not date, before the ttl", acq.At.Sub(shown))
				}
				return
			}
			// b saw prev at most one renew interval after it was sent (it reads that often).
			if limit := sent.Add(manualTiming.TTL + manualTiming.RenewInterval); acq.At.After(limit) {
				t.Errorf("b acquired %s after a's last renew was sent (%s after it saw it), want within ttl + renew interval = %s",
					acq.At.Sub(sent), acq.At.Sub(shown), limit.Sub(sent))
			}
		})
	}
}

// A replica being stopped does not take the lease: Stop, called while the contender's read of
// an absent key is on the wire, ends the loop without a term, so no leader work starts during
// the stop and the key is left for the other replicas.
func TestStopDuringAReadDoesNotAcquire(t *testing.T) {
	t.Parallel()
	b := newManual(t)
	f := leasetest.NewFaultKV(b.kv, b.clock)
	f.RefuseWatch(true)
	lead := &blockingLead{clock: b.clock}
	l, err := New(Config{Name: b.key, Holder: "a", KV: f, Timing: manualTiming, Clock: b.clock,
		Logger: testLogger(t), Lead: lead.lead, OnTransition: b.rec.on("a")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); stopAll(t, l) })
	f.Freeze(true) // the first read reaches the store; its answer waits
	if err := l.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the first read", func() bool { return f.Calls("get") > 0 })

	stopped := make(chan error, 1)
	go func() { stopped <- l.Stop(t.Context()) }()
	waitFor(t, 10*time.Second, "Stop to begin", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.stopCtx != nil
	})
	f.Thaw() // the read returns: the key is absent
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if n := b.rec.count("a", ReasonAcquired); n != 0 || f.Calls("create") != 0 {
		t.Fatalf("a replica being stopped acquired the lease (%d terms, %d creates):%s", n, f.Calls("create"), b.rec)
	}
	if _, err := b.kv.Get(t.Context(), b.key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the key after the stop: %v", err)
	}
}
