package leasetest

import (
	"context"
	"time"

	"godwit.dev/godwit/internal/store"
)

// StoreEpoch is a leadership for tests of one leader-only worker in one process: acquiring
// bumps the named epoch in the store, so the worker always leads and any older holder's writes
// are fenced off. It satisfies lease.Leadership. (The hub leads through the lease instead and
// has the store adopt the lease's epochs.)
type StoreEpoch struct {
	Store  store.Store
	Name   string
	Holder string
	Now    func() time.Time // default time.Now
}

// Acquire implements lease.Leadership.
func (l StoreEpoch) Acquire(ctx context.Context) (int64, error) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	return l.Store.AcquireEpoch(ctx, l.Name, l.Holder, now())
}
