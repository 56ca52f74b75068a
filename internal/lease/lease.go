// Package lease hands out leaderships with fencing epochs. A component that must run on one
// hub only (the migration controller, the sweep scheduler) acquires its named leadership and
// carries the epoch into every write; a write with an epoch that is no longer current fails with
// fault.ErrFenced instead of racing a newer leader.
package lease

import (
	"context"
	"time"

	"godwit.dev/godwit/internal/store"
)

// Leadership hands out a fencing epoch.
type Leadership interface {
	// Acquire blocks until this hub leads and returns the epoch it leads with.
	Acquire(ctx context.Context) (int64, error)
}

// StoreEpoch is the single-hub leadership: acquiring bumps the named epoch in the store, so a
// hub that starts always leads and any older holder's writes are fenced off. A lease that
// expires and is renewed for several replicas plugs in behind the same interface.
type StoreEpoch struct {
	Store  store.Store
	Name   string
	Holder string
	Now    func() time.Time // default time.Now
}

var _ Leadership = StoreEpoch{}

// Acquire implements Leadership.
func (l StoreEpoch) Acquire(ctx context.Context) (int64, error) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	return l.Store.AcquireEpoch(ctx, l.Name, l.Holder, now())
}
