package bus

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"godwit.dev/godwit/internal/credential"
)

// Credential look-ups run at most authLookups at once, each still answered; one that cannot get
// a turn within the look-up timeout refuses the connection.
func TestCredentialLookupsBounded(t *testing.T) {
	password := credential.New(credential.PrefixAgent)
	hash := credential.Hash(password)
	var running, most atomic.Int64
	release := make(chan struct{})
	auth := &fakeAuth{AgentCredentialFunc: func(ctx context.Context, _ string) (string, bool, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		select {
		case <-release:
		case <-ctx.Done():
			return "", false, ctx.Err()
		}
		return hash, false, nil
	}}
	v := &verifier{auth: auth, timeout: time.Minute, log: slog.New(slog.DiscardHandler), now: time.Now}

	const callers = 3 * authLookups
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for range callers {
		id := newAgentID(t)
		wg.Go(func() { errs <- v.check(context.Background(), id, password) })
	}
	// Wait until the pool is full, then check that a look-up with a short timeout is refused.
	for deadline := time.Now().Add(10 * time.Second); running.Load() < authLookups; {
		if time.Now().After(deadline) {
			t.Fatalf("%d look-ups running, want %d", running.Load(), authLookups)
		}
		time.Sleep(time.Millisecond)
	}
	short := &verifier{auth: auth, timeout: 50 * time.Millisecond, log: v.log, now: time.Now}
	short.sem = v.sem
	short.semOnce.Do(func() {})
	if err := short.check(context.Background(), newAgentID(t), password); err == nil {
		t.Error("a look-up waiting past its timeout for a turn was accepted")
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("check: %v", err)
		}
	}
	if m := most.Load(); m > authLookups {
		t.Errorf("%d look-ups ran at once, want at most %d", m, authLookups)
	}
}
