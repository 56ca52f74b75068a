package hubcmd

import (
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/syncbuf"
	"godwit.dev/godwit/internal/wire"
)

// SIGUSR1 writes a heap profile into the data dir's profiles/, once the hub has started (its
// endpoint file is there); before that it writes nothing, so a fresh data dir stays empty.
func TestHeapProfileOnSignal(t *testing.T) {
	dir := t.TempDir()
	var logs syncbuf.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	heapProfileOnSignal(ctx, dir, slog.New(slog.NewTextHandler(&logs, nil)))

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("not within 10s: %s; log:\n%s", what, logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor("the not-started warning", func() bool { return strings.Contains(logs.String(), "has not started yet") })
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("data dir holds %d entries before the hub started, want none", len(entries))
	}

	if err := os.WriteFile(filepath.Join(dir, wire.HubEndpointFile), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var files []string
	waitFor("a heap profile", func() bool {
		files, _ = filepath.Glob(filepath.Join(dir, wire.HeapProfileDir, "heap-*.pb.gz"))
		return len(files) == 1
	})
	if all, _ := os.ReadDir(filepath.Join(dir, wire.HeapProfileDir)); len(all) != 1 {
		t.Errorf("profiles dir holds %d entries, want the profile only", len(all))
	}
	f, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("profile is not gzipped: %v", err)
	}
	if b, err := io.ReadAll(zr); err != nil || len(b) == 0 {
		t.Fatalf("profile: %d bytes, %v", len(b), err)
	}
	waitFor("the log line naming the file", func() bool { return strings.Contains(logs.String(), files[0]) })
}
