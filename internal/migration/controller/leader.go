package controller

import (
	"context"
	"time"

	"godwit.dev/godwit/internal/store"
)

// LeadershipName is the leadership the migration controller runs under.
const LeadershipName = "controller"

// Leadership hands out a fencing epoch. Every write the controller makes carries it; a write
// with an epoch that is no longer current fails with fault.ErrFenced instead of racing.
type Leadership interface {
	// Acquire blocks until this hub leads and returns the epoch it leads with.
	Acquire(ctx context.Context) (int64, error)
}

// StoreLeadership is the single-hub leadership: acquiring bumps the epoch in the store, so a
// hub that starts always leads and any older holder's writes are fenced off. A lease-based
// implementation for several replicas plugs in behind the same interface.
type StoreLeadership struct {
	Store  store.Store
	Holder string
	Now    func() time.Time
}

// Acquire implements Leadership.
func (l StoreLeadership) Acquire(ctx context.Context) (int64, error) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	return l.Store.AcquireEpoch(ctx, LeadershipName, l.Holder, now())
}
