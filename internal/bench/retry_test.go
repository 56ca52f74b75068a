package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestBackoffDoublesToItsCapWithinTheUpperHalf draws every wait at both ends of its jitter: each
// lies in the upper half of a step that doubles from retryFirst and stops at retryMax.
func TestBackoffDoublesToItsCapWithinTheUpperHalf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		jitter func(time.Duration) time.Duration
	}{
		{"least", func(time.Duration) time.Duration { return 0 }},
		{"most", func(n time.Duration) time.Duration { return n - 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &backoff{jitter: tc.jitter}
			step := retryFirst
			for i := range 12 {
				d := b.next()
				if d < step/2 || d > step {
					t.Fatalf("wait %d = %s, want within [%s, %s]", i, d, step/2, step)
				}
				step = min(2*step, retryMax)
			}
			if b.step != retryMax {
				t.Fatalf("step after 12 failures = %s, want the cap %s", b.step, retryMax)
			}
		})
	}
}

// TestBackoffJitterSpreadsTheFleet: agents whose requests failed together wait different times.
func TestBackoffJitterSpreadsTheFleet(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 100 {
		b := &backoff{}
		for range 5 {
			b.next()
		}
		seen[b.next()] = true
	}
	if len(seen) < 50 {
		t.Fatalf("100 agents at the same step drew %d distinct waits, want them spread", len(seen))
	}
}

// TestRetryCountsAttemptsAndWaits: fn fails three times then succeeds; retry waits between the
// attempts (never before the first, never after the success) and counts the failures.
func TestRetryCountsAttemptsAndWaits(t *testing.T) {
	var retries atomic.Int64
	var waits []time.Duration
	attempts := 0
	err := retryWith(context.Background(), &retries, &backoff{jitter: func(time.Duration) time.Duration { return 0 }},
		func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil },
		func(context.Context) error {
			attempts++
			if attempts <= 3 {
				return errors.New("timeout")
			}
			return nil
		})
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if attempts != 4 || retries.Load() != 3 {
		t.Fatalf("attempts %d, retries counted %d; want 4 and 3", attempts, retries.Load())
	}
	want := []time.Duration{retryFirst / 2, retryFirst, 2 * retryFirst}
	if len(waits) != len(want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}
}

// TestRetryStopsWhenItsContextEnds: a request that keeps failing is given up once ctx ends
// during a wait, with ctx's error.
func TestRetryStopsWhenItsContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var retries atomic.Int64
	attempts := 0
	err := retryWith(ctx, &retries, &backoff{},
		func(ctx context.Context, _ time.Duration) error {
			if attempts == 2 {
				cancel()
			}
			return ctx.Err()
		},
		func(context.Context) error { attempts++; return errors.New("unavailable") })
	if !errors.Is(err, context.Canceled) || attempts != 2 {
		t.Fatalf("err %v after %d attempts; want context.Canceled after 2", err, attempts)
	}
}

// TestRetryGivesUpOnAPermanentError: an error no retry can cure (a refused credential) is
// returned at once, unwrapped, after one attempt and no wait.
func TestRetryGivesUpOnAPermanentError(t *testing.T) {
	var retries atomic.Int64
	refused := errors.New("authorization violation")
	attempts, waits := 0, 0
	err := retryWith(context.Background(), &retries, &backoff{},
		func(context.Context, time.Duration) error { waits++; return nil },
		func(context.Context) error {
			attempts++
			if attempts == 1 {
				return errors.New("i/o timeout")
			}
			return permanent{refused}
		})
	if err != refused || attempts != 2 || waits != 1 || retries.Load() != 1 {
		t.Fatalf("err %v after %d attempts, %d waits, %d retries; want the refusal itself after 2 attempts, 1 wait, 1 retry",
			err, attempts, waits, retries.Load())
	}
}
