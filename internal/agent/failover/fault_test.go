package failover

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/agent/failover/machine"
	spec "godwit.dev/godwit/internal/failover"
	"godwit.dev/godwit/internal/lease"
	"godwit.dev/godwit/internal/lease/leasetest"
	"godwit.dev/godwit/internal/wire"
)

// timed records transitions with the local time they were reported.
type timed struct {
	mu  sync.Mutex
	all []timedTransition
}

type timedTransition struct {
	at time.Time
	wire.FailoverTransition
}

func (e *timed) add(t wire.FailoverTransition) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, timedTransition{time.Now(), t})
}

// first returns when member first entered state to after since.
func (e *timed) first(member, to string, since time.Time) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, t := range e.all {
		if t.Member == member && t.To == to && t.Hook == "" && !t.at.Before(since) {
			return t.at, true
		}
	}
	return time.Time{}, false
}

// startFaulty starts a member whose calls to the bucket go through a FaultKV.
func startFaulty(t *testing.T, kv lease.KV, s spec.Canonical, self string, ev *timed) (*Member, *leasetest.FaultKV) {
	t.Helper()
	f := leasetest.NewFaultKV(kv, lease.RealClock{})
	t.Cleanup(f.Close)
	m, err := New(Config{Spec: s, Self: self, KV: f, Report: ev.add})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.Stop(ctx)
	})
	return m, f
}

// faultyPair is two members of one group on a fresh NATS server, each reaching the bucket through
// its own FaultKV, once one of them is a healthy primary (p, with its FaultKV fp) and the other
// its replica (r, fr).
type faultyPair struct {
	p, r     *Member
	pID, rID string
	fp, fr   *leasetest.FaultKV
}

func startFaultyPair(t *testing.T, s spec.Canonical, ev *timed) faultyPair {
	t.Helper()
	kv := bucket(t, startNATS(t), "pg")
	a, fa := startFaulty(t, kv, s, idA, ev)
	b, fb := startFaulty(t, kv, s, idB, ev)
	healthy := func(m *Member) bool { ro, st, _ := m.Status(); return ro == machine.Primary && st == machine.Healthy }
	eventually(t, "a primary", 10*time.Second, func() bool { return healthy(a) || healthy(b) })
	if healthy(a) {
		return faultyPair{p: a, r: b, pID: idA, rID: idB, fp: fa, fr: fb}
	}
	return faultyPair{p: b, r: a, pID: idB, rID: idA, fp: fb, fr: fa}
}

// The primary cut off from NATS fences itself before the replica can promote: the timing rule.
func TestPartitionedPrimaryFencesBeforeThePromotion(t *testing.T) {
	s := testSpec(filepath.Join(t.TempDir(), "hooks.log"))
	ev := &timed{}
	g := startFaultyPair(t, s, ev)
	p, r, pID, rID, fp := g.p, g.r, g.pID, g.rID, g.fp
	cut := time.Now()
	fp.SetPartition(leasetest.Refuse)
	eventually(t, "the replica promoted", 15*time.Second, func() bool {
		ro, st, _ := r.Status()
		return ro == machine.Primary && st == machine.Healthy
	})
	fenced, ok := ev.first(pID, string(machine.Fenced), cut)
	if !ok {
		t.Fatalf("the partitioned primary never fenced: %+v", ev.all)
	}
	// The promotion is the replica winning the record (promoting → activating), not an attempt:
	// a replica that started beside the primary may still try to bootstrap the group just after
	// the pair is up, and lose the compare-and-set to the primary's record.
	promoting, ok := ev.first(rID, string(machine.Activating), cut)
	if !ok {
		t.Fatalf("the replica is a healthy primary but never activated: %+v", ev.all)
	}
	if !fenced.Before(promoting) {
		for _, e := range ev.all {
			t.Logf("%s %s %s %s->%s %s %s", e.at.Format(time.StampMilli), e.Member[:2], e.Role, e.From, e.To, e.Hook, e.Reason)
		}
		t.Fatalf("fenced at %s, the replica promoted at %s", fenced.Format(time.StampMilli), promoting.Format(time.StampMilli))
	}
	t.Logf("fenced %s before the promotion", promoting.Sub(fenced).Round(time.Millisecond))
	// Reconnected, the old primary sees the newer epoch and demotes.
	fp.SetPartition(leasetest.Connected)
	eventually(t, "the old primary demoted", 10*time.Second, func() bool {
		ro, st, _ := p.Status()
		return ro == machine.Replica && st == machine.Watching
	})
}

// NATS answering later than heartbeatTimeout for less than failureThreshold heartbeats: no
// fence, no failover, no flap — and the late writes, which landed, are recognised as the
// primary's own.
func TestLatencyBlipDoesNotFlap(t *testing.T) {
	s := testSpec(filepath.Join(t.TempDir(), "hooks.log"))
	s.FailureThreshold, s.FailoverTimeout, s.SafetyMargin = 5, 2000, 500 // 200ms × 5 + 500ms < 2s
	ev := &timed{}
	g := startFaultyPair(t, s, ev)
	p, r, pID, fp := g.p, g.r, g.pID, g.fp
	_, _, epoch := p.Status()
	blip := time.Now()
	fp.SetLatency(150*time.Millisecond, 150*time.Millisecond) // 300ms > heartbeatTimeout 200ms
	time.Sleep(350 * time.Millisecond)
	fp.SetLatency(0, 0)
	time.Sleep(2500 * time.Millisecond) // past a failover timeout
	if ro, st, e := p.Status(); ro != machine.Primary || st != machine.Healthy || e != epoch {
		t.Fatalf("the primary is %s %s at epoch %d (was healthy at %d)", ro, st, e, epoch)
	}
	if ro, _, _ := r.Status(); ro != machine.Replica {
		t.Fatal("the replica promoted")
	}
	if _, fenced := ev.first(pID, string(machine.Fencing), blip); fenced {
		t.Fatalf("the primary fenced on a latency blip: %+v", ev.all)
	}
}

// A replica whose answers come back later than heartbeatTimeout goes failed, though its writes
// of its own key land (their revisions lost with the answers). Once the answers are in time
// again it adopts the write that landed and is eligible again: watching, not failed for good on
// one conflict after another.
func TestReplicaRecoversFromLostAnswers(t *testing.T) {
	s := testSpec(filepath.Join(t.TempDir(), "hooks.log"))
	ev := &timed{}
	g := startFaultyPair(t, s, ev)
	p, r, rID, fr := g.p, g.r, g.rID, g.fr
	eventually(t, "the replica watching", 10*time.Second, func() bool { _, st, _ := r.Status(); return st == machine.Watching })
	blip := time.Now()
	fr.SetLatency(10*time.Millisecond, 300*time.Millisecond) // writes land; answers late past heartbeatTimeout 200ms
	eventually(t, "the replica failed", 10*time.Second, func() bool { _, ok := ev.first(rID, string(machine.Failed), blip); return ok })
	fr.SetLatency(0, 0)
	healed := time.Now()
	eventually(t, "the replica watching again", 10*time.Second, func() bool {
		_, ok := ev.first(rID, string(machine.Watching), healed)
		return ok
	})
	if ro, st, _ := p.Status(); ro != machine.Primary || st != machine.Healthy {
		t.Fatalf("the primary is %s %s", ro, st)
	}
}

// A replica whose own key is deleted or purged by hand (an operator clearing member keys)
// writes it again and stays eligible: not a conflict on every later write, failed for good.
func TestReplicaRecreatesItsDeletedKey(t *testing.T) {
	s := testSpec(filepath.Join(t.TempDir(), "hooks.log"))
	ev := &timed{}
	kv := bucket(t, startNATS(t), "pg")
	a, _ := startFaulty(t, kv, s, idA, ev)
	b, _ := startFaulty(t, kv, s, idB, ev)
	isPrimary := func(m *Member) bool { ro, st, _ := m.Status(); return ro == machine.Primary && st == machine.Healthy }
	eventually(t, "a primary", 10*time.Second, func() bool { return isPrimary(a) || isPrimary(b) })
	r, rID := b, idB
	if isPrimary(b) {
		r, rID = a, idA
	}
	eventually(t, "the replica watching", 10*time.Second, func() bool { _, st, _ := r.Status(); return st == machine.Watching })
	for _, clear := range []func(context.Context, string, ...jetstream.KVDeleteOpt) error{kv.Delete, kv.Purge} {
		cleared := time.Now()
		if err := clear(t.Context(), MemberKey(rID)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(4*s.FailureThreshold) * time.Duration(s.HeartbeatInterval) * time.Millisecond)
		if at, ok := ev.first(rID, string(machine.Failed), cleared); ok {
			t.Fatalf("the replica failed %s after its key was cleared", at.Sub(cleared))
		}
		if _, err := kv.Get(t.Context(), MemberKey(rID)); err != nil {
			t.Fatalf("the replica's key: %v", err)
		}
	}
}

// A switchover asked while the primary of that epoch is still activating (its onPromote
// running) is carried out once it is healthy, not dropped: the control key is delivered once.
func TestSwitchoverAskedWhileActivating(t *testing.T) {
	s := testSpec(filepath.Join(t.TempDir(), "hooks.log"))
	s.Hooks["onPromote"] = spec.CanonicalHook{Command: "sleep 1", TimeoutMS: 3000}
	ev := &timed{}
	kv := bucket(t, startNATS(t), "pg")
	a, _ := startFaulty(t, kv, s, idA, ev)
	eventually(t, "a activating", 10*time.Second, func() bool { ro, st, _ := a.Status(); return ro == machine.Primary && st == machine.Activating })
	b, _ := startFaulty(t, kv, s, idB, ev)
	eventually(t, "b watching", 10*time.Second, func() bool { _, st, _ := b.Status(); return st == machine.Watching })
	ro, st, epoch := a.Status()
	if ro != machine.Primary || st != machine.Activating {
		t.Fatalf("a is %s %s: onPromote ended before the switchover could be asked", ro, st)
	}
	v, _ := json.Marshal(Control{SwitchoverTo: idB, SwitchoverEpoch: epoch})
	if _, err := kv.Create(t.Context(), KeyControl, v); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b primary", 10*time.Second, func() bool { ro, st, _ := b.Status(); return ro == machine.Primary && st == machine.Healthy })
}
