// Package procgroup recognises the process group of a migration command after the agent that
// started it has died, so that a restarted agent can wait for it or stop it before it judges
// anything (Linux only, like the rest of the agent).
//
// A group is recorded by four facts: its id (the pid of its leader, the `sh -c` of the command),
// the kernel's boot id, the pid namespace the id belongs to, and the leader's start time in clock
// ticks since boot (field 22 of /proc/<pid>/stat). Together they tell the group apart from
// anything that reuses its numbers:
//
//   - another boot id: the machine rebooted since, and nothing of the group can be alive;
//   - another pid namespace (the agent now runs in another container): the numbers mean other
//     processes here, and the group, if anything of it is left, cannot be seen from here;
//   - a process whose pid is the group id but whose start time differs: the group ended and its
//     number was given to a new process, so nothing of the old group is left (the kernel does not
//     give out a number while a process group still uses it);
//   - otherwise every live process whose process group is the id, and which did not start before
//     the leader, belongs to the group. Zombies are not counted: they run nothing.
//
// What this cannot see is a process that left the group (setsid, setpgid, a daemon that forks
// twice): it is no longer the command's, neither here nor when the command times out.
package procgroup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Group identifies a process group across agent restarts.
type Group struct {
	ID        int    // the process group id: the pid of its leader
	BootID    string // /proc/sys/kernel/random/boot_id when the group was recorded
	PidNS     string // the pid namespace of ID, as /proc/self/ns/pid names it ("pid:[4026531836]")
	StartTime uint64 // the leader's start time, clock ticks since boot
}

// String describes g for logs and events.
func (g Group) String() string { return "process group " + strconv.Itoa(g.ID) }

// procRoot is where the proc file system is mounted; tests point it elsewhere.
var procRoot = "/proc"

// Identify returns the group whose leader is pid, which must be running.
func Identify(pid int) (Group, error) {
	boot, err := BootID()
	if err != nil {
		return Group{}, err
	}
	ns, err := pidNamespace()
	if err != nil {
		return Group{}, err
	}
	st, err := readStat(pid)
	if err != nil {
		return Group{}, fmt.Errorf("identify process %d: %w", pid, err)
	}
	if st.pgrp != pid {
		return Group{}, fmt.Errorf("identify process %d: it leads no process group (its group is %d)", pid, st.pgrp)
	}
	return Group{ID: pid, BootID: boot, PidNS: ns, StartTime: st.start}, nil
}

// pidNamespace names the pid namespace the /proc of this process shows.
func pidNamespace() (string, error) {
	ns, err := os.Readlink(procRoot + "/self/ns/pid")
	if err != nil {
		return "", fmt.Errorf("read pid namespace: %w", err)
	}
	return ns, nil
}

// BootID returns the kernel's boot id, which changes at every boot.
func BootID() (string, error) {
	b, err := os.ReadFile(procRoot + "/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", errors.New("read boot id: empty")
	}
	return id, nil
}

// Members returns the pids of g's live processes, none when nothing of g is left.
func (g Group) Members() ([]int, error) {
	if g.ID <= 1 || g.BootID == "" {
		return nil, nil
	}
	boot, err := BootID()
	if err != nil {
		return nil, err
	}
	if boot != g.BootID {
		return nil, nil
	}
	ns, err := pidNamespace()
	if err != nil {
		return nil, err
	}
	if ns != g.PidNS {
		return nil, nil
	}
	// Cheap first: no process at all in the group (zombies included).
	if err := syscall.Kill(-g.ID, 0); errors.Is(err, syscall.ESRCH) {
		return nil, nil
	}
	d, err := os.Open(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	names, err := d.Readdirnames(-1)
	_ = d.Close()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid <= 0 {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue // it ended while we looked
		}
		if st.pgrp != g.ID {
			continue
		}
		if pid == g.ID && st.start != g.StartTime {
			return nil, nil // the number belongs to another process now: the group is gone
		}
		if st.start < g.StartTime || st.state == 'Z' || st.state == 'X' {
			continue
		}
		out = append(out, pid)
	}
	return out, nil
}

// Signal sends sig to every process of g, when anything of g is left. It reports whether it
// sent anything.
func (g Group) Signal(sig syscall.Signal) (bool, error) {
	m, err := g.Members()
	if err != nil || len(m) == 0 {
		return false, err
	}
	// Between Members and Kill the group would have to end and its number be given to a new
	// group leader; pids are handed out in increasing order, so that takes a wrap of the pid
	// space within microseconds.
	if err := syscall.Kill(-g.ID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("signal %s: %w", g, err)
	}
	return true, nil
}

// Poll is how often Wait and Stop look at the group.
const Poll = 100 * time.Millisecond

// ErrStillRunning is returned by Wait when abort fired or the deadline passed first.
var ErrStillRunning = errors.New("still running")

// Wait returns nil once nothing of g is left, and ErrStillRunning when abort fires (nil: never)
// or the deadline passes (zero: none) first.
func (g Group) Wait(abort <-chan struct{}, deadline time.Time) error {
	t := time.NewTicker(Poll)
	defer t.Stop()
	for {
		m, err := g.Members()
		if err != nil {
			return err
		}
		if len(m) == 0 {
			return nil
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return ErrStillRunning
		}
		select {
		case <-abort:
			return ErrStillRunning
		case <-t.C:
		}
	}
}

// Stop ends g: SIGTERM, then SIGKILL when anything of it is left after grace, then waits until
// nothing of it is left or abort fires. It reports whether SIGKILL was sent.
func (g Group) Stop(grace time.Duration, abort <-chan struct{}) (killed bool, err error) {
	if _, err := g.Signal(syscall.SIGTERM); err != nil {
		return false, err
	}
	err = g.Wait(abort, time.Now().Add(grace))
	if !errors.Is(err, ErrStillRunning) {
		return false, err
	}
	killed, err = g.Signal(syscall.SIGKILL)
	if err != nil {
		return killed, err
	}
	return killed, g.Wait(abort, time.Time{})
}

// stat is what Members needs of /proc/<pid>/stat.
type stat struct {
	state byte
	pgrp  int
	start uint64
}

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	return parseStat(b)
}

// parseStat reads the state (field 3), process group (field 5) and start time (field 22) of a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and may itself hold
// spaces and parentheses, so the fields are counted from the last ')'.
func parseStat(b []byte) (stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, errors.New("proc stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3.
	if len(f) < 20 {
		return stat{}, fmt.Errorf("proc stat: %d fields after the command name, want at least 20", len(f))
	}
	if len(f[0]) != 1 {
		return stat{}, fmt.Errorf("proc stat: state %q", f[0])
	}
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		return stat{}, fmt.Errorf("proc stat: process group: %w", err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return stat{}, fmt.Errorf("proc stat: start time: %w", err)
	}
	return stat{state: f[0][0], pgrp: pgrp, start: start}, nil
}
