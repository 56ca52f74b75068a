package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// memSample is the hub's memory at one moment: resident set from /proc, the rest from the Go
// runtime's figures on its /metrics.
type memSample struct {
	RSS        int64 // VmRSS
	HeapInUse  int64 // go_memstats_heap_inuse_bytes: spans holding heap objects
	StackInUse int64 // go_memstats_stack_inuse_bytes: goroutine stacks
	GoSys      int64 // go_memstats_sys_bytes: all the runtime got from the OS
	NextGC     int64 // go_memstats_next_gc_bytes: the heap size of the next collection
	Goroutines int64
}

var memMetrics = []string{"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes",
	"go_memstats_next_gc_bytes", "go_goroutines"}

// memWatch samples the hub's memory every interval until stopped, keeping the sample of the
// largest resident set and the largest Go heap in use.
type memWatch struct {
	mu              sync.Mutex
	atPeakRSS       memSample
	peakHeap        int64
	samples, failed int
	stop            context.CancelFunc
	done            chan struct{}
}

func watchHubMemory(ctx context.Context, h *hubUnderTest, interval time.Duration) *memWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &memWatch{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			w.sample(ctx, h)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *memWatch) sample(ctx context.Context, h *hubUnderTest) {
	kb, err := procStatusKB(h.pid, "VmRSS")
	var m map[string]float64
	if err == nil {
		m, err = h.api.metrics(ctx, memMetrics...)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failed++
		return
	}
	w.samples++
	s := memSample{RSS: kb << 10, HeapInUse: int64(m[memMetrics[0]]), StackInUse: int64(m[memMetrics[1]]),
		GoSys: int64(m[memMetrics[2]]), NextGC: int64(m[memMetrics[3]]), Goroutines: int64(m[memMetrics[4]])}
	if s.RSS >= w.atPeakRSS.RSS {
		w.atPeakRSS = s
	}
	w.peakHeap = max(w.peakHeap, s.HeapInUse)
}

// result stops the sampling and returns the sample of the largest resident set seen and the
// largest heap in use.
func (w *memWatch) result() (atPeakRSS memSample, peakHeap int64, samples, failed int) {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.atPeakRSS, w.peakHeap, w.samples, w.failed
}

// metrics reads unlabelled counters or gauges from the hub's /metrics in one scrape; each must
// be there.
func (c *apiClient) metrics(ctx context.Context, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := make(map[string]float64, len(names))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics %s: %w", name, err)
		}
		out[name] = f
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("/metrics has no %s", n)
		}
	}
	return out, nil
}

// heapProfile takes a heap profile of the hub and moves it to path: a child hub writes one
// into its data dir on SIGUSR1; an in-process one is this process.
func (h *hubUnderTest) heapProfile(ctx context.Context, dataDir, path string) error {
	if h.pid == "self" {
		return HeapProfile(path)
	}
	dir := filepath.Join(dataDir, wire.HeapProfileDir)
	before, _ := filepath.Glob(filepath.Join(dir, "heap-*.pb.gz"))
	if err := h.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return fmt.Errorf("hub heap profile: %w", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		now, _ := filepath.Glob(filepath.Join(dir, "heap-*.pb.gz"))
		for _, f := range now {
			if !slices.Contains(before, f) {
				return moveFile(f, path)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hub heap profile: none in %s a minute after SIGUSR1", dir)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// moveFile renames from to to, copying when they are on different file systems.
func moveFile(from, to string) error {
	if os.Rename(from, to) == nil {
		return nil
	}
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		_ = dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return os.Remove(from)
}

// printHubMemory prints the hub's memory figures and the largest entries of its heap profile.
func printHubMemory(out io.Writer, agents int, peakRSS int64, atPeak memSample, peakHeap int64, samples, failed int,
	profile string, sum heapSummary, perr error) {
	fmt.Fprintf(out, "hub memory: peak RSS %s = %.1f KiB per agent; sampled every second (%d samples, %d failed): at the "+
		"largest RSS sample (%s) Go heap in use %s, goroutine stacks %s (%d goroutines), Go runtime total from the OS %s, "+
		"next GC at %s heap; largest Go heap in use %s = %.1f KiB per agent\n",
		mib(peakRSS), float64(peakRSS)/1024/float64(agents), samples, failed, mib(atPeak.RSS), mib(atPeak.HeapInUse),
		mib(atPeak.StackInUse), atPeak.Goroutines, mib(atPeak.GoSys), mib(atPeak.NextGC), mib(peakHeap),
		float64(peakHeap)/1024/float64(agents))
	if perr != nil {
		fmt.Fprintf(out, "hub heap profile: %v\n", perr)
		return
	}
	fmt.Fprintf(out, "hub heap profile once every agent event was stored (after a GC; go tool pprof %s): %s in use, "+
		"%.1f KiB per agent; largest by own allocations (flat) and with callees (cum):\n",
		profile, mib(sum.InUse), float64(sum.InUse)/1024/float64(agents))
	flat, cum := sum.top(12, false), sum.top(12, true)
	for i := range max(len(flat), len(cum)) {
		var l, r string
		if i < len(flat) {
			l = fmt.Sprintf("%9s %5.1f%%  %s", mib(flat[i].Flat), pct(flat[i].Flat, sum.InUse), shortFunc(flat[i].Func))
		}
		if i < len(cum) {
			r = fmt.Sprintf("%9s %5.1f%%  %s", mib(cum[i].Cum), pct(cum[i].Cum, sum.InUse), shortFunc(cum[i].Func))
		}
		fmt.Fprintf(out, "  flat %-70s  cum %s\n", l, r)
	}
}

func pct(x, of int64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(x) / float64(of)
}

// shortFunc drops the module path of a function name, keeping the package and the function.
func shortFunc(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// takeHubHeapProfile takes the hub's heap profile into path (a new file in tempDir when empty)
// and sums it by function.
func takeHubHeapProfile(ctx context.Context, h *hubUnderTest, dataDir, path, tempDir string) (string, heapSummary, error) {
	if path == "" {
		f, err := os.CreateTemp(tempDir, "godwit-bench-fleet-hub-heap-*.pb.gz")
		if err != nil {
			return "", heapSummary{}, err
		}
		path = f.Name()
		_ = f.Close()
	}
	if err := h.heapProfile(ctx, dataDir, path); err != nil {
		return path, heapSummary{}, err
	}
	sum, err := readHeapSummary(path)
	return path, sum, err
}
