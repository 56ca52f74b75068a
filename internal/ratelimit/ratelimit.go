// Package ratelimit holds token buckets: Rate and Bucket, and the Limiter built on them that
// limits failed attempts per source — one bucket per key (a client address) in a map whose size
// is bounded. The ingest's per-agent quotas use Rate and Bucket with the event stream's clock.
//
// Each failure takes a token from its key's bucket; a bucket holds at most Burst tokens and
// gains one every Interval. A key whose bucket is empty is refused (Allow) until a token has
// grown back, and is told how long that takes. Only failures are counted: a caller that keeps
// succeeding is never refused. A full bucket carries no information, so it is dropped whenever
// the map reaches its bound; if every bucket still holds something, the fullest one (the least
// suspicious key) is evicted. Time comes from an injected clock.
package ratelimit

import (
	"math"
	"net/netip"
	"sync"
	"time"

	"godwit.dev/godwit/internal/fault"
)

// Defaults for Config.
const (
	DefaultBurst    = 10
	DefaultInterval = 6 * time.Second
	DefaultMaxKeys  = 10000
)

// Config configures a Limiter. Zero values take the defaults.
type Config struct {
	// Burst is how many failures a key may have at once before it is refused.
	Burst int
	// Interval is how long it takes a key to earn one more attempt back.
	Interval time.Duration
	// MaxKeys bounds how many keys are remembered.
	MaxKeys int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limiter counts failures per key. It is safe for concurrent use.
type Limiter struct {
	cfg     Config
	rate    Rate
	mu      sync.Mutex
	buckets map[string]*Bucket
	evicted uint64
}

// Rate is a token bucket's rule: it holds at most Burst tokens and gains PerSecond tokens a
// second.
type Rate struct {
	PerSecond float64
	Burst     float64
}

// Bucket is one token bucket's state; the zero Bucket is full the first time it is used. Its
// clock is whatever the caller passes: a time earlier than the last one adds nothing.
type Bucket struct {
	tokens float64
	at     time.Time
	used   bool
}

// Level brings b to now and returns how many tokens it holds.
func (r Rate) Level(b *Bucket, now time.Time) float64 {
	if !b.used {
		b.tokens, b.at, b.used = r.Burst, now, true
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = math.Min(r.Burst, b.tokens+d.Seconds()*r.PerSecond)
		b.at = now
	}
	return b.tokens
}

// Take takes n tokens from b at now if it holds them, and reports whether it did.
func (r Rate) Take(b *Bucket, n float64, now time.Time) bool {
	if r.Level(b, now) < n {
		return false
	}
	b.tokens -= n
	return true
}

// Wait is how long until b holds n tokens again (0 when it does now).
func (r Rate) Wait(b *Bucket, n float64, now time.Time) time.Duration {
	missing := n - r.Level(b, now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(missing / r.PerSecond * float64(time.Second)))
}

// New returns a limiter; it refuses a configuration it cannot honour.
func New(cfg Config) (*Limiter, error) {
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case cfg.Burst < 1:
		return nil, fault.Invalid("Burst", "must be at least 1 (got %d)", cfg.Burst)
	case cfg.Interval <= 0:
		return nil, fault.Invalid("Interval", "must be positive (got %s)", cfg.Interval)
	case cfg.MaxKeys < 1:
		return nil, fault.Invalid("MaxKeys", "must be at least 1 (got %d)", cfg.MaxKeys)
	}
	rate := Rate{PerSecond: 1 / cfg.Interval.Seconds(), Burst: float64(cfg.Burst)}
	return &Limiter{cfg: cfg, rate: rate, buckets: map[string]*Bucket{}}, nil
}

// Allow reports whether key may make an attempt now and, when it may not, how long until it
// may.
func (l *Limiter) Allow(key string) (ok bool, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		return true, 0
	}
	if wait := l.rate.Wait(b, 1, l.cfg.Now()); wait > 0 {
		return false, wait
	}
	return true, 0
}

// Fail records a failed attempt by key.
func (l *Limiter) Fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.cfg.MaxKeys {
			l.makeRoom(now)
		}
		b = &Bucket{}
		l.buckets[key] = b
	}
	if !l.rate.Take(b, 1, now) {
		b.tokens = 0 // a failure while refused (a race with Allow) earns nothing back
	}
}

// makeRoom drops the full buckets and, if none was full, evicts the fullest.
func (l *Limiter) makeRoom(now time.Time) {
	var fullest string
	most := -1.0
	for k, b := range l.buckets {
		t := l.rate.Level(b, now)
		if t >= l.rate.Burst {
			delete(l.buckets, k)
			continue
		}
		if t > most {
			fullest, most = k, t
		}
	}
	if len(l.buckets) >= l.cfg.MaxKeys {
		delete(l.buckets, fullest)
		l.evicted++
	}
}

// Keys is how many keys the limiter remembers now.
func (l *Limiter) Keys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Evicted is how many keys were forgotten while they still counted failures, because the map
// was full.
func (l *Limiter) Evicted() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.evicted
}

// Key is the key of a client address: the address itself for IPv4, its /64 for IPv6 (one
// machine usually holds a whole /64, so single addresses would be free to rotate through). An
// invalid address is the empty key, limited like any other.
func Key(addr netip.Addr) string {
	addr = addr.Unmap()
	switch {
	case !addr.IsValid():
		return ""
	case addr.Is4():
		return addr.String()
	}
	p, _ := addr.Prefix(64)
	return p.String()
}
