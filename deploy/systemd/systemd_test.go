// Package systemd holds the service units of the hub and the agent, their environment files and
// the agent's stricter drop-in; this test holds them to systemd's own checker and to the
// settings godwit really has.
package systemd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/cli"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/hubcmd"
)

// unit is a parsed unit file or drop-in: section → key → values in order.
type unit map[string]map[string][]string

func (u unit) get(section, key string) []string { return u[section][key] }

func (u unit) one(t *testing.T, name, section, key string) string {
	t.Helper()
	vs := u.get(section, key)
	if len(vs) != 1 {
		t.Fatalf("%s: [%s] %s= is set %d times, want once", name, section, key, len(vs))
	}
	return vs[0]
}

// parseUnit reads a unit file; with uncomment, "#Key=value" lines count as set (the drop-in's
// optional settings).
func parseUnit(t *testing.T, path string, uncomment bool) unit {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if uncomment && optionalSetting.MatchString(line) {
			line = line[1:]
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is not Key=value in a section", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// optionalSetting is a commented-out setting ("#Key=value", no space after #): the drop-in's
// choices and the environment files' defaults. Prose comments have a space after #.
var optionalSetting = regexp.MustCompile(`^#[A-Za-z][A-Za-z0-9_]*=`)

// envSetting is one GODWIT_* assignment of an environment file, active or commented out.
type envSetting struct {
	name, value string
	active      bool
	line        int
}

func parseEnvFile(t *testing.T, path string) []envSetting {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []envSetting
	assign := regexp.MustCompile(`^(#?)([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		m := assign.FindStringSubmatch(line)
		if m == nil {
			if line != "" && !strings.HasPrefix(line, "# ") && line != "#" {
				t.Errorf("%s:%d: %q is neither NAME=value, #NAME=value nor a comment", path, n, line)
			}
			continue
		}
		if !strings.HasPrefix(m[2], "GODWIT_") {
			t.Errorf("%s:%d: %s is not a GODWIT_* setting", path, n, m[2])
		}
		if strings.ContainsAny(m[3], `"'$\`) {
			t.Errorf("%s:%d: %s: keep values unquoted and free of $ and \\ (systemd and shells read them differently)", path, n, m[2])
		}
		out = append(out, envSetting{name: m[2], value: m[3], active: m[1] == "", line: n})
	}
	return out
}

// help returns the flags and GODWIT_* variables `godwit CMD --help` lists.
func help(t *testing.T, cmd string) (flags, env map[string]bool) {
	t.Helper()
	var out, errb bytes.Buffer
	if code := cli.Main(context.Background(), []string{cmd, "--help"}, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb}, hubcmd.Hub{}); code != 0 {
		t.Fatalf("godwit %s --help: exit %d: %s", cmd, code, errb.String())
	}
	flags, env = map[string]bool{}, map[string]bool{}
	for _, m := range regexp.MustCompile(`--([a-z][a-z0-9-]*)`).FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`\((GODWIT_[A-Z0-9_]+)\)`).FindAllStringSubmatch(out.String(), -1) {
		env[m[1]] = true
	}
	if len(flags) < 3 || len(env) < 3 {
		t.Fatalf("godwit %s --help lists %d flags and %d variables:\n%s", cmd, len(flags), len(env), out.String())
	}
	return flags, env
}

// service describes what the test knows of each unit.
type service struct {
	unit, cmd, envFile, dirVar string
	defaultStop                time.Duration // the program's own drain budget on SIGTERM
}

var services = []service{
	{unit: "godwit-hub.service", cmd: "hub", envFile: "hub.env", dirVar: "GODWIT_DATA_DIR", defaultStop: config.DefaultHub().ShutdownTimeout.D()},
	// The agent stops its step with SIGTERM, then SIGKILL 10s later (internal/agent/runner).
	{unit: "godwit-agent.service", cmd: "agent", envFile: "agent.env", dirVar: "GODWIT_STATE_DIR", defaultStop: 10 * time.Second},
}

const binary = "/usr/local/bin/godwit"

// Every setting the units and their environment files pass is one `godwit hub|agent --help`
// lists, with a value the configuration loader accepts; the restart policy follows the exit
// codes; the data dir is the one the sandbox opens.
func TestUnitsPassOnlyRealSettings(t *testing.T) {
	for _, s := range services {
		t.Run(s.unit, func(t *testing.T) {
			u := parseUnit(t, s.unit, false)
			flags, known := help(t, s.cmd)

			start := strings.Fields(u.one(t, s.unit, "Service", "ExecStart"))
			if len(start) < 2 || start[0] != binary || start[1] != s.cmd {
				t.Fatalf("ExecStart=%s, want %s %s …", strings.Join(start, " "), binary, s.cmd)
			}
			for _, arg := range start[2:] {
				name, _, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
				if strings.HasPrefix(arg, "--") && !flags[name] {
					t.Errorf("ExecStart passes %s, which godwit %s --help does not list", arg, s.cmd)
				}
			}
			vars := map[string]string{}
			for _, e := range u.get("Service", "Environment") {
				for _, kv := range strings.Fields(e) {
					k, v, _ := strings.Cut(kv, "=")
					if !known[k] {
						t.Errorf("Environment=%s: godwit %s --help lists no %s", kv, s.cmd, k)
					}
					vars[k] = v
				}
			}
			if got := u.get("Service", "EnvironmentFile"); !slices.Equal(got, []string{"-/etc/godwit/" + s.envFile}) {
				t.Errorf("EnvironmentFile=%v, want -/etc/godwit/%s", got, s.envFile)
			}
			settings := parseEnvFile(t, s.envFile)
			for _, e := range settings {
				if !known[e.name] {
					t.Errorf("%s:%d: godwit %s --help lists no %s", s.envFile, e.line, s.cmd, e.name)
				}
				if _, dup := vars[e.name]; dup && e.active {
					t.Errorf("%s:%d: %s is set by the unit already", s.envFile, e.line, e.name)
				}
			}

			// The values load and validate: the file as shipped, and with every commented
			// setting switched on.
			for _, all := range []bool{false, true} {
				env := map[string]string{}
				for k, v := range vars {
					env[k] = v
				}
				for _, e := range settings {
					if e.active || all {
						env[e.name] = e.value
					}
				}
				if err := loadConfig(t, s.cmd, env); err != nil {
					t.Errorf("%s (commented settings on: %v): %v", s.envFile, all, err)
				}
			}

			// Restart on failure (exit 1, signals) but not on a bad setting (exit 2), forever.
			if r := u.one(t, s.unit, "Service", "Restart"); r != "on-failure" {
				t.Errorf("Restart=%s, want on-failure", r)
			}
			prevent := strings.Fields(u.one(t, s.unit, "Service", "RestartPreventExitStatus"))
			if !slices.Contains(prevent, strconv.Itoa(cli.ExitUsage)) || slices.Contains(prevent, strconv.Itoa(cli.ExitError)) {
				t.Errorf("RestartPreventExitStatus=%v: must hold %d (bad usage or configuration) and not %d", prevent, cli.ExitUsage, cli.ExitError)
			}
			if v := u.one(t, s.unit, "Unit", "StartLimitIntervalSec"); v != "0" {
				t.Errorf("StartLimitIntervalSec=%s: a long outage must not make systemd give up restarting", v)
			}

			// systemd waits longer than the program drains.
			stop, err := time.ParseDuration(u.one(t, s.unit, "Service", "TimeoutStopSec"))
			if err != nil {
				t.Fatalf("TimeoutStopSec: %v", err)
			}
			drain := s.defaultStop
			for _, e := range settings {
				if e.name == "GODWIT_SHUTDOWN_TIMEOUT" {
					if d, err := time.ParseDuration(e.value); err == nil && d > drain {
						drain = d
					}
				}
			}
			if stop <= drain {
				t.Errorf("TimeoutStopSec=%s is not longer than the drain budget %s", stop, drain)
			}

			// The data or state dir is the one systemd creates (and, for the hub, opens in the
			// read-only file system).
			dir := vars[s.dirVar]
			if want := "/var/lib/" + u.one(t, s.unit, "Service", "StateDirectory"); dir != want {
				t.Errorf("%s=%s, but StateDirectory= makes %s", s.dirVar, dir, want)
			}
		})
	}
}

// loadConfig runs the configuration loader on env as the process environment, as the daemon
// would on start (no file, no flags), and validates the result.
func loadConfig(t *testing.T, cmd string, env map[string]string) error {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "GODWIT_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	switch cmd {
	case "hub":
		cfg := config.DefaultHub()
		if err := config.Load(cfg, "", nil); err != nil {
			return err
		}
		return cfg.Validate()
	default:
		cfg := config.DefaultAgent()
		if err := config.Load(cfg, "", nil); err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		return cfg.NeedEnrollment()
	}
}

// The hub is sandboxed; the agent is not by default, and its drop-in holds the stricter
// settings, with its state dir writable.
func TestHardening(t *testing.T) {
	hub := parseUnit(t, "godwit-hub.service", false)
	for key, want := range map[string]string{
		"User": "godwit", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/godwit",
		"PrivateTmp": "yes", "ProtectHome": "yes", "CapabilityBoundingSet": "",
	} {
		if got := hub.get("Service", key); !slices.Contains(got, want) {
			t.Errorf("godwit-hub.service: %s=%v, want %q", key, got, want)
		}
	}
	strict := parseUnit(t, filepath.Join("godwit-agent.service.d", "strict.conf"), true)
	for key, want := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict"} {
		if got := strict.get("Service", key); !slices.Contains(got, want) {
			t.Errorf("strict.conf: %s=%v, want %q", key, got, want)
		}
	}
	agent := parseUnit(t, "godwit-agent.service", false)
	state := "/var/lib/" + agent.one(t, "godwit-agent.service", "Service", "StateDirectory")
	if rw := strings.Fields(strings.Join(strict.get("Service", "ReadWritePaths"), " ")); !slices.Contains(rw, state) {
		t.Errorf("strict.conf: ReadWritePaths=%v does not hold the agent's state dir %s", rw, state)
	}
	if u := parseUnit(t, filepath.Join("godwit-agent.service.d", "strict.conf"), false); len(u["Service"]) != 0 {
		t.Errorf("strict.conf sets %v: its settings are choices, shipped commented out", u["Service"])
	}
}

// systemd's own checker accepts the units and the drop-in with every setting switched on.
// Debian's systemd package has systemd-analyze; scripts/test installs it where it can.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("systemd-analyze not found (Debian package systemd) and CI=true makes this check mandatory")
		}
		t.Skipf("systemd-analyze not found (install Debian's systemd package): the units are not verified by systemd")
	}
	// systemd checks that ExecStart's program exists and is executable: any executable stands in
	// for the installed godwit, here this test binary.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range []string{"godwit-hub.service", "godwit-agent.service"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(raw, []byte(binary)) {
			t.Fatalf("%s does not run %s", f, binary)
		}
		if err := os.WriteFile(filepath.Join(dir, f), bytes.ReplaceAll(raw, []byte(binary), []byte(self)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verify := func(units ...string) {
		t.Helper()
		args := []string{"verify", "--man=no"}
		for _, u := range units {
			args = append(args, filepath.Join(dir, u))
		}
		out, err := exec.Command(analyze, args...).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	verify("godwit-hub.service", "godwit-agent.service")

	// The drop-in with every setting uncommented, next to the unit it belongs to.
	raw, err := os.ReadFile(filepath.Join("godwit-agent.service.d", "strict.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var on []string
	for _, line := range strings.Split(string(raw), "\n") {
		if optionalSetting.MatchString(line) {
			line = line[1:]
		}
		on = append(on, line)
	}
	if err := os.Mkdir(filepath.Join(dir, "godwit-agent.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "godwit-agent.service.d", "strict.conf"), []byte(strings.Join(on, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	verify("godwit-agent.service")
	t.Logf("verified with %s", firstLine(exec.Command(analyze, "--version")))
}

func firstLine(c *exec.Cmd) string {
	out, _ := c.Output()
	line, _, _ := strings.Cut(string(out), "\n")
	return fmt.Sprint(line)
}
