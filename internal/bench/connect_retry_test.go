package bench

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// A hub that is gone (nothing listens on its NATS port: the child hub crashed or was OOM-killed
// during the connect phase) is not a load-induced timeout: connectRetrying gives up on it at once
// instead of retrying until the run's context ends, which has no deadline (it is the signal
// context of `godwit bench fleet`): the benchmark would hang rather than fail.
func TestConnectRetryingGivesUpWhenNothingListens(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "nats://" + l.Addr().String()
	_ = l.Close() // nothing listens there any more: every connect is refused at once

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	var retries atomic.Int64
	start := time.Now()
	_, err = connectRetrying(ctx, &retries, func() (*nats.Conn, error) {
		return nats.Connect(addr, nats.Timeout(time.Second))
	})
	if err == nil {
		t.Fatal("connected to nothing")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connectRetrying retried a refused connection %d times for %s, until its context ended (%v); "+
			"a benchmark whose hub died would hang", retries.Load(), time.Since(start).Round(time.Millisecond), err)
	}
	if retries.Load() != 0 {
		t.Fatalf("a refused connection was retried %d times, want none", retries.Load())
	}
}

// A first connection that keeps failing for a reason the load may explain (a time-out) is made
// again a bounded number of times, then the run fails with the last error.
func TestConnectRetryingIsBounded(t *testing.T) {
	var retries atomic.Int64
	timedOut := errors.New("read tcp: i/o timeout")
	attempts := 0
	_, err := connectRetryingWith(context.Background(), &retries, func(context.Context, time.Duration) error { return nil },
		func() (*nats.Conn, error) { attempts++; return nil, timedOut })
	if !errors.Is(err, timedOut) || attempts != connectAttempts || retries.Load() != connectAttempts-1 {
		t.Fatalf("err %v after %d attempts (%d retries), want the time-out after %d attempts", err, attempts, retries.Load(), connectAttempts)
	}
}
