package lease

import (
	"context"
	"time"
)

// Clock is the lease's time source. Only differences between its readings are used, so it must
// be monotonic (time.Now's readings are); tests inject a manual clock to step through a TTL.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed and returns a function that
	// cancels the call, reporting whether it did (as time.AfterFunc's Timer.Stop).
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// RealClock is the process's monotonic clock.
type RealClock struct{}

// Now implements Clock.
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc implements Clock.
func (RealClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// withTimeout is context.WithTimeout on c: the context ends with cause when d has passed on c.
func withTimeout(parent context.Context, c Clock, d time.Duration, cause error) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	stop := c.AfterFunc(d, func() { cancel(cause) })
	return ctx, func() { stop(); cancel(context.Canceled) }
}
