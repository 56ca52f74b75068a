package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/wire"
)

// Someone deletes the events stream under a running ingester: it reports the fault (Health) for
// as long as it cannot declare the stream again, declares it again as soon as it can, and goes
// back to storing events, never looping silently on "stream not found".
func TestEventsStreamDeleted(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	var mu sync.Mutex
	failing := true
	calls := 0
	ing, _ := bd.ingester(t, "a", Config{EnsureStreams: func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if failing {
			return errors.New("jetstream refused (test)")
		}
		return bus.EnsureStreams(ctx, bd.js, bus.StreamOptions{})
	}})
	agent := newAgentID(t)
	bd.publish(t, wire.EventSubject(agent), agentEvent(agent, wire.EventAgentStarted, time.Now(), ""))
	bd.waitDrained(t, 1)
	if err := ing.Health(); err != nil {
		t.Fatalf("Health before the deletion: %v", err)
	}

	if err := bd.js.DeleteStream(testCtx(t), wire.StreamEvents); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() error {
		err := ing.Health()
		if err == nil || !strings.Contains(err.Error(), "events stream "+wire.StreamEvents+" is missing") ||
			!strings.Contains(err.Error(), "declaring it again failed") {
			return fmt.Errorf("Health = %v", err)
		}
		return nil
	})

	mu.Lock()
	failing = false
	mu.Unlock()
	waitFor(t, 20*time.Second, func() error {
		if err := ing.Health(); err != nil {
			return err
		}
		if _, err := bd.js.Stream(testCtx(t), wire.StreamEvents); err != nil {
			return err
		}
		return nil
	})
	bd.publish(t, wire.EventSubject(agent), agentEvent(agent, wire.EventAgentStarted, time.Now(), ""))
	bd.waitDrained(t, 2)
	mu.Lock()
	defer mu.Unlock()
	if calls < 2 {
		t.Fatalf("EnsureStreams called %d times, want a failed call and a successful one", calls)
	}
}

// Without a way to declare the stream, the ingester keeps reporting it missing.
func TestEventsStreamDeletedNoRecreate(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing, _ := bd.ingester(t, "a", Config{})
	if err := bd.js.DeleteStream(testCtx(t), wire.StreamEvents); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() error {
		if err := ing.Health(); err == nil || !strings.Contains(err.Error(), "is missing") {
			return fmt.Errorf("Health = %v", err)
		}
		return nil
	})
}
