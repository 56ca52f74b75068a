package leasetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KV is the part of jetstream.KeyValue that FaultKV wraps (the same as lease.KV).
type KV interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

// Clock is what FaultKV times its latency with (the same as lease.Clock).
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// Partition is how calls fail while a FaultKV is cut off.
type Partition int

// Partition modes.
const (
	Connected Partition = iota
	Hang                // calls wait for their deadline, as when packets are dropped
	Refuse              // calls fail at once, as when the connection is refused
)

// Injected failures.
var (
	ErrPartitioned = errors.New("leasetest: partitioned")
	ErrClosed      = errors.New("leasetest: closed")
)

// FaultKV wraps a bucket and injects faults into the calls made through it, as seen by one
// process: latency (the request reaches the store half-way through it and lands even if the
// caller gave up), partitions (requests never reach the store; watch deliveries are lost), a
// freeze (the calling goroutine stalls, ignoring its deadline, like a process paused by
// SIGSTOP or a long GC pause) and a kill (frozen for good, watch gone). Close releases
// everything blocked, for the end of a test.
type FaultKV struct {
	kv    KV
	clock Clock

	mu          sync.Mutex
	toStore     time.Duration // latency before a request reaches the store
	fromStore   time.Duration // latency before the answer reaches the caller
	partition   Partition
	frozen      chan struct{} // non-nil while frozen; closed by Thaw
	freezeAfter bool          // frozen calls land before they stall
	killed      bool
	refuseWatch bool
	calls       map[string]int
	closed      chan struct{}
	isClosed    bool // guards bg.Add against Close's bg.Wait
	bg          sync.WaitGroup
}

var _ KV = (*FaultKV)(nil)

// NewFaultKV wraps kv; latency is timed on clock.
func NewFaultKV(kv KV, clock Clock) *FaultKV {
	return &FaultKV{kv: kv, clock: clock, calls: map[string]int{}, closed: make(chan struct{})}
}

// SetLatency delays every later request by toStore before it reaches the store and its answer
// by fromStore. A caller whose deadline passes first gets an error; the request lands anyway.
func (f *FaultKV) SetLatency(toStore, fromStore time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.toStore, f.fromStore = toStore, fromStore
}

// SetPartition cuts the wrapper off the store (Hang or Refuse) or reconnects it (Connected).
func (f *FaultKV) SetPartition(p Partition) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.partition = p
}

// RefuseWatch makes Watch fail, so that a lease relies on reading alone.
func (f *FaultKV) RefuseWatch(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuseWatch = on
}

// Freeze stalls the goroutine of every later call until Thaw; with afterCall the call reaches
// the store first and the goroutine stalls before it sees the answer.
func (f *FaultKV) Freeze(afterCall bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen == nil {
		f.frozen = make(chan struct{})
	}
	f.freezeAfter = afterCall
}

// Thaw lets frozen calls go on.
func (f *FaultKV) Thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen != nil {
		close(f.frozen)
		f.frozen = nil
	}
}

// Kill freezes every call for good and drops the watch: the process is gone.
func (f *FaultKV) Kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killed = true
}

// Close releases every blocked call with ErrClosed and waits for the writes still in flight.
func (f *FaultKV) Close() {
	f.mu.Lock()
	if !f.isClosed {
		f.isClosed = true
		close(f.closed)
	}
	f.mu.Unlock()
	f.Thaw()
	f.bg.Wait()
}

// goBG runs fn in a goroutine Close waits for; false if closed already.
func (f *FaultKV) goBG(fn func()) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isClosed {
		return false
	}
	f.bg.Add(1)
	go func() {
		defer f.bg.Done()
		fn()
	}()
	return true
}

// Calls returns how many calls of op ("get", "create", "update", "watch") were made.
func (f *FaultKV) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// enter counts the call and stalls it while killed or frozen before the call.
func (f *FaultKV) enter(op string) (frozenAfter chan struct{}, err error) {
	f.mu.Lock()
	f.calls[op]++
	killed, frozen, after := f.killed, f.frozen, f.freezeAfter
	f.mu.Unlock()
	if killed {
		<-f.closed
		return nil, ErrClosed
	}
	if frozen != nil && !after {
		select {
		case <-frozen:
		case <-f.closed:
			return nil, ErrClosed
		}
	}
	if frozen != nil && after {
		return frozen, nil
	}
	return nil, nil
}

// result is the outcome of one call.
type result[T any] struct {
	v   T
	err error
}

// do runs call as the faults say.
func do[T any](f *FaultKV, ctx context.Context, op string, call func(context.Context) (T, error)) (T, error) {
	var zero T
	frozenAfter, err := f.enter(op)
	if err != nil {
		return zero, err
	}
	f.mu.Lock()
	part, to, from := f.partition, f.toStore, f.fromStore
	f.mu.Unlock()
	var r result[T]
	switch {
	case part == Refuse:
		return zero, fmt.Errorf("%s: %w", op, ErrPartitioned)
	case part == Hang:
		select {
		case <-ctx.Done():
			return zero, fmt.Errorf("%s: %w: %w", op, ErrPartitioned, ctx.Err())
		case <-f.closed:
			return zero, ErrClosed
		}
	case to > 0 || from > 0:
		r = slow(f, ctx, to, from, call)
	default:
		r.v, r.err = call(ctx)
	}
	if frozenAfter != nil {
		select {
		case <-frozenAfter:
		case <-f.closed:
		}
	}
	return r.v, r.err
}

// slow sends the request after to, on a context of its own (it lands even if the caller gives
// up), and answers after from.
func slow[T any](f *FaultKV, ctx context.Context, to, from time.Duration, call func(context.Context) (T, error)) result[T] {
	res := make(chan result[T], 1)
	ok := f.goBG(func() {
		if !f.sleep(to) {
			res <- result[T]{err: ErrClosed}
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		v, err := call(cctx)
		cancel()
		if !f.sleep(from) {
			err = ErrClosed
		}
		res <- result[T]{v: v, err: err}
	})
	if !ok {
		return result[T]{err: ErrClosed}
	}
	select {
	case r := <-res:
		return r
	case <-ctx.Done():
		return result[T]{err: ctx.Err()}
	}
}

func (f *FaultKV) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	done := make(chan struct{})
	stop := f.clock.AfterFunc(d, func() { close(done) })
	select {
	case <-done:
		return true
	case <-f.closed:
		stop()
		return false
	}
}

// Get implements KV.
func (f *FaultKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	return do(f, ctx, "get", func(ctx context.Context) (jetstream.KeyValueEntry, error) { return f.kv.Get(ctx, key) })
}

// Create implements KV.
func (f *FaultKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	return do(f, ctx, "create", func(ctx context.Context) (uint64, error) { return f.kv.Create(ctx, key, value, opts...) })
}

// Update implements KV.
func (f *FaultKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	return do(f, ctx, "update", func(ctx context.Context) (uint64, error) { return f.kv.Update(ctx, key, value, revision) })
}

// Watch implements KV. Deliveries made while partitioned or killed are dropped.
func (f *FaultKV) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	f.mu.Lock()
	f.calls["watch"]++
	refuse := f.refuseWatch || f.killed || f.partition != Connected
	f.mu.Unlock()
	if refuse {
		return nil, fmt.Errorf("watch: %w", ErrPartitioned)
	}
	in, err := f.kv.Watch(ctx, keys, opts...)
	if err != nil {
		return nil, err
	}
	w := &faultWatcher{in: in, out: make(chan jetstream.KeyValueEntry), stop: make(chan struct{})}
	ok := f.goBG(func() {
		defer close(w.out)
		for {
			select {
			case <-w.stop:
				return
			case <-f.closed:
				return
			case e, ok := <-in.Updates():
				if !ok {
					return
				}
				f.mu.Lock()
				drop := f.killed || f.partition != Connected
				f.mu.Unlock()
				if drop {
					continue
				}
				select {
				case w.out <- e:
				case <-w.stop:
					return
				case <-f.closed:
					return
				}
			}
		}
	})
	if !ok {
		_ = in.Stop()
		return nil, ErrClosed
	}
	return w, nil
}

type faultWatcher struct {
	in       jetstream.KeyWatcher
	out      chan jetstream.KeyValueEntry
	stop     chan struct{}
	stopOnce sync.Once
}

func (w *faultWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.out }

func (w *faultWatcher) Stop() error {
	w.stopOnce.Do(func() { close(w.stop) })
	return w.in.Stop()
}
