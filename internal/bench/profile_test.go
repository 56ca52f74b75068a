package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A hub started with HubCPUProfileEnv profiles between one SIGUSR2 and the next: the file
// appears on the first and holds a complete (gzipped) profile once the second has ended it.
func TestProfileOnSignals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.prof")
	ctx, cancel := context.WithCancel(t.Context())
	wait := ProfileOnSignals(ctx, path)
	defer func() { cancel(); wait() }()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("profile file before any signal: %v", err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no profile file after the first SIGUSR2")
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		raw, err := os.ReadFile(path)
		if err == nil && bytes.HasPrefix(raw, []byte{0x1f, 0x8b}) {
			return // pprof writes its profile gzipped, and only when it stops
		}
		if time.Now().After(deadline) {
			t.Fatalf("profile not written after the second SIGUSR2 (%d bytes, %v)", len(raw), err)
		}
	}
}
