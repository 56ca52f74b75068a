package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/fault"
)

// KV is the part of jetstream.KeyValue a lease uses; tests wrap it to add latency, errors and
// partitions. Watch is only an accelerator: a lease that cannot watch polls.
type KV interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

var _ KV = jetstream.KeyValue(nil)

// Errors of store calls, beside fault.ErrConflict (the revision moved: nothing was written) and
// fault.ErrNotFound (the key is absent).
var (
	// ErrTimeout: the call did not answer within its deadline. A write may still land.
	ErrTimeout = fmt.Errorf("store call timed out: %w", fault.ErrUnavailable)
	// ErrLate: the write was applied, but the answer came after the deadline. It counts as a
	// failure like ErrTimeout; the revision returned with it is valid.
	ErrLate = fmt.Errorf("store answered after the call deadline: %w", fault.ErrUnavailable)
)

// OutcomeUnknown reports whether a write that returned err may or may not have been applied:
// any failure but a conflict, an absent key or a late answer (which was applied).
func OutcomeUnknown(err error) bool {
	return err != nil && !errors.Is(err, fault.ErrConflict) && !errors.Is(err, fault.ErrNotFound) &&
		!errors.Is(err, ErrLate)
}

// Entry is one read of a key.
type Entry struct {
	Revision uint64 // the bucket's sequence number of the write
	// Created is the store's time of the write, on the server's clock: use it to compare two
	// writes, or to show an operator when, never against the local clock.
	Created time.Time
	Value   []byte
	Deleted bool // a delete or purge marker (seen by a watch; Read reports such a key absent)
}

// Cell is one key of a bucket written only by compare-and-set, every call bounded by Timeout
// on Clock. It is a value; copies share nothing but the bucket.
type Cell struct {
	KV      KV
	Key     string
	Timeout time.Duration
	Clock   Clock // nil: RealClock
}

func (c Cell) clock() Clock {
	if c.Clock == nil {
		return RealClock{}
	}
	return c.Clock
}

// call runs fn under the cell's deadline and turns a late success into ErrLate.
func (c Cell) call(ctx context.Context, op string, fn func(context.Context) error) error {
	clk := c.clock()
	cctx, cancel := withTimeout(ctx, clk, c.Timeout, ErrTimeout)
	defer cancel()
	start := clk.Now()
	err := fn(cctx)
	late := clk.Now().Sub(start) > c.Timeout || errors.Is(context.Cause(cctx), ErrTimeout)
	switch {
	case err == nil && late:
		return fmt.Errorf("lease: %s %s: %w", op, c.Key, ErrLate)
	case err == nil:
		return nil
	case isConflict(err):
		return fmt.Errorf("lease: %s %s: revision moved: %w", op, c.Key, fault.ErrConflict)
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return fmt.Errorf("lease: %s %s: %w", op, c.Key, fault.ErrNotFound)
	case late:
		return fmt.Errorf("lease: %s %s: %w (%v)", op, c.Key, ErrTimeout, err)
	default:
		return fmt.Errorf("lease: %s %s: %w: %w", op, c.Key, fault.ErrUnavailable, err)
	}
}

// Read returns the key's current entry, or an error wrapping fault.ErrNotFound when it is
// absent or deleted.
func (c Cell) Read(ctx context.Context) (Entry, error) {
	var e Entry
	err := c.call(ctx, "read", func(ctx context.Context) error {
		kve, err := c.KV.Get(ctx, c.Key)
		if err != nil {
			return err
		}
		e = EntryOf(kve)
		return nil
	})
	if errors.Is(err, ErrLate) {
		return Entry{}, err
	}
	return e, err
}

// Create writes value if the key is absent or deleted; fault.ErrConflict if it holds a value.
// On ErrLate the returned revision is valid.
func (c Cell) Create(ctx context.Context, value []byte) (uint64, error) {
	var rev uint64
	err := c.call(ctx, "create", func(ctx context.Context) (err error) {
		rev, err = c.KV.Create(ctx, c.Key, value)
		return err
	})
	if err != nil && !errors.Is(err, ErrLate) {
		rev = 0
	}
	return rev, err
}

// Swap writes value if the key's latest revision is still rev (a delete marker's included);
// fault.ErrConflict if it moved. On ErrLate the returned revision is valid.
func (c Cell) Swap(ctx context.Context, rev uint64, value []byte) (uint64, error) {
	var next uint64
	err := c.call(ctx, "update", func(ctx context.Context) (err error) {
		next, err = c.KV.Update(ctx, c.Key, value, rev)
		return err
	})
	if err != nil && !errors.Is(err, ErrLate) {
		next = 0
	}
	return next, err
}

// EntryOf converts a key-value entry.
func EntryOf(e jetstream.KeyValueEntry) Entry {
	return Entry{Revision: e.Revision(), Created: e.Created(), Value: e.Value(),
		Deleted: e.Operation() != jetstream.KeyValuePut}
}

// isConflict reports a failed compare-and-set: nats.go reports it as ErrKeyExists (Create),
// ErrKeyRevisionMismatch (Update), or a bare "wrong last sequence" API error (Create over a
// delete marker), coded 10071, or 10164 on a replicated stream.
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
