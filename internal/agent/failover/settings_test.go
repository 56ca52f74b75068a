package failover

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/failover/machine"
	spec "godwit.dev/godwit/internal/failover"
	"godwit.dev/godwit/internal/manifest"
	"godwit.dev/godwit/internal/syncbuf"
	"godwit.dev/godwit/internal/wire"
)

const (
	idC = "0c0c0c0c-0000-4000-8000-00000000000c"
	idD = "0d0d0d0d-0000-4000-8000-00000000000d"
)

// selectorSpec is testSpec with A named by id (priority 10) and B, C, D taken in by selector
// entries, as the hub resolves and publishes them: B with the highest priority but noFailover,
// C priority 50, D priority 20.
func selectorSpec(log string) spec.Canonical {
	s := testSpec(log)
	sel := func(k, v string) *manifest.LabelSelector {
		return &manifest.LabelSelector{MatchLabels: map[string]string{k: v}}
	}
	s.Members = []spec.CanonicalMember{{Agent: idA, Priority: 10},
		{Selector: sel("disk", "slow"), Priority: 100, NoFailover: true}, {Selector: sel("site", "b"), Priority: 50}}
	s.Resolved = []spec.Settings{
		{Agent: idA, Priority: 10, Entry: 0},
		{Agent: idB, Priority: 100, NoFailover: true, Entry: 1},
		{Agent: idC, Priority: 50, Entry: 2},
		{Agent: idD, Priority: 20, Entry: 2},
	}
	return s
}

// A member's eligibility and rank come from its resolved settings, selector members included:
// B (noFailover through its selector) may not promote and does not outrank anyone; C and D are
// ordered by their selector entries' priorities above A.
func TestStandingOfSelectorMembers(t *testing.T) {
	s := selectorSpec("/dev/null")
	for _, tc := range []struct {
		self     string
		eligible bool
		rank     int
	}{
		{idC, true, 0}, {idD, true, 1}, {idA, true, 2}, {idB, false, 0},
	} {
		me, rank, err := standing(s, tc.self)
		if err != nil || me.Eligible() != tc.eligible || rank != tc.rank {
			t.Errorf("standing(%s) = %+v rank %d, %v; want eligible %v rank %d", tc.self[:2], me, rank, err, tc.eligible, tc.rank)
		}
	}
	if _, _, err := standing(s, "0e0e0e0e-0000-4000-8000-00000000000e"); err == nil {
		t.Error("an agent outside the resolution is a member")
	}
}

// The handover target of a stopping primary is the eligible watching replica with the highest
// priority: never B, whose selector entry says noFailover, though its priority is the highest.
func TestBestReplicaSkipsSelectorNoFailover(t *testing.T) {
	kv := bucket(t, startNATS(t), "pg")
	for _, id := range []string{idB, idC, idD} {
		v, _ := json.Marshal(MemberStatus{Role: string(machine.Replica), State: string(machine.Watching)})
		if _, err := kv.Put(t.Context(), MemberKey(id), v); err != nil {
			t.Fatal(err)
		}
	}
	mb, err := New(Config{Spec: selectorSpec("/dev/null"), Self: idA, KV: kv})
	if err != nil {
		t.Fatal(err)
	}
	if got := mb.bestReplica(t.Context()); got != idC {
		t.Fatalf("bestReplica = %s, want C (priority 50 through its selector)", got)
	}
}

// On a real NATS: a member marked noFailover through a selector is never promoted — not by a
// switchover asked of the primary (which ignores it and keeps serving), not when the primary
// dies (the eligible replica takes over, the noFailover one never even tries).
func TestSelectorNoFailoverMemberIsNeverPromoted(t *testing.T) {
	kv := bucket(t, startNATS(t), "pg")
	s := selectorSpec(filepath.Join(t.TempDir(), "hooks.log"))
	s.Resolved = s.Resolved[:3] // A, B, C
	logs := &syncbuf.Buffer{}
	ev := &events{}
	start := func(ctx context.Context, self string) *Member {
		m, err := New(Config{Spec: s, Self: self, KV: kv, Report: ev.add, Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return m
	}
	ctxA, crashA := context.WithCancel(t.Context())
	ctxC, crashC := context.WithCancel(t.Context())
	defer crashA()
	defer crashC()
	a, b, c := start(ctxA, idA), start(t.Context(), idB), start(ctxC, idC)
	healthy := func(m *Member) bool { r, st, _ := m.Status(); return r == machine.Primary && st == machine.Healthy }
	eventually(t, "a primary", 10*time.Second, func() bool { return healthy(a) || healthy(c) })
	p, r, crash := a, c, crashA
	if healthy(c) {
		p, r, crash = c, a, crashC
	}
	_, _, epoch := p.Status()
	v, _ := json.Marshal(Control{SwitchoverTo: idB, SwitchoverEpoch: epoch})
	if _, err := kv.Put(t.Context(), KeyControl, v); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the switchover to B ignored", 5*time.Second, func() bool { return strings.Contains(logs.String(), "switchover ignored") })
	if _, st, e := p.Status(); st != machine.Healthy || e != epoch {
		t.Fatalf("the primary is %s at epoch %d after a switchover to a noFailover member (was healthy at %d)", st, e, epoch)
	}
	crash()
	eventually(t, "the eligible replica promoted", 10*time.Second, func() bool { return healthy(r) })
	if ro, _, _ := b.Status(); ro != machine.Replica {
		t.Fatalf("B is %s", ro)
	}
	if n := ev.count(func(t wire.FailoverTransition) bool { return t.Member == idB && t.To == string(machine.Promoting) }); n != 0 {
		t.Fatalf("B, noFailover through its selector, started promoting %d times", n)
	}
}
