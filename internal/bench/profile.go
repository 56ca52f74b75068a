package bench

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

// CPUProfile starts a CPU profile of this process written to path (for go tool pprof) and
// returns what stops it. An empty path profiles nothing.
func CPUProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// HeapProfile writes a heap profile of this process to path (for go tool pprof); an empty path
// writes nothing.
func HeapProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return fmt.Errorf("heap profile: %w", err)
	}
	return f.Close()
}

// HubCPUProfileEnv names the file a `godwit hub` process writes a CPU profile to, between a
// SIGUSR1 (start) and a SIGUSR2 (stop): how the fleet benchmark profiles its child hub over the
// rollout alone. Unset, the hub profiles nothing and leaves both signals alone.
const HubCPUProfileEnv = "GODWIT_HUB_CPUPROFILE"

// ProfileOnSignals starts a CPU profile written to path on every SIGUSR1 and ends it on the
// next SIGUSR2, until ctx ends (a profile still running is then ended). An empty path does
// nothing. The returned function waits for the profile to be written.
func ProfileOnSignals(ctx context.Context, path string) (wait func()) {
	if path == "" {
		return func() {}
	}
	start := make(chan os.Signal, 1)
	end := make(chan os.Signal, 1)
	signal.Notify(start, syscall.SIGUSR1)
	signal.Notify(end, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(start)
		defer signal.Stop(end)
		stop := func() error { return nil }
		for {
			select {
			case <-ctx.Done():
				_ = stop()
				return
			case <-start:
				_ = stop()
				s, err := CPUProfile(path)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					continue
				}
				stop = s
			case <-end:
				_ = stop()
				stop = func() error { return nil }
			}
		}
	}()
	return func() { <-done }
}
