package hub

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/pki"
	"godwit.dev/godwit/internal/wire"
)

// openPTY returns a pseudo-terminal pair: what the hub writes to tty can be read from pty.
func openPTY(t *testing.T) (pty, tty *os.File) {
	t.Helper()
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("SKIPPED: no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { pty.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, pty.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlock pty: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, pty.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("pty number: %v", e)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return pty, tty
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// The admin token is printed only to a terminal; elsewhere the log says where its file is.
func TestAdminTokenOnlyToATerminal(t *testing.T) {
	t.Parallel()
	start := func(t *testing.T, out *os.File, buf *bytes.Buffer) (dir string, log *logBuffer) {
		dir, log = t.TempDir(), &logBuffer{}
		cfg := testHubConfig(t, dir)
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		var h *Hub
		if out != nil {
			h = New(cfg, log.logger(), out)
		} else {
			h = New(cfg, log.logger(), buf)
		}
		if err := h.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = h.Stop(ctx)
		})
		return dir, log
	}
	readToken := func(t *testing.T, dir string) string {
		t.Helper()
		p := filepath.Join(dir, wire.AdminTokenFile)
		if m := mode(t, p); m != 0o600 {
			t.Fatalf("%s has mode %#o", wire.AdminTokenFile, m)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(raw))
	}

	t.Run("not a terminal", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		dir, log := start(t, nil, &out)
		tok := readToken(t, dir)
		if strings.Contains(out.String(), tok) || strings.Contains(log.String(), tok) {
			t.Fatal("the admin token was printed to something that is not a terminal")
		}
		if !strings.Contains(log.String(), filepath.Join(dir, wire.AdminTokenFile)) || !strings.Contains(log.String(), "not a terminal") {
			t.Fatalf("the log does not say where the token is:\n%s", log.String())
		}
	})

	t.Run("terminal", func(t *testing.T) {
		t.Parallel()
		pty, tty := openPTY(t)
		dir, log := start(t, tty, nil)
		tok := readToken(t, dir)
		got := make(chan string, 1)
		go func() {
			var all []byte
			buf := make([]byte, 4096)
			for {
				n, err := pty.Read(buf)
				all = append(all, buf[:n]...)
				if bytes.Contains(all, []byte(tok)) || err != nil {
					got <- string(all)
					return
				}
			}
		}()
		select {
		case s := <-got:
			if !strings.Contains(s, tok) {
				t.Fatalf("terminal shows %q, not the token", s)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the admin token was not printed to the terminal")
		}
		if strings.Contains(log.String(), tok) {
			t.Fatal("the admin token is in the log")
		}
	})
}

// A data dir others could read is tightened, and every secret and database in it is 0600.
func TestDataDirFiles(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "hub")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testHubConfig(t, dir)
	cfg.TLS.Mode = config.TLSAlways
	f, err := startFleet(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Fatalf("data dir mode %#o, want 0700", m)
	}
	if log := f.hubLog.String(); !strings.Contains(log, "tightened to 0700") || !strings.Contains(log, "was=0755") {
		t.Fatalf("no warning about the tightened data dir:\n%s", log)
	}
	for _, name := range []string{"hub.db", "hub.db-wal", "hub.db-shm", wire.AdminTokenFile, wire.HubEndpointFile,
		filepath.Join(pki.Dir, pki.CAKeyFile), filepath.Join(pki.Dir, pki.KeyFile)} {
		if m := mode(t, filepath.Join(dir, name)); m != 0o600 {
			t.Errorf("%s has mode %#o, want 0600", name, m)
		}
	}
}
