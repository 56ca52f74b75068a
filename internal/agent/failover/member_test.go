package failover

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"godwit.dev/godwit/internal/agent/failover/machine"
	spec "godwit.dev/godwit/internal/failover"
	"godwit.dev/godwit/internal/lease"
	"godwit.dev/godwit/internal/wire"
)

const (
	idA = "0a0a0a0a-0000-4000-8000-00000000000a"
	idB = "0b0b0b0b-0000-4000-8000-00000000000b"
)

func startNATS(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)
}

func bucket(t *testing.T, url, group string) jetstream.KeyValue {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(ctx, BucketConfig("test", group, 1))
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// testSpec is a fast group whose hooks append "<hook> <member> <epoch>" to log.
func testSpec(log string) spec.Canonical {
	hook := func(name string, ms int64) spec.CanonicalHook {
		return spec.CanonicalHook{Command: `echo "` + name + ` $GODWIT_FAILOVER_MEMBER $GODWIT_FAILOVER_EPOCH" >> ` + log, TimeoutMS: ms}
	}
	return spec.Canonical{Name: "pg", Members: []spec.CanonicalMember{{Agent: idA, Priority: 10}, {Agent: idB}},
		HeartbeatInterval: 100, HeartbeatTimeout: 200, FailureThreshold: 3, FailoverTimeout: 1200, SafetyMargin: 400,
		RecoveryThreshold: 2, HandoverOnStop: true,
		Hooks: map[string]spec.CanonicalHook{"onPromote": hook("onPromote", 2000), "onFence": hook("onFence", 400), "onDemote": hook("onDemote", 2000)}}
}

type events struct {
	mu  sync.Mutex
	all []wire.FailoverTransition
}

func (e *events) add(t wire.FailoverTransition) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, t)
}

func (e *events) count(f func(wire.FailoverTransition) bool) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, t := range e.all {
		if f(t) {
			n++
		}
	}
	return n
}

func eventually(t *testing.T, what string, timeout time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startMember(t *testing.T, ctx context.Context, kv jetstream.KeyValue, s spec.Canonical, self string, ev *events, reg prometheus.Registerer) *Member {
	t.Helper()
	m, err := New(Config{Spec: s, Self: self, KV: kv, Report: ev.add, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

// Two members on a real embedded NATS: exactly one becomes primary; a crashed primary (its
// loop gone, no fence) is replaced after failoverTimeout and not before; a graceful stop of
// the new primary hands over at once; the returning first member reconciles as replica.
func TestMembersOnRealNATS(t *testing.T) {
	url := startNATS(t)
	kv := bucket(t, url, "pg")
	log := filepath.Join(t.TempDir(), "hooks.log")
	s := testSpec(log)
	ev := &events{}
	ctxA, crashA := context.WithCancel(t.Context())
	ctxB, crashB := context.WithCancel(t.Context())
	defer crashA()
	defer crashB()
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a := startMember(t, ctxA, kv, s, idA, ev, regA)
	b := startMember(t, ctxB, kv, s, idB, ev, regB)
	primary := func(m *Member) bool { r, st, _ := m.Status(); return r == machine.Primary && st == machine.Healthy }
	eventually(t, "one primary", 10*time.Second, func() bool { return primary(a) || primary(b) })
	time.Sleep(300 * time.Millisecond) // a second promotion would have happened by now
	if primary(a) && primary(b) {
		t.Fatal("two primaries")
	}
	second, firstID, secondID, crash := b, idA, idB, crashA
	if primary(b) {
		second, firstID, secondID, crash = a, idB, idA, crashB
	}
	// Crash the primary: its loop ends with no fence (as a kill -9 would leave it).
	crash()
	crashed := time.Now()
	eventually(t, "the replica promoted", 10*time.Second, func() bool { return primary(second) })
	// Not before failoverTimeout: measured between the dead primary's last write of the record and
	// the promoting write, both on the store's clock (the last heartbeat may precede the crash).
	t.Logf("promoted %s after the crash", time.Since(crashed).Round(time.Millisecond))
	hist, err := kv.History(t.Context(), KeyRecord)
	if err != nil {
		t.Fatal(err)
	}
	var promoted, last time.Time
	for i := len(hist) - 1; i >= 0 && last.IsZero(); i-- {
		o := observation(lease.EntryOf(hist[i]))
		switch {
		case promoted.IsZero() && o.Record.Primary == secondID && o.Record.Epoch == 0:
			promoted = hist[i].Created()
		case !promoted.IsZero() && o.Record.Primary == firstID:
			last = hist[i].Created()
		}
	}
	if promoted.IsZero() || last.IsZero() {
		t.Fatalf("no promotion after a write of the first primary in the record's history")
	}
	if d := promoted.Sub(last); d < time.Duration(s.FailoverTimeout)*time.Millisecond {
		t.Fatalf("promoted %s after the dead primary's last heartbeat, before failoverTimeout", d)
	}
	_, _, epochB := second.Status()
	if epochB == 0 {
		t.Fatal("no epoch")
	}
	// The old primary returns: it reads the newer record and joins as replica, no failover.
	// The surviving primary's metrics say so.
	reg := regB
	if second == a {
		reg = regA
	}
	if v := gauge(t, reg, "godwit_failover_is_primary"); v != 1 {
		t.Fatalf("godwit_failover_is_primary = %v on the new primary", v)
	}
	if v := gauge(t, reg, "godwit_failover_epoch"); v != float64(epochB) {
		t.Fatalf("godwit_failover_epoch = %v, want %d", v, epochB)
	}
	a2 := startMember(t, t.Context(), kv, s, firstID, ev, nil)
	eventually(t, "a watches", 5*time.Second, func() bool { r, st, _ := a2.Status(); return r == machine.Replica && st == machine.Watching })
	// A graceful stop of b hands over to a without waiting for the timeout.
	stopped := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := second.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a took over", 5*time.Second, func() bool { return primary(a2) })
	if d := time.Since(stopped); d >= time.Duration(s.FailoverTimeout)*time.Millisecond {
		t.Logf("handover took %s (no faster than a failover on this machine)", d)
	}
	hooks, _ := os.ReadFile(log)
	if !strings.Contains(string(hooks), "onFence "+secondID) {
		t.Fatalf("the stopping primary did not fence first:\n%s", hooks)
	}
	if ev.count(func(t wire.FailoverTransition) bool { return t.Hook == "onPromote" && t.HookResult == "succeeded" }) < 3 {
		t.Fatalf("hook results not reported: %+v", ev.all)
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// A member started while its group is paused (the control key written before it started, on
// the JetStream KV that `godwit failover member` uses) is paused from its start: it does not
// bootstrap the group as primary during the maintenance, and does once the pause is lifted.
func TestMemberStartedDuringAPauseIsPaused(t *testing.T) {
	url := startNATS(t)
	kv := bucket(t, url, "pg")
	s := testSpec(filepath.Join(t.TempDir(), "hooks.log"))
	if _, err := kv.Put(t.Context(), KeyControl, []byte(`{"paused": true}`)); err != nil {
		t.Fatal(err)
	}
	a := startMember(t, t.Context(), kv, s, idA, &events{}, nil)
	// Past the time it would take to bootstrap (its rank's delay) and a failover timeout.
	time.Sleep(time.Duration(s.FailoverTimeout+2*s.HeartbeatInterval) * time.Millisecond)
	if r, st, _ := a.Status(); r == machine.Primary {
		t.Fatalf("a member started during a pause became primary (%s)", st)
	}
	if _, err := kv.Get(t.Context(), KeyRecord); err == nil {
		t.Fatal("the group record was written during the pause")
	}
	if _, err := kv.Put(t.Context(), KeyControl, []byte(`{"paused": false}`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a primary once the pause is lifted", 10*time.Second, func() bool { r, _, _ := a.Status(); return r == machine.Primary })
}
