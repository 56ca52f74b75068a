package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// raiseOpenFileLimit raises this process's soft RLIMIT_NOFILE to its hard limit (children
// inherit it) and returns the resulting soft limit.
func raiseOpenFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("open file limit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("raise open file limit to %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}

// procStatusKB reads a "kB" field (VmHWM, VmRSS) of /proc/<pid>/status; pid "self" is this
// process.
func procStatusKB(pid, field string) (int64, error) {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%s/status has no %s", pid, field)
}

// procCPU is the CPU time (user and system) the process has used, from /proc/<pid>/stat.
func procCPU(pid string) (time.Duration, error) {
	raw, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields after it are space-separated.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%s/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%s/stat: bad times", pid)
	}
	return ticks(utime + stime), nil
}

// machineBusy is the CPU time every process on the machine has used, from /proc/stat.
func machineBusy() (time.Duration, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	fields := strings.Fields(line)
	if len(fields) < 8 || fields[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for i, f := range fields[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 7 { // guest times are already counted in user
			break
		}
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += v
	}
	return ticks(busy), nil
}

// ticks converts clock ticks (USER_HZ, 100 on Linux) to a duration.
func ticks(n int64) time.Duration { return time.Duration(n) * (time.Second / 100) }

// cpuMeter measures, over an interval, the CPU used by chosen processes and by everything else
// on the machine, so that a figure taken while something else ran says so.
type cpuMeter struct {
	pids  []string
	start time.Time
	own   []time.Duration
	all   time.Duration
}

func newCPUMeter(pids ...string) *cpuMeter {
	m := &cpuMeter{pids: pids, start: time.Now()}
	m.own, m.all = m.read()
	return m
}

func (m *cpuMeter) read() (own []time.Duration, all time.Duration) {
	own = make([]time.Duration, len(m.pids))
	for i, p := range m.pids {
		own[i], _ = procCPU(p)
	}
	all, _ = machineBusy()
	return own, all
}

// cores returns the CPUs used on average since the meter started by each chosen process, and
// by all other processes together.
func (m *cpuMeter) cores() (own []float64, others float64) {
	o, a := m.read()
	secs := time.Since(m.start).Seconds()
	own = make([]float64, len(o))
	if secs <= 0 {
		return own, 0
	}
	rest := a - m.all
	for i := range o {
		d := o[i] - m.own[i]
		own[i] = d.Seconds() / secs
		rest -= d
	}
	return own, max(0, rest.Seconds()/secs)
}
