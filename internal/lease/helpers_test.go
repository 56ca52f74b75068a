package lease

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"godwit.dev/godwit/internal/lease/leasetest"
)

// natsServer is an embedded JetStream server that a test can restart on the same store.
type natsServer struct {
	t    testing.TB
	dir  string
	port int
	srv  *server.Server
}

func startNATS(t testing.TB) *natsServer {
	t.Helper()
	n := &natsServer{t: t, dir: t.TempDir(), port: -1}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) start() {
	n.t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: n.port, JetStream: true,
		StoreDir: n.dir, NoLog: true, NoSigs: true})
	if err != nil {
		n.t.Fatalf("nats-server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		n.t.Fatal("nats-server did not start")
	}
	n.srv = srv
	n.port = srv.Addr().(*net.TCPAddr).Port
}

func (n *natsServer) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// restart stops the server and starts it again on the same port and store.
func (n *natsServer) restart() {
	n.t.Helper()
	n.stop()
	n.start()
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// bucket connects and returns the lease bucket (created on first use) and the connection.
func (n *natsServer) bucket(t testing.TB) (jetstream.KeyValue, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(n.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(ctx, BucketConfig("leases", 1))
	if err != nil {
		t.Fatalf("bucket: %v", err)
	}
	return kv, nc
}

// testLogger shows the lease's logs with -v only when GODWIT_LEASE_LOG is set; they are noisy.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("GODWIT_LEASE_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

var _ io.Writer = testWriter{}

// recorder keeps every transition of the leases it is given to.
type recorder struct {
	mu  sync.Mutex
	trs []Transition
	who []string
}

func (r *recorder) on(who string) func(Transition) {
	return func(tr Transition) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.trs = append(r.trs, tr)
		r.who = append(r.who, who)
	}
}

// find returns the first transition of who with reason, if any.
func (r *recorder) find(who string, reason Reason) (Transition, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, tr := range r.trs {
		if r.who[i] == who && tr.Reason == reason {
			return tr, true
		}
	}
	return Transition{}, false
}

func (r *recorder) count(who string, reason Reason) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for i, tr := range r.trs {
		if (who == "" || r.who[i] == who) && tr.Reason == reason {
			n++
		}
	}
	return n
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := ""
	for i, tr := range r.trs {
		s += fmt.Sprintf("\n  %s %s epoch=%d at=%s by=%s err=%v", r.who[i], tr.Reason, tr.Epoch, tr.At.Format("15:04:05.000000"), tr.By, tr.Err)
		if !tr.Deadline.IsZero() {
			s += fmt.Sprintf(" deadline=%s", tr.Deadline.Format("15:04:05.000000"))
		}
	}
	return s
}

// idleTracker follows a lease's loop: whether it is waiting, and until when.
type idleTracker struct {
	until atomic.Pointer[time.Time]
}

func track(l *Lease) *idleTracker {
	it := &idleTracker{}
	l.idle = func(until time.Time) {
		if until.IsZero() {
			it.until.Store(nil)
			return
		}
		it.until.Store(&until)
	}
	return it
}

// settled reports whether the loop waits for a time still ahead of clock.
func (it *idleTracker) settled(now time.Time) bool {
	u := it.until.Load()
	return u != nil && u.After(now)
}

// settle waits (in real time) until every loop has done what is due at the clock's reading
// and waits for a later time.
func settle(t testing.TB, clock *leasetest.ManualClock, its ...*idleTracker) {
	t.Helper()
	waitFor(t, 20*time.Second, "the lease loops to settle", func() bool {
		now := clock.Now()
		for _, it := range its {
			if !it.settled(now) {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stopAll stops leases, failing the test on error.
func stopAll(t testing.TB, ls ...*Lease) {
	t.Helper()
	for _, l := range ls {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := l.Stop(ctx); err != nil {
			t.Errorf("Stop %s: %v", l.cfg.Holder, err)
		}
		cancel()
	}
}

// metric returns the value of the series of name with the given label pairs.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for n := 0; n+1 < len(labels); n += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[n] && lp.GetValue() == labels[n+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	t.Fatalf("no metric %s %v", name, labels)
	return 0
}

// blockingLead is a Lead that runs until its term ends and records that it returned.
type blockingLead struct {
	mu       sync.Mutex
	returned []time.Time // when each term's Lead returned, on clock
	clock    Clock
	terms    []Term
}

func (b *blockingLead) lead(t Term) {
	b.mu.Lock()
	b.terms = append(b.terms, t)
	b.mu.Unlock()
	<-t.Context().Done()
	b.mu.Lock()
	b.returned = append(b.returned, b.clock.Now())
	b.mu.Unlock()
}

func (b *blockingLead) lastTerm() (Term, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.terms) == 0 {
		return Term{}, false
	}
	return b.terms[len(b.terms)-1], true
}

func (b *blockingLead) returns() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]time.Time(nil), b.returned...)
}
