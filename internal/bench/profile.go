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

// HubCPUProfileEnv names the file a `godwit hub` process writes a CPU profile to, between one
// SIGUSR2 (start) and the next (stop): how the fleet benchmark profiles its child hub over the
// rollout alone. Unset, the hub profiles nothing and leaves SIGUSR2 alone. (SIGUSR1 is the
// hub's heap profile, always on.)
const HubCPUProfileEnv = "GODWIT_HUB_CPUPROFILE"

// ProfileOnSignals starts a CPU profile written to path on a SIGUSR2 and ends it on the next
// one, alternately, until ctx ends (a profile still running is then ended). An empty path does
// nothing. The returned function waits for the profile to be written.
func ProfileOnSignals(ctx context.Context, path string) (wait func()) {
	if path == "" {
		return func() {}
	}
	toggle := make(chan os.Signal, 1)
	signal.Notify(toggle, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(toggle)
		var stop func() error // nil: no profile running
		for {
			select {
			case <-ctx.Done():
				if stop != nil {
					_ = stop()
				}
				return
			case <-toggle:
				if stop != nil {
					_ = stop()
					stop = nil
					continue
				}
				s, err := CPUProfile(path)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					continue
				}
				stop = s
			}
		}
	}()
	return func() { <-done }
}
