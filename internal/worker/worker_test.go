package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/fault"
)

// probe is a worker body that records its runs.
type probe struct {
	begins, loops atomic.Int32
	beginErr      error
	loop          func(ctx context.Context) error // default: run until stopped
	exits         chan Exit
}

func newProbe() *probe { return &probe{exits: make(chan Exit, 4)} }

func (p *probe) begin(context.Context) error {
	p.begins.Add(1)
	return p.beginErr
}

func (p *probe) run(ctx context.Context) error {
	p.loops.Add(1)
	if p.loop != nil {
		return p.loop(ctx)
	}
	<-ctx.Done()
	return ctx.Err()
}

func setup(t *testing.T, p *probe) (*Lifecycle, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	l := New(Config{Name: "probe", OnExit: func(e Exit) { p.exits <- e }, Registry: reg})
	t.Cleanup(func() { _ = l.Stop(context.Background()) })
	return l, reg
}

// value reads the probe's series of a gauge or counter; -1 if there is none.
func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "probe" {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Start, Stop, Start again: each Start begins a fresh run with its own begin; Stop is safe before
// Start and twice; a second Start while running does nothing; a stop is no exit.
func TestRestartable(t *testing.T) {
	t.Parallel()
	p := newProbe()
	l, reg := setup(t, p)
	ctx := t.Context()
	if err := l.Stop(ctx); err != nil || l.Running() {
		t.Fatalf("Stop before Start: %v, running %v", err, l.Running())
	}
	for round := int32(1); round <= 3; round++ {
		if err := l.Start(ctx, p.begin, p.run); err != nil {
			t.Fatalf("round %d: Start: %v", round, err)
		}
		if err := l.Start(ctx, p.begin, p.run); err != nil {
			t.Fatalf("round %d: second Start: %v", round, err)
		}
		waitFor(t, "loop running", func() bool { return p.loops.Load() == round })
		if !l.Running() || p.begins.Load() != round || value(t, reg, "godwit_worker_running") != 1 {
			t.Fatalf("round %d: running %v, begins %d, gauge %v", round, l.Running(), p.begins.Load(), value(t, reg, "godwit_worker_running"))
		}
		if err := l.Stop(ctx); err != nil {
			t.Fatalf("round %d: Stop: %v", round, err)
		}
		if err := l.Stop(ctx); err != nil {
			t.Fatalf("round %d: second Stop: %v", round, err)
		}
		if l.Running() || value(t, reg, "godwit_worker_running") != 0 {
			t.Fatalf("round %d: still running after Stop", round)
		}
	}
	if n := p.loops.Load(); n != 3 {
		t.Fatalf("loops = %d, want 3", n)
	}
	select {
	case e := <-p.exits:
		t.Fatalf("a stop was reported as an exit: %v", e)
	default:
	}
}

// The run's context outlives the context Start was called with: only Stop ends it.
func TestRunOutlivesStartContext(t *testing.T) {
	t.Parallel()
	p := newProbe()
	l, _ := setup(t, p)
	ctx, cancel := context.WithCancel(t.Context())
	if err := l.Start(ctx, p.begin, p.run); err != nil {
		t.Fatal(err)
	}
	cancel()
	waitFor(t, "loop running", func() bool { return p.loops.Load() == 1 })
	if !l.Running() {
		t.Fatal("the run ended with Start's context")
	}
}

// A begin that fails starts nothing; Start works once it succeeds.
func TestBeginFails(t *testing.T) {
	t.Parallel()
	p := newProbe()
	l, _ := setup(t, p)
	p.beginErr = errors.New("no leadership")
	if err := l.Start(t.Context(), p.begin, p.run); err == nil || !strings.Contains(err.Error(), "no leadership") {
		t.Fatalf("Start = %v, want begin's error", err)
	}
	if l.Running() || p.loops.Load() != 0 {
		t.Fatal("loop ran although begin failed")
	}
	p.beginErr = nil
	if err := l.Start(t.Context(), p.begin, p.run); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "loop running", func() bool { return p.loops.Load() == 1 })
}

// A run that ends by itself is reported once to OnExit with its error, and the worker can be
// started again; Stop after it is a no-op.
func TestEndsByItself(t *testing.T) {
	t.Parallel()
	p := newProbe()
	l, reg := setup(t, p)
	p.loop = func(context.Context) error { return fmt.Errorf("pass: %w", fault.ErrFenced) }
	if err := l.Start(t.Context(), p.begin, p.run); err != nil {
		t.Fatal(err)
	}
	e := <-p.exits
	if e.Worker != "probe" || !errors.Is(e, fault.ErrFenced) || !strings.Contains(e.Error(), "probe ended by itself") {
		t.Fatalf("exit = %v", e)
	}
	if l.Running() || value(t, reg, "godwit_worker_running") != 0 {
		t.Fatal("running after the run ended")
	}
	if err := l.Stop(t.Context()); err != nil {
		t.Fatalf("Stop after the end: %v", err)
	}
	p.loop = func(context.Context) error { return nil } // returns without being stopped
	if err := l.Start(t.Context(), p.begin, p.run); err != nil {
		t.Fatal(err)
	}
	if e := <-p.exits; !errors.Is(e, ErrReturned) {
		t.Fatalf("exit of a loop that returned nil = %v", e)
	}
	select {
	case e := <-p.exits:
		t.Fatalf("reported twice: %v", e)
	default:
	}
	if p.begins.Load() != 2 || p.loops.Load() != 2 {
		t.Fatalf("begins %d, loops %d; want 2 each", p.begins.Load(), p.loops.Load())
	}
}

// A panic is an exit carrying the value and the stack, and is counted.
func TestPanicIsReported(t *testing.T) {
	t.Parallel()
	p := newProbe()
	l, reg := setup(t, p)
	p.loop = func(context.Context) error { panic("boom") }
	if err := l.Start(t.Context(), p.begin, p.run); err != nil {
		t.Fatal(err)
	}
	e := <-p.exits
	var pe *PanicError
	if !errors.As(e, &pe) || pe.Value != "boom" || !strings.Contains(string(pe.Stack), "worker_test.go") {
		t.Fatalf("exit = %v", e)
	}
	if n := value(t, reg, "godwit_worker_panics_total"); n != 1 {
		t.Fatalf("godwit_worker_panics_total = %v, want 1", n)
	}
}

// A Stop that gives up waiting leaves the run stopping; Start waits for it rather than running
// a second loop beside it.
func TestRunsNeverOverlap(t *testing.T) {
	t.Parallel()
	p := newProbe()
	l, _ := setup(t, p)
	release := make(chan struct{})
	var inLoop atomic.Int32
	p.loop = func(ctx context.Context) error {
		if inLoop.Add(1) != 1 {
			t.Error("two runs at once")
		}
		defer inLoop.Add(-1)
		<-ctx.Done()
		<-release // a slow shutdown
		return nil
	}
	if err := l.Start(t.Context(), p.begin, p.run); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "loop running", func() bool { return p.loops.Load() == 1 })
	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := l.Stop(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop of a slow run = %v, want its deadline", err)
	}
	if l.Running() {
		t.Fatal("a stopping run counts as running")
	}
	short2, cancel2 := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel2()
	if err := l.Start(short2, p.begin, p.run); !errors.Is(err, context.DeadlineExceeded) || p.begins.Load() != 1 {
		t.Fatalf("Start while the last run stops = %v (begins %d), want to wait and give up", err, p.begins.Load())
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := l.Start(t.Context(), p.begin, p.run); err != nil {
			t.Errorf("Start once the last run stopped: %v", err)
		}
	})
	close(release)
	wg.Wait()
	waitFor(t, "second loop running", func() bool { return p.loops.Load() == 2 })
	if err := l.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// Start and Stop from many goroutines at once leave one consistent state (run with -race).
func TestConcurrentStartStop(t *testing.T) {
	t.Parallel()
	p := newProbe()
	l, _ := setup(t, p)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 20 {
				if i%2 == 0 {
					_ = l.Start(t.Context(), p.begin, p.run)
				} else {
					_ = l.Stop(t.Context())
				}
				_ = l.Running()
			}
		})
	}
	wg.Wait()
	if err := l.Stop(t.Context()); err != nil || l.Running() {
		t.Fatalf("final Stop: %v, running %v", err, l.Running())
	}
	if p.begins.Load() != p.loops.Load() {
		t.Fatalf("begins %d, loops %d", p.begins.Load(), p.loops.Load())
	}
}

// fake is a Worker that records the order of calls.
type fake struct {
	name     string
	log      *[]string
	startErr error
}

func (f fake) Start(context.Context) error {
	*f.log = append(*f.log, "start "+f.name)
	return f.startErr
}

func (f fake) Stop(context.Context) error {
	*f.log = append(*f.log, "stop "+f.name)
	return nil
}

var _ Worker = fake{}

func TestStartAllStopAll(t *testing.T) {
	t.Parallel()
	var log []string
	a, b, c := fake{"a", &log, nil}, fake{"b", &log, nil}, fake{"c", &log, errors.New("c refuses")}
	if err := StartAll(t.Context(), a, b, c); err == nil || !strings.Contains(err.Error(), "c refuses") {
		t.Fatalf("StartAll = %v", err)
	}
	if got := strings.Join(log, ", "); got != "start a, start b, start c, stop b, stop a" {
		t.Fatalf("calls: %s", got)
	}
	log = nil
	if err := StartAll(t.Context(), a, b); err != nil {
		t.Fatal(err)
	}
	if err := StopAll(t.Context(), a, b); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(log, ", "); got != "start a, start b, stop b, stop a" {
		t.Fatalf("calls: %s", got)
	}
}

// Helpers run beside the loop under the run's context: they end when the loop returns or the
// run is stopped, and the run is over only once they have returned.
func TestHelpersEndWithTheRun(t *testing.T) {
	t.Parallel()
	p := newProbe()
	l, _ := setup(t, p)
	var helping, helped atomic.Int32
	helper := func(ctx context.Context) {
		helping.Add(1)
		<-ctx.Done()
		helped.Add(1)
	}
	if err := l.Start(t.Context(), p.begin, p.run, helper, helper); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "helpers running", func() bool { return helping.Load() == 2 })
	if err := l.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if helped.Load() != 2 {
		t.Fatalf("Stop returned with %d of 2 helpers still running", 2-helped.Load())
	}
	// A loop that ends by itself ends its helpers before the end is reported.
	p.loop = func(context.Context) error { return errors.New("gave up") }
	if err := l.Start(t.Context(), p.begin, p.run, helper); err != nil {
		t.Fatal(err)
	}
	<-p.exits
	if helped.Load() != 3 {
		t.Fatal("the run was reported over with its helper still running")
	}
}

// A helper's panic ends the run and is reported as the run's end.
func TestHelperPanicEndsTheRun(t *testing.T) {
	t.Parallel()
	p := newProbe()
	l, reg := setup(t, p)
	if err := l.Start(t.Context(), p.begin, p.run, func(context.Context) { panic("watcher broke") }); err != nil {
		t.Fatal(err)
	}
	e := <-p.exits
	var pe *PanicError
	if !errors.As(e, &pe) || pe.Value != "watcher broke" {
		t.Fatalf("exit = %v, want the helper's panic", e)
	}
	if l.Running() || value(t, reg, "godwit_worker_panics_total") != 1 {
		t.Fatalf("running %v, panics %v", l.Running(), value(t, reg, "godwit_worker_panics_total"))
	}
}

// Nudges while one is pending make one; Nudge never blocks, running or not.
func TestNudge(t *testing.T) {
	t.Parallel()
	l := New(Config{Name: "probe"})
	for range 3 {
		l.Nudge()
	}
	select {
	case <-l.Nudged():
	default:
		t.Fatal("no nudge delivered")
	}
	select {
	case <-l.Nudged():
		t.Fatal("three nudges made two")
	default:
	}
}
