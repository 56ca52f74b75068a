package bench

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

//go:noinline
func heapTestHold(n int) [][]byte {
	held := make([][]byte, n)
	for i := range held {
		held[i] = make([]byte, 4<<20)
	}
	return held
}

// A heap profile written by the runtime is summed by function: what heapTestHold still holds is
// its own (flat) and part of its callers' (cum).
func TestHeapSummary(t *testing.T) {
	held := heapTestHold(4) // 16 MiB, each 4 MiB block sampled with probability 1-e^-8
	runtime.GC()
	path := filepath.Join(t.TempDir(), "heap.pb.gz")
	if err := HeapProfile(path); err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(held)
	sum, err := readHeapSummary(path)
	if err != nil {
		t.Fatal(err)
	}
	var hold, test *heapEntry
	for i, e := range sum.Entries {
		switch {
		case strings.HasSuffix(e.Func, ".heapTestHold"):
			hold = &sum.Entries[i]
		case strings.HasSuffix(e.Func, ".TestHeapSummary"):
			test = &sum.Entries[i]
		}
	}
	if hold == nil || test == nil {
		t.Fatalf("no entry for heapTestHold or TestHeapSummary among %d", len(sum.Entries))
	}
	if hold.Flat < 12<<20 || hold.Cum < hold.Flat || sum.InUse < hold.Flat {
		t.Errorf("heapTestHold flat %d cum %d, in use %d: want flat ≥ 12 MiB ≤ cum ≤ in use", hold.Flat, hold.Cum, sum.InUse)
	}
	if test.Cum < hold.Flat || test.Flat >= hold.Flat {
		t.Errorf("TestHeapSummary flat %d cum %d: want its callee's %d in cum only", test.Flat, test.Cum, hold.Flat)
	}
	if top := sum.top(1, false); len(top) != 1 || top[0].Flat < hold.Flat {
		t.Errorf("top by flat %+v, want at least heapTestHold's %d", top, hold.Flat)
	}
}

func TestHeapSummaryRefusesOtherFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not-a-profile")
	for _, content := range []string{"\x0a\x05", "\x1f\x8b broken gzip"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readHeapSummary(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: err %v, want one naming %s", content, err, path)
		}
	}
	// Well-formed protobuf, but no inuse_space sample type (a CPU profile, say).
	if err := os.WriteFile(path, []byte{0x0a, 0x02, 0x08, 0x01, 0x32, 0x03, 'c', 'p', 'u'}, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readHeapSummary(path); err == nil || !strings.Contains(err.Error(), "not a heap profile") {
		t.Errorf("err %v, want: not a heap profile", err)
	}
}
