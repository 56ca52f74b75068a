package policy

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/execute"
)

// deathsigHelper, set in the environment, makes the test binary run one command as nobody
// through Prepare and execute.Run, as the agent does, and wait.
const deathsigHelper = "GODWIT_TEST_DEATHSIG_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(deathsigHelper); dir != "" {
		p, err := Parse([]byte("apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  runAs: {user: nobody, workDir: " + dir + "}\n"))
		if err == nil {
			err = p.Validate()
		}
		if err == nil {
			err = p.Resolve()
		}
		if err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(3)
		}
		c := execute.Command{Script: "echo $$ > leader.pid; exec sleep 120", Timeout: time.Hour}
		p.Prepare(&c)
		execute.Run(context.Background(), c)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A command run as another user still dies with the agent: the kernel clears the parent-death
// signal when credentials change, so it must be set after the switch (Go does). The test kills
// the "agent" (a helper process) with SIGKILL and expects the command's leader gone.
func TestCommandAsAnotherUserDiesWithTheAgent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root can switch to another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	dir, err := os.MkdirTemp("", "godwit-deathsig")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	uid, _ := strconv.Atoi(nobody.Uid)
	if err := os.Chown(dir, uid, -1); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	exe, _ := os.Executable()
	helper := exec.Command(exe, "-test.run", "^$")
	helper.Env = append(os.Environ(), deathsigHelper+"="+dir)
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })

	var pid int
	deadline := time.Now().Add(30 * time.Second)
	for pid == 0 {
		if b, err := os.ReadFile(filepath.Join(dir, "leader.pid")); err == nil && strings.HasSuffix(string(b), "\n") {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if time.Now().After(deadline) {
			t.Fatal("the command did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/"+strconv.Itoa(pid), &st); err != nil || int(st.Uid) != uid {
		t.Fatalf("the command's leader %d: %v, owned by %d, want nobody (%d)", pid, err, st.Uid, uid)
	}
	_ = helper.Process.Kill()
	_ = helper.Wait()
	deadline = time.Now().Add(30 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the command's leader %d (run as nobody) outlived the agent by 30s", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie, dead but not reaped, does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
