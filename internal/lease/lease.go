package lease

import "context"

// Leadership hands out a fencing epoch to a leader-only worker.
type Leadership interface {
	// Acquire returns the epoch this replica leads with, once the store has taken it as the
	// newest; it fails with fault.ErrFenced when this replica does not lead (any more).
	Acquire(ctx context.Context) (int64, error)
}
