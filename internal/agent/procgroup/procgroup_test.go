package procgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	tail := " 18069 18069 21298 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 100188 3133440 389 0"
	cases := []struct {
		line    string
		want    stat
		wantErr string
	}{
		{"18072 (cat) R" + tail, stat{state: 'R', pgrp: 18069, start: 100188}, ""},
		// A command name with spaces and parentheses: fields count from the last ')'.
		{"18072 (a) b (c)) S" + tail, stat{state: 'S', pgrp: 18069, start: 100188}, ""},
		{"18072 (zombie) Z" + tail, stat{state: 'Z', pgrp: 18069, start: 100188}, ""},
		{"18072 cat R" + tail, stat{}, "no command name"},
		{"18072 (cat) R 1 2 3", stat{}, "fields after the command name"},
		{"18072 (cat) RR" + tail, stat{}, "state"},
		{"18072 (cat) R 18069 x" + tail[12:], stat{}, "process group"},
		{"18072 (cat) R" + strings.Replace(tail, "100188", "-5", 1), stat{}, "start time"},
	}
	for _, tc := range cases {
		got, err := parseStat([]byte(tc.line))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want one about %q", tc.line, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
}

// FuzzParseStat: any bytes give a stat or an error, never a panic, and the fields of a parsed
// line are those after the last ')'.
func FuzzParseStat(f *testing.F) {
	f.Add([]byte("18072 (cat) R 18069 18069 21298 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 100188 3133440 389 0"))
	f.Add([]byte("1 ((sd-pam)) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStat(b)
		if err != nil {
			return
		}
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		pgrp, _ := strconv.Atoi(fields[2])
		start, _ := strconv.ParseUint(fields[19], 10, 64)
		if st != (stat{state: fields[0][0], pgrp: pgrp, start: start}) {
			t.Fatalf("%q parsed as %+v", b, st)
		}
	})
}

// startGroup starts script as the leader of a new process group and returns it with its group.
func startGroup(t *testing.T, script string) (*exec.Cmd, Group) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	g, err := Identify(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, g
}

func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && strings.HasSuffix(string(b), "\n") {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never written", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A group whose leader died is still found through its surviving children, is waited for, and
// stopped with SIGTERM then SIGKILL.
func TestMembersWaitAndStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	child := filepath.Join(dir, "child")
	// The child ignores SIGTERM (an ignored signal stays ignored across exec) and is the sleep.
	cmd, g := startGroup(t, "sh -c 'trap \"\" TERM; echo $$ > "+child+"; exec sleep 60' & sleep 60")
	childPid, _ := strconv.Atoi(waitFile(t, child))
	m, err := g.Members()
	if err != nil || !slices.Contains(m, g.ID) || !slices.Contains(m, childPid) {
		t.Fatalf("members %v, %v: want the leader %d and the subshell %d", m, err, g.ID, childPid)
	}
	// The leader dies (as with the agent): the rest of the group is still the group's.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	m, err = g.Members()
	if err != nil || slices.Contains(m, g.ID) || !slices.Contains(m, childPid) {
		t.Fatalf("members after the leader died %v, %v: want the subshell %d without the leader", m, err, childPid)
	}
	if err := g.Wait(nil, time.Now().Add(300*time.Millisecond)); err != ErrStillRunning {
		t.Fatalf("Wait on a running group = %v, want ErrStillRunning", err)
	}
	killed, err := g.Stop(300*time.Millisecond, nil)
	if err != nil || !killed {
		t.Fatalf("Stop = %v, %v: the subshell ignores SIGTERM, so SIGKILL was needed", killed, err)
	}
	if m, err := g.Members(); err != nil || len(m) != 0 {
		t.Fatalf("members after Stop %v, %v", m, err)
	}
	if sent, err := g.Signal(syscall.SIGKILL); sent || err != nil {
		t.Fatalf("Signal to a group that is gone = %v, %v; want nothing sent", sent, err)
	}
}

// The same numbers on another boot, or a live leader with another start time, are not the group.
func TestReusedNumbersAreNotTheGroup(t *testing.T) {
	t.Parallel()
	_, g := startGroup(t, "exec sleep 60")
	if m, _ := g.Members(); len(m) != 1 {
		t.Fatalf("members %v, want the leader", m)
	}
	other := g
	other.BootID = "00000000-0000-0000-0000-000000000000"
	if m, err := other.Members(); err != nil || len(m) != 0 {
		t.Fatalf("members of the group recorded on another boot: %v, %v", m, err)
	}
	other = g
	other.PidNS = "pid:[1]"
	if m, err := other.Members(); err != nil || len(m) != 0 {
		t.Fatalf("members of the group recorded in another pid namespace: %v, %v", m, err)
	}
	other = g
	other.StartTime = g.StartTime - 1
	if m, err := other.Members(); err != nil || len(m) != 0 {
		t.Fatalf("members of a group whose leader started at another time: %v, %v", m, err)
	}
	if sent, err := other.Signal(syscall.SIGKILL); sent || err != nil {
		t.Fatalf("Signal reached a group that is not the recorded one: %v, %v", sent, err)
	}
	if m, _ := g.Members(); len(m) != 1 {
		t.Fatalf("the real group was harmed: members %v", m)
	}
	if m, err := (Group{}).Members(); err != nil || len(m) != 0 {
		t.Fatalf("the zero group has members %v, %v", m, err)
	}
}

// A zombie runs nothing: a group left with only zombies is over.
func TestZombiesDoNotCount(t *testing.T) {
	t.Parallel()
	cmd, g := startGroup(t, "exit 0")
	// Not waited for yet: once it exits it is a zombie, still in its group.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := readStat(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if st.state == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %c", st.state)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m, err := g.Members(); err != nil || len(m) != 0 {
		t.Fatalf("members of a group of one zombie: %v, %v", m, err)
	}
}
