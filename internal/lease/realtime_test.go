package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// These tests run on the real clock with a ttl long enough that a loaded machine does not
// change their outcome.

// rbundle is a real-clock test over a real bucket.
type rbundle struct {
	t   *testing.T
	ns  *natsServer
	kv  jetstream.KeyValue
	rec *recorder
	key string
}

func newReal(t *testing.T) *rbundle {
	ns := startNATS(t)
	kv, _ := ns.bucket(t)
	return &rbundle{t: t, ns: ns, kv: kv, rec: &recorder{}, key: "hub"}
}

// lease starts a lease on kv (b.kv if nil).
func (b *rbundle) lease(holder string, tm Timing, kv KV, reg prometheus.Registerer) (*Lease, *blockingLead) {
	t := b.t
	if kv == nil {
		kv = b.kv
	}
	lead := &blockingLead{clock: RealClock{}}
	l, err := New(Config{Name: b.key, Holder: holder, KV: kv, Timing: tm, Logger: testLogger(t), Registry: reg,
		Lead: lead.lead, OnTransition: b.rec.on(holder)})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAll(t, l) })
	return l, lead
}

func leaders(ls []*Lease) []*Lease {
	var out []*Lease
	for _, l := range ls {
		if l.Status().Leader {
			out = append(out, l)
		}
	}
	return out
}

// Replicas started together on an empty key: exactly one acquires, and every other one reads
// its record and stays a follower.
func TestExactlyOneOfManyAcquires(t *testing.T) {
	t.Parallel()
	b := newReal(t)
	tm := Timing{TTL: 10 * time.Second, RenewInterval: 250 * time.Millisecond, CallTimeout: 250 * time.Millisecond,
		Margin: 2 * time.Second, RecoverAfter: 2}
	var ls []*Lease
	for i := range 6 {
		l, _ := b.lease(fmt.Sprintf("r%d", i), tm, nil, nil)
		ls = append(ls, l)
	}
	var leader *Lease
	since := map[*Lease]time.Time{} // when each follower was first seen following the leader
	waitFor(t, 20*time.Second, "one leader, followed by all the others for 4 renew intervals", func() bool {
		ld := leaders(ls)
		if len(ld) != 1 {
			return false
		}
		leader = ld[0]
		done := true
		for _, l := range ls {
			if l == leader {
				continue
			}
			if _, ok := since[l]; !ok && l.Status().Record.Holder == leader.cfg.Holder {
				since[l] = time.Now()
			}
			done = done && !since[l].IsZero() && time.Since(since[l]) >= 4*tm.RenewInterval
		}
		return done
	})
	if n := len(leaders(ls)); n != 1 {
		t.Fatalf("%d leaders", n)
	}
	if n := b.rec.count("", ReasonAcquired); n != 1 {
		t.Fatalf("%d acquisitions, want 1:%s", n, b.rec)
	}
	ep := leader.Status().Epoch
	for _, l := range ls {
		if st := l.Status(); st.Epoch != ep {
			t.Errorf("%s sees epoch %d, the leader %d", st.Holder, st.Epoch, ep)
		}
	}
}

// A graceful stop ends the leader's term, waits for its work to return, and hands the lease
// on: a follower takes it without waiting for the ttl, under a larger epoch, and the history
// of the key shows the release.
func TestGracefulStopHandsTheLeaseOn(t *testing.T) {
	t.Parallel()
	b := newReal(t)
	tm := Timing{TTL: 30 * time.Second, RenewInterval: 500 * time.Millisecond, CallTimeout: 500 * time.Millisecond,
		Margin: 3 * time.Second, RecoverAfter: 2}
	regA := prometheus.NewRegistry()
	a, leadA := b.lease("a", tm, nil, regA)
	waitFor(t, 20*time.Second, "a to lead", func() bool { return a.Status().Leader })
	aTerm, _ := a.Current()
	c, _ := b.lease("b", tm, nil, nil)
	waitFor(t, 20*time.Second, "b to follow a", func() bool { return c.Status().Record.Holder == "a" })
	if got := metric(t, regA, "godwit_lease_is_leader", "lease", b.key); got != 1 {
		t.Errorf("godwit_lease_is_leader = %v while leading", got)
	}
	if got := metric(t, regA, "godwit_lease_epoch", "lease", b.key); got != float64(aTerm.Epoch) {
		t.Errorf("godwit_lease_epoch = %v, want %d", got, aTerm.Epoch)
	}

	stopAt := time.Now()
	stopAll(t, a)
	waitFor(t, tm.TTL/2, "b to take over, well before the ttl", func() bool { return c.Status().Leader })
	cTerm, _ := c.Current()

	if ret := leadA.returns(); len(ret) != 1 || !errors.Is(context.Cause(aTerm.Context()), ErrReleased) {
		t.Fatalf("a's Lead returned %d times; cause %v", len(ret), context.Cause(aTerm.Context()))
	}
	acq, _ := b.rec.find("b", ReasonAcquired)
	if ret := leadA.returns()[0]; !ret.Before(acq.At) {
		t.Errorf("b acquired at %s, before a's leader work returned at %s", acq.At, ret)
	}
	if d := acq.At.Sub(stopAt); d >= tm.TTL {
		t.Errorf("the handover took %s, not less than the ttl", d)
	}
	if cTerm.Epoch <= aTerm.Epoch {
		t.Errorf("epoch went from %d to %d", aTerm.Epoch, cTerm.Epoch)
	}
	if got := metric(t, regA, "godwit_lease_is_leader", "lease", b.key); got != 0 {
		t.Errorf("godwit_lease_is_leader = %v after Stop", got)
	}
	if got := metric(t, regA, "godwit_lease_transitions_total", "lease", b.key, "reason", "released"); got != 1 {
		t.Errorf("transitions{released} = %v", got)
	}

	hist, err := b.kv.History(t.Context(), b.key)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	for _, e := range hist {
		var r Record
		if json.Unmarshal(e.Value(), &r) == nil && r.Holder == "a" && r.Released && r.EpochAt(e.Revision()) == aTerm.Epoch {
			released = true
		}
	}
	if !released {
		t.Error("the key's history has no release by a")
	}
}

// A NATS server restart on the same store, shorter than the watchdog, does not change the
// leader: renews fail or time out during it, the lease is degraded, and the term goes on. A
// restart longer than the ttl ends the term; a replica leads again afterwards, under a larger
// epoch.
func TestNATSRestartMidLease(t *testing.T) {
	t.Parallel()
	b := newReal(t)
	tm := Timing{TTL: 10 * time.Second, RenewInterval: 500 * time.Millisecond, CallTimeout: 500 * time.Millisecond,
		Margin: 2 * time.Second, RecoverAfter: 2}
	a, _ := b.lease("a", tm, nil, nil)
	waitFor(t, 20*time.Second, "a to lead", func() bool { return a.Status().Leader })
	aTerm, _ := a.Current()
	c, _ := b.lease("b", tm, nil, nil)
	waitFor(t, 20*time.Second, "b to follow a", func() bool { return c.Status().Record.Holder == "a" })

	b.ns.restart()
	restarted := time.Now()
	waitFor(t, 30*time.Second, "a to renew after the restart", func() bool {
		return !a.Status().Degraded && aTerm.Deadline().After(restarted.Add(tm.Watchdog()))
	})
	if err := aTerm.Check(); err != nil {
		t.Fatalf("a's term ended over a short restart: %v:%s", err, b.rec)
	}
	if n := b.rec.count("", ReasonAcquired); n != 1 {
		t.Fatalf("the leader changed over a short restart:%s", b.rec)
	}

	// A long outage: the server stays down until a's watchdog ended its term.
	b.ns.stop()
	waitFor(t, 30*time.Second, "a's watchdog", func() bool { return aTerm.Context().Err() != nil })
	if !errors.Is(context.Cause(aTerm.Context()), ErrWatchdog) {
		t.Errorf("a's term ended with %v, want ErrWatchdog", context.Cause(aTerm.Context()))
	}
	b.ns.start()
	ls := []*Lease{a, c}
	waitFor(t, 60*time.Second, "a leader after the long outage", func() bool { return len(leaders(ls)) == 1 })
	now := leaders(ls)[0].Status()
	if now.Epoch <= aTerm.Epoch {
		t.Errorf("epoch after the outage %d, before %d", now.Epoch, aTerm.Epoch)
	}
	checkHistory(t, b.rec)
}
