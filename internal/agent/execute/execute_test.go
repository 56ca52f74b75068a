package execute

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/procgroup"
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

// Started gets the group while the command waits at the gate: nothing of the script has run,
// and the group it names is the command's.
func TestStartedBeforeTheCommandRuns(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "ran")
	var got procgroup.Group
	r := Run(context.Background(), Command{Script: "touch " + marker + "; echo $$", Started: func(g procgroup.Group) error {
		if _, err := os.Stat(marker); err == nil {
			t.Error("the script ran before Started returned")
		}
		m, err := g.Members()
		if err != nil || len(m) != 1 || m[0] != g.ID {
			t.Errorf("members of %v at the gate = %v, %v; want the leader alone", g, m, err)
		}
		got = g
		return nil
	}})
	if !r.OK() {
		t.Fatalf("result %+v", r)
	}
	if strings.TrimSpace(r.Stdout) != strconv.Itoa(got.ID) {
		t.Fatalf("the script ran as pid %s, Started was given group %d: the leader must become the script", r.Stdout, got.ID)
	}
	if got.BootID == "" || got.StartTime == 0 {
		t.Fatalf("group %+v lacks its boot id or start time", got)
	}
	if m, err := got.Members(); err != nil || len(m) != 0 {
		t.Fatalf("members after Run returned = %v, %v; want none", m, err)
	}
}

// A Started that fails stops the command before it ran anything.
func TestStartedErrorRunsNothing(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "ran")
	boom := errors.New("journal unavailable")
	var group procgroup.Group
	r := Run(context.Background(), Command{Script: "touch " + marker, Started: func(g procgroup.Group) error { group = g; return boom }})
	if !errors.Is(r.StartErr, boom) || r.OK() || r.Cancelled {
		t.Fatalf("result %+v, want StartErr wrapping %v", r, boom)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the script ran although Started failed")
	}
	if m, _ := group.Members(); len(m) != 0 {
		t.Fatalf("the gated leader is still there: %v", m)
	}
	// The same with ctx ended: the agent is stopping, which is not the command's failure.
	ctx, cancel := context.WithCancel(context.Background())
	r = Run(ctx, Command{Script: "touch " + marker, Started: func(procgroup.Group) error { cancel(); return ctx.Err() }})
	if !r.Cancelled || r.StartErr != nil {
		t.Fatalf("result %+v, want cancelled", r)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the script ran although Started failed")
	}
}

// The main goroutine keeps the main thread, which the Go runtime never ends: every Run of these
// tests then forks from a thread that the runtime may end (see TestEndingThreadsDoNotKillTheCommand).
func init() { runtime.LockOSThread() }

// Threads that end while a command runs do not kill it: the parent-death signal follows the
// thread that forked the command, so Run keeps that thread for the command's lifetime. A
// goroutine that locks its thread and returns makes the runtime end that thread; goroutines
// started from Started are queued first on the forking thread, so without the lock in Run
// that thread would soon run one of them, end, and take the command with it (SIGKILL).
func TestEndingThreadsDoNotKillTheCommand(t *testing.T) {
	t.Parallel()
	release := filepath.Join(t.TempDir(), "release")
	var wg sync.WaitGroup
	r := Run(context.Background(), Command{Script: "while [ ! -f " + release + " ]; do sleep 0.02; done",
		Timeout: 30 * time.Second, Started: func(procgroup.Group) error {
			for range 8 {
				wg.Go(func() { runtime.LockOSThread() }) // never unlocked: the thread ends with the goroutine
			}
			go func() {
				wg.Wait()
				time.Sleep(200 * time.Millisecond) // give a killed command time to be reported as killed
				_ = os.WriteFile(release, nil, 0o600)
			}()
			return nil
		}})
	if !r.OK() {
		t.Fatalf("result %+v: the command died while threads ended (exit %d)", r, r.ExitCode)
	}
}
