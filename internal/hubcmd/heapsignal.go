package hubcmd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// heapProfileOnSignal writes a heap profile of this process into dataDir/wire.HeapProfileDir
// each time it receives SIGUSR1, until ctx ends, and logs the file's path. Operators (and godwit
// bench fleet) read it with go tool pprof; the file appears whole (written aside, then renamed).
// A signal that comes before the hub has started writes none.
func heapProfileOnSignal(ctx context.Context, dataDir string, log *slog.Logger) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				// Not before the hub has claimed its data dir (it writes the endpoint file then):
				// a fresh one must be empty when the hub opens it.
				if _, err := os.Stat(filepath.Join(dataDir, wire.HubEndpointFile)); err != nil {
					log.Warn("heap profile on SIGUSR1: the hub has not started yet; none written")
					continue
				}
				path, err := writeHeapProfile(filepath.Join(dataDir, wire.HeapProfileDir), time.Now())
				if err != nil {
					log.Error("heap profile on SIGUSR1", "err", err)
					continue
				}
				log.Info("heap profile written on SIGUSR1", "path", path)
			}
		}
	}()
}

// writeHeapProfile writes heap-<UTC time>.pb.gz into dir after a garbage collection, so that
// its in-use figures are those of the last cycle, and returns its path.
func writeHeapProfile(dir string, now time.Time) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "heap-"+now.UTC().Format("20060102T150405.000")+".pb.gz")
	f, err := os.CreateTemp(dir, ".heap-*")
	if err != nil {
		return "", err
	}
	runtime.GC()
	err = pprof.Lookup("heap").WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("heap profile: %w", err)
	}
	return path, nil
}
