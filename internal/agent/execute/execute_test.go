package execute

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExitCodesAndOutput(t *testing.T) {
	t.Parallel()
	cases := []struct {
		script     string
		code       int
		out, errOf string
	}{
		{"echo hello; echo oops >&2", 0, "hello\n", "oops\n"},
		{"exit 1", 1, "", ""},
		{"exit 42", 42, "", ""},
		{"no-such-command-godwit", 127, "", "not found"},
		{"echo $GODWIT_STEP-$GODWIT_ATTEMPT", 0, "install-3\n", ""},
	}
	for _, tc := range cases {
		r := Run(context.Background(), Command{Script: tc.script, Env: []string{"GODWIT_STEP=install", "GODWIT_ATTEMPT=3"}})
		if r.ExitCode != tc.code || r.Stdout != tc.out || !strings.Contains(r.Stderr, tc.errOf) || r.TimedOut || r.StartErr != nil {
			t.Errorf("%q: %+v, want code %d stdout %q stderr containing %q", tc.script, r, tc.code, tc.out, tc.errOf)
		}
		if r.OK() != (tc.code == 0) {
			t.Errorf("%q: OK() = %v", tc.script, r.OK())
		}
	}
}

func TestTailsAreBounded(t *testing.T) {
	t.Parallel()
	r := Run(context.Background(), Command{Script: "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done", TailBytes: 64})
	if len(r.Stdout) > 64+len("…") || !strings.HasSuffix(r.Stdout, "line-1999\n") || !strings.HasPrefix(r.Stdout, "…") {
		t.Fatalf("tail = %q", r.Stdout)
	}
}

// A timed-out step is stopped with its whole process group, children included.
func TestTimeoutKillsTheGroup(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// The child ignores nothing; the parent traps TERM to prove the grace period is honoured
	// and then exits on its own.
	script := "sleep 300 & echo $! > " + pidFile + "; trap 'echo got-term; exit 7' TERM; wait"
	r := Run(context.Background(), Command{Script: script, Timeout: 300 * time.Millisecond, Grace: 5 * time.Second})
	if !r.TimedOut || r.OK() {
		t.Fatalf("result %+v, want timed out", r)
	}
	if r.ExitCode != 7 || !strings.Contains(r.Stdout, "got-term") {
		t.Fatalf("parent did not get SIGTERM first: %+v", r)
	}
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("child %d of the timed-out step is still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A step that ignores SIGTERM is killed after the grace period.
func TestGraceThenKill(t *testing.T) {
	t.Parallel()
	r := Run(context.Background(), Command{Script: "trap '' TERM; sleep 300", Timeout: 100 * time.Millisecond, Grace: 200 * time.Millisecond})
	if !r.TimedOut || r.ExitCode != 128+int(syscall.SIGKILL) {
		t.Fatalf("result %+v, want timed out and killed by SIGKILL", r)
	}
}

func TestCancelStopsCommand(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	r := Run(ctx, Command{Script: "sleep 300", Grace: time.Second})
	if !r.Cancelled || r.TimedOut || r.OK() {
		t.Fatalf("result %+v, want cancelled", r)
	}
}

func TestStartError(t *testing.T) {
	t.Parallel()
	r := Run(context.Background(), Command{Script: "true", Dir: "/no/such/dir/godwit"})
	if r.StartErr == nil || r.ExitCode != -1 || r.OK() {
		t.Fatalf("result %+v, want a start error", r)
	}
}
