package bench

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// The back-off of a simulated agent's failed request, as the agent's outbox does it: doubling
// from retryFirst up to retryMax. A request that timed out has already waited requestTimeout, so
// a cap of a few seconds would make a fleet that lost its hub for a moment retry at nearly the
// rate of its first attempts; at 30 s the retries of 100,000 agents thin out to a few thousand
// a second.
const (
	retryFirst = 500 * time.Millisecond
	retryMax   = 30 * time.Second
)

// backoff is the wait before each retry of one request. Each wait is drawn from the upper half
// of the current step ("equal jitter"): never less than half the step, so that the fleet's
// retries do thin out, and spread over the other half, so that agents whose requests failed in
// the same instant (the server dropped a burst) do not come back in the same instant.
type backoff struct {
	step time.Duration
	// jitter returns a duration in [0, n); rand.N unless a test sets it.
	jitter func(n time.Duration) time.Duration
}

// next returns how long to wait before the next attempt.
func (b *backoff) next() time.Duration {
	b.step = min(max(2*b.step, retryFirst), retryMax)
	half := b.step / 2
	j := rand.N[time.Duration]
	if b.jitter != nil {
		j = b.jitter
	}
	return b.step - half + j(half+1)
}

// retry calls fn, each call bounded by requestTimeout, until it succeeds or ctx ends, backing
// off between attempts; retries counts the failed attempts.
func retry(ctx context.Context, retries *atomic.Int64, fn func(context.Context) error) error {
	return retryWith(ctx, retries, &backoff{}, sleepCtx, fn)
}

// retryWith is retry with the back-off and the wait given: tests count attempts and waits
// without a clock.
func retryWith(ctx context.Context, retries *atomic.Int64, b *backoff, sleep func(context.Context, time.Duration) error,
	fn func(context.Context) error) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, requestTimeout)
		err := fn(cctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		if p := (permanent{}); errors.As(err, &p) {
			return p.err
		}
		retries.Add(1)
		if err := sleep(ctx, b.next()); err != nil {
			return err
		}
	}
}

// permanent wraps an error that no retry can cure: retry returns its error at once.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
