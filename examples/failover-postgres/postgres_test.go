// Package failoverpostgres is the failover-postgres example's end-to-end test: two PostgreSQL
// 15 servers in streaming replication on loopback, two `godwit failover member` processes on an
// embedded NATS server, and pg-hook.sh as the group's hooks.
package failoverpostgres

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/failover/drill"
)

const pgbin = "/usr/lib/postgresql/15/bin"

// asPostgres runs a PostgreSQL command, as the user postgres when this process is root
// (PostgreSQL refuses to run as root).
func asPostgres(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(pgbin, name), args...)
	if os.Getuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(pgbin, name)}, args...)...)
	}
	cmd.Dir = "/" // the user postgres may not enter the test's directory (a private checkout)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func sql(port int, q string) (string, error) {
	args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", "-d", "postgres", "-Atqc", q}
	cmd := exec.Command(filepath.Join(pgbin, "psql"), args...)
	if os.Getuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(pgbin, "psql")}, args...)...)
	}
	cmd.Dir = "/" // the user postgres may not enter the test's directory (a private checkout)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output() // the answer only: a warning on stderr is not part of it
	if err != nil {
		return strings.TrimSpace(string(out) + stderr.String()), err
	}
	return strings.TrimSpace(string(out)), nil
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func eventually(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The primary's member and its server are killed: the replica is promoted, takes writes, and
// the old primary comes back as a standby of it (pg_rewind) when its member restarts.
func TestPostgresFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	if _, err := os.Stat(filepath.Join(pgbin, "initdb")); err != nil {
		t.Skipf("PostgreSQL 15 binaries not found in %s", pgbin)
	}
	if os.Getuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			t.Fatalf("running as root needs the user postgres to run PostgreSQL as: %v", err)
		}
	}
	// A directory the user postgres can enter.
	dir, err := os.MkdirTemp("", "godwit-failover-pg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		more, _ := filepath.Glob(filepath.Join(dir, "pg", "hook-*.log"))
		for _, f := range append(logs, more...) {
			b, _ := os.ReadFile(f)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("%s:\n%s", f, b)
		}
	})
	bin := filepath.Join(dir, "godwit")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/godwit")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	pgDir := filepath.Join(dir, "pg")
	if err := os.Mkdir(pgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		if out, err := exec.Command("chown", "postgres:postgres", pgDir).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}
	dataA, dataB := filepath.Join(pgDir, "a"), filepath.Join(pgDir, "b")
	portA, portB := freePort(t), freePort(t)
	asPostgres(t, "initdb", "-D", dataA, "-U", "postgres", "--auth=trust", "--data-checksums", "-E", "UTF8")
	conf := "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\nwal_level = replica\nmax_wal_senders = 5\n" +
		"hot_standby = on\nwal_log_hints = on\nwal_keep_size = '256MB'\nfsync = off\n"
	appendAs(t, filepath.Join(dataA, "postgresql.conf"), conf)
	stopAll := func() {
		for _, d := range []string{dataA, dataB} {
			cmd := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(pgbin, "pg_ctl"), "-D", d, "-m", "immediate", "stop")
			cmd.Dir = "/"
			if os.Getuid() != 0 {
				cmd = exec.Command(filepath.Join(pgbin, "pg_ctl"), "-D", d, "-m", "immediate", "stop")
			}
			_ = cmd.Run()
		}
	}
	t.Cleanup(stopAll)
	asPostgres(t, "pg_ctl", "-D", dataA, "-l", filepath.Join(pgDir, "a.log"), "-w", "-o", "-p "+strconv.Itoa(portA), "start")
	asPostgres(t, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(portA), "-U", "postgres", "-D", dataB, "-R", "-X", "stream")
	asPostgres(t, "pg_ctl", "-D", dataB, "-l", filepath.Join(pgDir, "b.log"), "-w", "-o", "-p "+strconv.Itoa(portB), "start")

	c, err := drill.NewGroup(bin, dir, 2, "pg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	c.T = drill.Timing{Interval: 300, Timeout: 1000, Threshold: 3, Margin: 3000, Failover: 7000, FenceMS: 3000}
	hook, _ := filepath.Abs("pg-hook.sh")
	idA, idB := c.IDs[0], c.IDs[1]
	spec := fmt.Sprintf(`apiVersion: godwit.dev/v1
kind: FailoverGroup
metadata: {name: pg}
spec:
  members:
    - {agent: %s, priority: 100}
    - {agent: %s, priority: 50}
  heartbeatInterval: 300ms
  heartbeatTimeout: 1s
  failureThreshold: 3
  safetyMargin: 3s
  failoverTimeout: 7s
  hooks:
    healthCheck: {command: "%[3]s health", timeout: 1s}
    onPromote: {command: "%[3]s promote", timeout: 60s}
    onFence: {command: "%[3]s fence", timeout: 3s}
    onDemote: {command: "%[3]s demote", timeout: 2m}
`, idA, idB, hook)
	if err := os.WriteFile(c.Spec, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	env := func(data string, port, peer int) []string {
		return []string{"PGDATA=" + data, "PGPORT=" + strconv.Itoa(port), "PEER_PORT=" + strconv.Itoa(peer), "PGBIN=" + pgbin}
	}
	c.Env[idA], c.Env[idB] = env(dataA, portA, portB), env(dataB, portB, portA)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	if err := c.Start(idA); err != nil {
		t.Fatal(err)
	}
	if p, err := c.WaitPrimary(ctx, ""); err != nil || p != idA {
		t.Fatalf("primary %q, %v", p, err)
	}
	if err := c.Start(idB); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b watches", time.Minute, func() error {
		if r, s, _ := c.State(idB); r != "replica" || s != "watching" {
			return fmt.Errorf("b is %s %s", r, s)
		}
		return nil
	})
	if _, err := sql(portA, "create table t (v text); insert into t values ('before')"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the row replicated to b", time.Minute, func() error {
		got, err := sql(portB, "select string_agg(v, ',') from t")
		if err != nil || got != "before" {
			return fmt.Errorf("%q %v", got, err)
		}
		return nil
	})

	// Kill a's member and a's server.
	pid := postmasterPID(t, dataA)
	c.Kill(idA)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	killed := time.Now()
	if p, err := c.WaitPrimary(ctx, idA); err != nil || p != idB {
		t.Fatalf("primary %q, %v", p, err)
	}
	t.Logf("b promoted %s after the kill (failoverTimeout 7s)", time.Since(killed).Round(time.Millisecond))
	if got, err := sql(portB, "select pg_is_in_recovery()"); got != "f" || err != nil {
		t.Fatalf("b in recovery: %q %v", got, err)
	}
	if _, err := sql(portB, "insert into t values ('after')"); err != nil {
		t.Fatalf("a write on the promoted b: %v", err)
	}

	// a comes back: its member reads the record (b is primary), rewinds a onto b and follows.
	if err := c.Start(idA); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a follows b", time.Minute, func() error {
		if r, s, _ := c.State(idA); r != "replica" || s != "watching" {
			return fmt.Errorf("a is %s %s", r, s)
		}
		got, err := sql(portA, "select pg_is_in_recovery(), (select string_agg(v, ',' order by v) from t)")
		if err != nil || got != "t|after,before" {
			return fmt.Errorf("a answers %q, %v", got, err)
		}
		return nil
	})
	lines, err := drill.ReadLog(c.Log)
	if err == nil && len(lines) > 0 {
		t.Logf("%d hook log lines", len(lines))
	}
}

func appendAs(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func postmasterPID(t *testing.T, data string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
