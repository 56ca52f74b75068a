// Package execute runs one migration command on the agent: `sh -c` in its own process group,
// with a deadline, and with bounded tails of its output.
//
// On timeout (or cancellation) the whole group gets SIGTERM, then SIGKILL after a grace period,
// so a step that forks children cannot outlive its deadline or keep the agent waiting on a pipe.
//
// The group's leader dies with the agent: it is started with the parent-death signal SIGKILL.
// Linux sends that signal when the *thread* that forked the child ends, not the process, and the
// Go runtime may end an idle thread; so Run locks its goroutine to its thread from the fork until
// the leader has been waited for, and the thread lives at least as long as the command. The
// leader's own children do not get the signal; a restarted agent finds them through the
// group's identity, which [Command.Started] receives before the command runs anything: the
// child waits at a gate (a pipe) until Started has returned, so a caller that records the
// group durably in Started never runs a command it has no record of.
package execute

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"godwit.dev/godwit/internal/agent/procgroup"
)

// Defaults.
const (
	DefaultGrace     = 10 * time.Second
	DefaultTailBytes = 4096
)

// Command is what to run.
type Command struct {
	Script string   // passed to sh -c
	Env    []string // added to the base environment (KEY=value)
	// Environ is the base environment; nil is the agent's own.
	Environ []string
	// Credential, when set, is the user and groups the command runs as (the agent must be
	// root to switch); nil is the agent's own.
	Credential *syscall.Credential
	Dir        string        // working directory; empty: the agent's
	Timeout    time.Duration // 0: no timeout besides ctx
	Grace      time.Duration // between SIGTERM and SIGKILL; 0: DefaultGrace
	TailBytes  int           // bytes kept of stdout and of stderr; 0: DefaultTailBytes
	// Started, when set, is called once the command's process exists and before it has run
	// anything of Script, with the identity of its process group. The command runs only after
	// Started returned nil; an error stops it unrun (Result.StartErr wraps the error, or
	// Result.Cancelled is set when ctx ended). The timeout counts from Started's return.
	Started func(procgroup.Group) error
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

// gate is the script of the group's leader: it waits for one line on descriptor 3 (the caller
// writes it once Started has returned) and then becomes `sh -c Script` ($1) in the same
// process, so the leader's pid, group and start time stay those Started was given. EOF
// (the agent died, or Started failed) ends it before it ran anything.
const gate = `read -r _ <&3 || exit 125; exec /bin/sh -c "$1" 3<&-`

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
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return Result{ExitCode: -1, StartErr: fmt.Errorf("gate pipe: %w", err)}
	}
	defer gateW.Close()
	cmd := exec.Command("/bin/sh", "-c", gate, "sh", c.Script)
	base := c.Environ
	if base == nil {
		base = os.Environ()
	}
	cmd.Env = append(slices.Clip(base), c.Env...)
	cmd.Dir = c.Dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{gateR}
	// Pdeathsig follows the forking thread (see the package comment): keep it until Wait is done.
	// The kernel clears the parent-death signal when the credentials change; Go sets it after
	// switching user, so it holds for a command run as another user too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: c.Credential}
	// If a child escapes the group and holds the pipes open, stop waiting for them after this.
	cmd.WaitDelay = grace + time.Second
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	start := time.Now()
	err = cmd.Start()
	_ = gateR.Close()
	if err != nil {
		return Result{ExitCode: -1, StartErr: err, Duration: time.Since(start)}
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	group, err := procgroup.Identify(pgid)
	if err == nil && c.Started != nil {
		err = c.Started(group)
	}
	if err != nil {
		_ = gateW.Close()
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
		res := Result{ExitCode: -1, Duration: time.Since(start)}
		if ctx.Err() != nil {
			res.Cancelled = true
		} else {
			res.StartErr = fmt.Errorf("before the command ran: %w", err)
		}
		return res
	}
	// A failed write means the leader is gone already (killed from outside): Wait says how.
	_, _ = gateW.Write([]byte("run\n"))
	_ = gateW.Close()
	start = time.Now()

	var deadline <-chan time.Time
	if c.Timeout > 0 {
		t := time.NewTimer(c.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	var res Result
	select {
	case err = <-done:
	case <-deadline:
		res.TimedOut = true
		err = stopGroup(pgid, grace, done)
	case <-ctx.Done():
		res.Cancelled = true
		err = stopGroup(pgid, grace, done)
	}
	// Whatever the command left in its group goes too, and is gone before Run returns.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	_ = group.Wait(nil, time.Now().Add(grace))
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
