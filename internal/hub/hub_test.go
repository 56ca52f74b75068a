package hub

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/migration/controller"
	"godwit.dev/godwit/internal/syncbuf"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time      { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) Add(d time.Duration) { f.mu.Lock(); defer f.mu.Unlock(); f.now = f.now.Add(d) }

// running reads godwit_worker_running of each leader-only worker (-1: not exported yet).
func (h *Hub) running(t *testing.T) map[string]float64 {
	t.Helper()
	h.mu.Lock()
	reg := h.registry
	h.mu.Unlock()
	out := map[string]float64{"liveness": -1, "migrations": -1, "sweeps": -1}
	if reg == nil {
		return out
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "godwit_worker_running" {
			for _, m := range mf.GetMetric() {
				out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A hub whose epoch the store no longer holds (a newer one was adopted) hears of it from the
// deposed worker, ends its lease term — every leader-only worker stops, the lease is handed on —
// and goes on serving as a follower until it is asked to stop.
func TestDeposedHubStepsDown(t *testing.T) {
	t.Parallel()
	cfg := config.DefaultHub()
	cfg.DataDir = filepath.Join(t.TempDir(), "hub")
	cfg.Listen, cfg.NATS.Listen = "127.0.0.1:0", "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Now()}
	var logs syncbuf.Buffer
	h := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)), io.Discard, WithClock(clock))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- h.Run(ctx) }()
	all := func(v float64) func() bool {
		return func() bool {
			for _, got := range h.running(t) {
				if got != v {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, "leader-only workers running", all(1))

	h.mu.Lock()
	st, api := h.store, h.endpoint.API
	h.mu.Unlock()
	if _, err := st.AcquireEpoch(ctx, controller.LeadershipName, "other-hub", time.Now()); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute) // the controller's next pass records that it is alive, under its old epoch
	waitFor(t, "leader-only workers stopped", all(0))
	// The lease hands the key on after the workers stopped: its line may come a moment later.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs.String(), "this replica stepped down") ||
		!strings.Contains(logs.String(), "lease handed on"); {
		if time.Now().After(deadline) {
			t.Fatalf("no word of stepping down in the log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-ran:
		t.Fatalf("the deposed hub stopped: %v", err)
	default:
	}
	resp, err := http.Get(api + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the follower's API: %v %v", resp, err)
	}
	resp.Body.Close()

	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run after stepping down and being stopped = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
}
