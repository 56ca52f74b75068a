package lease

import (
	"errors"
	"fmt"
	"time"

	"godwit.dev/godwit/internal/fault"
)

// Timing is a lease's timing. The rule between the fields, and the trade-offs, are in
// docs/ha.md; Validate enforces it.
type Timing struct {
	// TTL is how long a contender must see the key unchanged before it takes the lease over.
	TTL time.Duration
	// RenewInterval is the time between the starts of two renew attempts by the leader, and
	// between two reads of the key by a contender.
	RenewInterval time.Duration
	// CallTimeout is the deadline of every store call; an answer after it is a failure.
	CallTimeout time.Duration
	// Margin is how much before TTL the leader stops: its watchdog ends the term at
	// TTL − Margin after the last successful renew was sent. It covers clock-rate drift between
	// replicas and the time leader work takes to notice that its context ended.
	Margin time.Duration
	// RecoverAfter is how many store calls in a row must succeed before a degraded replica
	// counts as healthy again (one failure degrades it). Only a healthy replica acquires.
	RecoverAfter int
}

// DefaultTiming is the hub's timing: a dead leader is replaced 8 to 12 s after its last renew,
// and a leader survives two renews in a row failing (docs/ha.md works through it).
func DefaultTiming() Timing {
	return Timing{TTL: 10 * time.Second, RenewInterval: 2 * time.Second, CallTimeout: 2 * time.Second,
		Margin: 2 * time.Second, RecoverAfter: 3}
}

// MinMarginFraction is the least Margin allowed, as a fraction of TTL (1/20 = 5 %): far more
// than any clock-rate drift between healthy machines (NTP slews a clock by at most 0.05 %), the
// rest is for leader work to stop.
const MinMarginFraction = 20

// Validate checks the fields and the rule between them, and returns every violation, each a
// *fault.FieldError naming the field ("ttl", "renewInterval", "callTimeout", "margin",
// "recoverAfter"). Use ValidateNamed to name them as a configuration file does.
func (t Timing) Validate() error { return t.ValidateNamed(nil) }

// ValidateNamed is Validate with the fields named by name (nil keeps the bare names), e.g. to
// report "lease.ttl (--lease-ttl)".
func (t Timing) ValidateNamed(name func(field string) string) error {
	if name == nil {
		name = func(f string) string { return f }
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fault.Invalid(name(field), format, args...))
	}
	if t.TTL <= 0 {
		bad("ttl", "must be positive (got %s)", t.TTL)
	}
	if t.RenewInterval <= 0 {
		bad("renewInterval", "must be positive (got %s)", t.RenewInterval)
	}
	if t.CallTimeout <= 0 {
		bad("callTimeout", "must be positive (got %s)", t.CallTimeout)
	} else if t.RenewInterval > 0 && t.CallTimeout > t.RenewInterval {
		bad("callTimeout", "must be at most %s (%s), got %s: a renew must end before the next one starts",
			name("renewInterval"), t.RenewInterval, t.CallTimeout)
	}
	if t.Margin <= 0 {
		bad("margin", "must be positive (got %s)", t.Margin)
	} else if t.TTL > 0 && t.Margin < t.TTL/MinMarginFraction {
		bad("margin", "must be at least %s/%d (%s), got %s: the leader must stop clearly before a contender may start",
			name("ttl"), MinMarginFraction, t.TTL/MinMarginFraction, t.Margin)
	}
	if t.RecoverAfter < 1 {
		bad("recoverAfter", "must be at least 1 (got %d)", t.RecoverAfter)
	}
	if t.TTL > 0 && t.RenewInterval > 0 && t.CallTimeout > 0 && t.Margin > 0 {
		if need := 2*t.RenewInterval + t.CallTimeout + t.Margin; t.TTL < need {
			bad("ttl", "must be at least 2×%s + %s + %s = 2×%s + %s + %s = %s, got %s: a leader must survive one failed renew before its watchdog stops it",
				name("renewInterval"), name("callTimeout"), name("margin"),
				t.RenewInterval, t.CallTimeout, t.Margin, need, t.TTL)
		}
	}
	return errors.Join(errs...)
}

// Watchdog is how long after sending its last successful renew a leader stops: TTL − Margin.
func (t Timing) Watchdog() time.Duration { return t.TTL - t.Margin }

// MaxTakeover bounds the time from a leader's last successful renew to a contender's takeover
// when the contender reads the key only by polling: it may see the renew up to one
// RenewInterval late, waits the TTL, and its takeover call takes up to CallTimeout. With a live
// watch of the key the first term drops out.
func (t Timing) MaxTakeover() time.Duration { return t.RenewInterval + t.TTL + t.CallTimeout }

func (t Timing) String() string {
	return fmt.Sprintf("ttl=%s renewInterval=%s callTimeout=%s margin=%s recoverAfter=%d",
		t.TTL, t.RenewInterval, t.CallTimeout, t.Margin, t.RecoverAfter)
}
