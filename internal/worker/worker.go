// Package worker is the one lifecycle of the hub's background workers — the migration
// controller, the sweep scheduler and liveness — so that each starts, stops and starts again
// the same way, and none ends without its owner hearing of it.
//
// A worker keeps a Lifecycle and implements Start and Stop with it:
//
//	func (c *Controller) Start(ctx context.Context) error { return c.life.Start(ctx, c.begin, c.run, c.watch) }
//	func (c *Controller) Stop(ctx context.Context) error  { return c.life.Stop(ctx) }
//
// The promises:
//   - Start runs begin under the caller's ctx (take the leadership, set up what one run must not
//     inherit from the last); if begin fails, Start returns its error and nothing runs. Then it
//     runs loop, and beside it the helpers that serve it (watchers of a bucket), each in a
//     goroutine of its own, under a context that outlives ctx and ends at Stop. When loop
//     returns, the helpers' context ends too, and the run is over once they have returned.
//     Start on a running worker does nothing.
//   - Nudge asks the loop for a pass as soon as possible: it receives from Nudged. Nudges while
//     one is pending make one pass.
//   - Stop cancels the run and waits, within its ctx, until loop and its helpers have returned.
//     It is safe before Start, twice, and after the run ended by itself. If ctx ends first, Stop
//     says so, and a later Start waits for the old run to finish before it begins a new one: two
//     runs of one worker never overlap.
//   - Start after Stop begins a fresh run. This is what a hub's leader-only workers need: started
//     when the hub takes the lead, stopped when it loses it, started again when it takes it back.
//   - A run that ends without Stop — loop returned (fault.ErrFenced: another hub leads), or it
//     or a helper panicked — is logged and reported once, as an Exit, to the Lifecycle's
//     OnExit; a panic is also counted in godwit_worker_panics_total. With no OnExit, a panic is
//     raised again (the process dies, as it would without the Lifecycle).
//     godwit_worker_running{worker} is 1 while a run is in progress.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/collector"
)

// Worker is what an owner starts and stops.
type Worker interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Exit reports a run that ended without Stop. By the time the owner reads it, the owner may have
// started the worker again; the Exit is about the run that ended.
type Exit struct {
	Worker string // the Lifecycle's name
	Err    error  // why: what loop returned (ErrReturned if nothing), or a *PanicError
}

func (e Exit) Error() string { return e.Worker + " ended by itself: " + e.Err.Error() }

func (e Exit) Unwrap() error { return e.Err }

// ErrReturned is the Err of an Exit whose loop returned nil without being stopped.
var ErrReturned = errors.New("worker: loop returned without being stopped")

// PanicError is the Err of an Exit whose loop or helper panicked.
type PanicError struct {
	Value any
	Stack []byte // of the goroutine that panicked
}

func (p *PanicError) Error() string { return fmt.Sprintf("panic: %v", p.Value) }

// errStopped is the cause with which Stop cancels a run's context.
var errStopped = errors.New("worker stopped")

// Config describes a Lifecycle.
type Config struct {
	// Name names the worker in logs, in Exit and in the metrics' worker label.
	Name   string
	Logger *slog.Logger
	// OnExit is told of a run that ended without Stop. It is called from the run's goroutine
	// after the run is over (Stop returns at once then), and must not block.
	OnExit func(Exit)
	// Registry receives godwit_worker_running and godwit_worker_panics_total; nil: not exported.
	Registry prometheus.Registerer
}

// Lifecycle starts and stops one worker's runs. See the package comment.
type Lifecycle struct {
	cfg     Config
	running prometheus.Gauge
	panics  prometheus.Counter

	nudge chan struct{}

	mu  sync.Mutex // serialises Start; guards cur and cur.stopping
	cur *run       // the latest run; nil before the first and after a completed Stop
}

// run is one Start..Stop.
type run struct {
	cancel   context.CancelCauseFunc
	done     chan struct{} // closed when loop and its helpers have returned
	stopping bool          // Stop has cancelled it (guarded by Lifecycle.mu)
}

// New returns the lifecycle of a worker.
func New(cfg Config) *Lifecycle {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Lifecycle{cfg: cfg, nudge: make(chan struct{}, 1),
		running: collector.Register(cfg.Registry, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "godwit_worker_running",
			Help: "1 while a background worker's run is in progress (a leader-only worker runs on the leading hub only).",
		}, []string{"worker"})).WithLabelValues(cfg.Name),
		panics: Panics(cfg.Registry).WithLabelValues(cfg.Name),
	}
}

// Panics returns godwit_worker_panics_total, registered with reg (nil: not exported): panics
// recovered in background workers, by worker. Every worker that recovers panics counts them
// here, whether it runs under a Lifecycle or not.
func Panics(reg prometheus.Registerer) *prometheus.CounterVec {
	return collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "godwit_worker_panics_total",
		Help: "Panics recovered in background workers; each one ends the process.",
	}, []string{"worker"}))
}

// Nudge asks the loop for a pass as soon as possible. It never blocks.
func (l *Lifecycle) Nudge() {
	select {
	case l.nudge <- struct{}{}:
	default:
	}
}

// Nudged delivers a Nudge to the loop.
func (l *Lifecycle) Nudged() <-chan struct{} { return l.nudge }

// Start runs begin, then loop and its helpers; see the package comment.
func (l *Lifecycle) Start(ctx context.Context, begin, loop func(context.Context) error, helpers ...func(context.Context)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.cur; r != nil {
		if !r.stopping {
			select {
			case <-r.done: // it ended by itself: start afresh
			default:
				return nil
			}
		}
		select {
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("%s: start: the previous run is still stopping: %w", l.cfg.Name, ctx.Err())
		}
		l.cur = nil
	}
	if begin != nil {
		if err := begin(ctx); err != nil {
			return err
		}
	}
	rctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	r := &run{cancel: cancel, done: make(chan struct{})}
	l.cur = r
	l.running.Set(1)
	go l.run(rctx, r, loop, helpers)
	return nil
}

func (l *Lifecycle) run(ctx context.Context, r *run, loop func(context.Context) error, helpers []func(context.Context)) {
	hctx, end := context.WithCancel(ctx)
	var wg sync.WaitGroup
	helperPanics := make(chan error, len(helpers))
	for _, h := range helpers {
		wg.Go(func() {
			if err := l.call(hctx, func(ctx context.Context) error { h(ctx); return nil }); err != nil {
				helperPanics <- err
				end() // a helper's panic ends the run
			}
		})
	}
	err := l.call(hctx, loop)
	end()
	wg.Wait()
	select {
	case p := <-helperPanics:
		if !isPanic(err) {
			err = p
		}
	default:
	}
	stopped := errors.Is(context.Cause(ctx), errStopped)
	r.cancel(nil)
	l.running.Set(0)
	close(r.done)
	var p *PanicError
	panicked := errors.As(err, &p)
	if stopped && !panicked {
		return
	}
	if err == nil {
		err = ErrReturned
	}
	e := Exit{Worker: l.cfg.Name, Err: err}
	if panicked {
		l.panics.Inc()
		l.cfg.Logger.Error("worker panicked", "worker", l.cfg.Name, "panic", fmt.Sprint(p.Value), "stack", string(p.Stack))
	} else {
		l.cfg.Logger.Error("worker ended by itself", "worker", l.cfg.Name, "err", err)
	}
	if l.cfg.OnExit != nil {
		l.cfg.OnExit(e)
		return
	}
	if panicked {
		panic(p) // nobody to tell: die as the panic would have without the Lifecycle
	}
}

func isPanic(err error) bool {
	var p *PanicError
	return errors.As(err, &p)
}

// call runs loop, turning a panic into a *PanicError.
func (l *Lifecycle) call(ctx context.Context, loop func(context.Context) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return loop(ctx)
}

// Stop ends the run in progress and waits for it; see the package comment.
func (l *Lifecycle) Stop(ctx context.Context) error {
	l.mu.Lock()
	r := l.cur
	if r != nil {
		r.stopping = true
		r.cancel(errStopped)
	}
	l.mu.Unlock()
	if r == nil {
		return nil
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return fmt.Errorf("%s: stop: %w", l.cfg.Name, ctx.Err())
	}
	l.mu.Lock()
	if l.cur == r {
		l.cur = nil
	}
	l.mu.Unlock()
	return nil
}

// Running reports whether a run is in progress: started, and neither stopped nor ended.
func (l *Lifecycle) Running() bool {
	l.mu.Lock()
	r := l.cur
	stopping := r != nil && r.stopping
	l.mu.Unlock()
	if r == nil || stopping {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// StartAll starts workers in order. If one fails, those already started are stopped again, in
// reverse order, and its error is returned.
func StartAll(ctx context.Context, ws ...Worker) error {
	for i, w := range ws {
		if err := w.Start(ctx); err != nil {
			return errors.Join(err, StopAll(context.WithoutCancel(ctx), ws[:i]...))
		}
	}
	return nil
}

// StopAll stops workers in reverse order, all of them even if some fail, and joins the errors.
func StopAll(ctx context.Context, ws ...Worker) error {
	var errs []error
	for i := len(ws) - 1; i >= 0; i-- {
		errs = append(errs, ws[i].Stop(ctx))
	}
	return errors.Join(errs...)
}
