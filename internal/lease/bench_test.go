package lease

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/lease/leasetest"
)

// benchTiming is short, so that a benchmark of many takeovers takes seconds.
var benchTiming = Timing{TTL: 500 * time.Millisecond, RenewInterval: 100 * time.Millisecond,
	CallTimeout: 100 * time.Millisecond, Margin: 150 * time.Millisecond, RecoverAfter: 2}

// BenchmarkTakeoverAfterKill measures the time from the holder's death (it stops renewing, as
// after kill -9) to a watching contender's acquisition, against the ttl. Expected: between
// ttl − renewInterval and ttl, plus one store round trip: the contender counts from the last
// renew it saw.
func BenchmarkTakeoverAfterKill(b *testing.B) {
	benchFailover(b, func(f *leasetest.FaultKV, _ *Lease) { f.Kill() })
}

// BenchmarkHandoverAfterStop measures the same after a graceful Stop: the release is taken
// over at once, without waiting for the ttl.
func BenchmarkHandoverAfterStop(b *testing.B) {
	benchFailover(b, func(_ *leasetest.FaultKV, l *Lease) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.Stop(ctx); err != nil {
			b.Fatal(err)
		}
	})
}

func benchFailover(b *testing.B, fail func(*leasetest.FaultKV, *Lease)) {
	ns := startNATS(b)
	kv, _ := ns.bucket(b)
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		took = append(took, failoverOnce(b, kv, fmt.Sprintf("bench-%d", i), time.Duration(i%10)*benchTiming.RenewInterval/10, fail))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(took[0]), "min-ms")
	b.ReportMetric(ms(took[len(took)/2]), "median-ms")
	b.ReportMetric(ms(took[(len(took)*99)/100]), "p99-ms")
	b.ReportMetric(ms(benchTiming.TTL), "ttl-ms")
	b.ReportMetric(0, "ns/op")
}

// failoverOnce runs a holder and a contender on key, fails the holder with fail once the
// contender watches it and after a further delay (to fail at varied points of the renew cycle),
// and returns how long the contender took to acquire.
func failoverOnce(b *testing.B, kv jetstream.KeyValue, key string, delay time.Duration, fail func(*leasetest.FaultKV, *Lease)) time.Duration {
	rec := &recorder{}
	fa := leasetest.NewFaultKV(kv, RealClock{})
	defer fa.Close()
	mk := func(holder string, f KV) *Lease {
		l, err := New(Config{Name: key, Holder: holder, KV: f, Timing: benchTiming, OnTransition: rec.on(holder),
			Lead: func(t Term) { <-t.Context().Done() }})
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		return l
	}
	a := mk("a", fa)
	waitFor(b, 10*time.Second, "a to lead", func() bool { return a.Status().Leader })
	c := mk("b", kv)
	waitFor(b, 10*time.Second, "b to follow", func() bool { return c.Status().Record.Holder == "a" })
	time.Sleep(delay)
	failedAt := time.Now()
	fail(fa, a)
	waitFor(b, 10*time.Second, "b to lead", func() bool { return c.Status().Leader })
	acq, _ := rec.find("b", ReasonAcquired)
	fa.Close()
	stopAll(b, a, c)
	return acq.At.Sub(failedAt)
}
