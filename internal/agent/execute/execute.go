// Package execute runs one migration command on the agent: `sh -c` in its own process group,
// with a deadline, and with bounded tails of its output.
//
// On timeout (or cancellation) the whole group gets SIGTERM, then SIGKILL after a grace period,
// so a step that forks children cannot outlive its deadline or keep the agent waiting on a pipe.
package execute

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Defaults.
const (
	DefaultGrace     = 10 * time.Second
	DefaultTailBytes = 4096
)

// Command is what to run.
type Command struct {
	Script    string        // passed to sh -c
	Env       []string      // added to the agent's environment (KEY=value)
	Dir       string        // working directory; empty: the agent's
	Timeout   time.Duration // 0: no timeout besides ctx
	Grace     time.Duration // between SIGTERM and SIGKILL; 0: DefaultGrace
	TailBytes int           // bytes kept of stdout and of stderr; 0: DefaultTailBytes
}

// Result is what happened.
type Result struct {
	// ExitCode is the process exit code; 128+N when killed by signal N; -1 when it never ran.
	ExitCode int
	// StartErr is set when the command could not be started at all.
	StartErr error
	TimedOut bool
	// Cancelled is true when ctx ended (agent shutting down) before the command did.
	Cancelled bool
	Stdout    string
	Stderr    string
	Duration  time.Duration
}

// OK reports a clean exit 0.
func (r Result) OK() bool { return r.StartErr == nil && !r.TimedOut && !r.Cancelled && r.ExitCode == 0 }

// Run runs c and always returns a Result; it never leaves the process group running.
func Run(ctx context.Context, c Command) Result {
	grace := c.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	tail := c.TailBytes
	if tail <= 0 {
		tail = DefaultTailBytes
	}
	stdout, stderr := newTail(tail), newTail(tail)
	cmd := exec.Command("/bin/sh", "-c", c.Script)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Dir = c.Dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// If a child escapes the group and holds the pipes open, stop waiting for them after this.
	cmd.WaitDelay = grace + time.Second

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{ExitCode: -1, StartErr: err, Duration: time.Since(start)}
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var deadline <-chan time.Time
	if c.Timeout > 0 {
		t := time.NewTimer(c.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	var res Result
	var err error
	select {
	case err = <-done:
	case <-deadline:
		res.TimedOut = true
		err = stopGroup(pgid, grace, done)
	case <-ctx.Done():
		res.Cancelled = true
		err = stopGroup(pgid, grace, done)
	}
	// Whatever the command left in its group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	res.Duration = time.Since(start)
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	res.ExitCode = exitCode(err)
	return res
}

// stopGroup sends SIGTERM to the group, then SIGKILL after grace, and returns Wait's error.
func stopGroup(pgid int, grace time.Duration, done <-chan error) error {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return <-done
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return -1
}

// tailBuffer keeps the last n bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	n       int
	buf     []byte
	dropped bool
}

func newTail(n int) *tailBuffer { return &tailBuffer{n: n} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.n; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.dropped = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped {
		return "…" + string(t.buf)
	}
	return string(t.buf)
}
