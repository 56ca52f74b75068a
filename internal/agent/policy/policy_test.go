package policy

import (
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/execute"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/specsig"
	"godwit.dev/godwit/internal/wire"
)

const allowList = `apiVersion: godwit.dev/v1
kind: AgentPolicy
metadata: {name: web}
spec:
  commands:
    detect: [{prefix: "test -f /etc/app/"}]
    run:
      - exact: /usr/local/bin/app-migrate v2
      - regexp: 'systemctl restart [a-z-]+'
    verify: []
  maxTimeout: 30m
  env: {allow: [PATH, "LC_*"]}
`

func mustLoad(t *testing.T, doc string) *Policy {
	t.Helper()
	p, err := Parse([]byte(doc))
	if err == nil {
		err = p.Validate()
	}
	if err == nil {
		err = p.Resolve()
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckAllowLists(t *testing.T) {
	p := mustLoad(t, allowList)
	for _, c := range []struct {
		kind, script string
		timeout      time.Duration
		rule         string // "" allowed
	}{
		{KindRun, "/usr/local/bin/app-migrate v2", time.Minute, ""},
		{KindRun, "/usr/local/bin/app-migrate v2 ", time.Minute, "spec.commands.run"},
		{KindRun, "/usr/local/bin/app-migrate v3", time.Minute, "spec.commands.run"},
		{KindRun, "systemctl restart app-web", time.Minute, ""},
		{KindRun, "systemctl restart app; rm -rf /", time.Minute, "spec.commands.run"}, // anchored
		{KindRun, "xsystemctl restart app", time.Minute, "spec.commands.run"},
		{KindDetect, "test -f /etc/app/v2", time.Minute, ""},
		{KindDetect, "test -f /etc/app/v2; rm -rf /", time.Minute, "spec.commands.detect"},
		{KindDetect, "test -f /etc/app/$(id)", time.Minute, "spec.commands.detect"},
		{KindDetect, "test -f /etc/app/x\nrm -rf /", time.Minute, "spec.commands.detect"},
		{KindDetect, "test -f /etc/app/x && reboot", time.Minute, "spec.commands.detect"},
		{KindVerify, "true", time.Minute, "spec.commands.verify"},
		{KindRollback, "true", time.Minute, "spec.commands.rollback"},
		{KindCheck, "true", time.Minute, "spec.commands.check"},
		{KindRun, "/usr/local/bin/app-migrate v2", time.Hour, "spec.maxTimeout"},
		{KindRun, "/usr/local/bin/app-migrate v2", 0, "spec.maxTimeout"},
	} {
		err := p.Check(Command{Kind: c.kind, Script: c.script, Timeout: c.timeout, Migration: "m"})
		var ref *Refusal
		switch {
		case c.rule == "" && err != nil:
			t.Errorf("%s %q: refused: %v", c.kind, c.script, err)
		case c.rule != "" && (!errors.As(err, &ref) || ref.Rule != c.rule || ref.Policy != "web"):
			t.Errorf("%s %q: err = %v, want a refusal by rule %s", c.kind, c.script, err, c.rule)
		}
	}
	var none *Policy
	if err := none.Check(Command{Kind: KindRun, Script: "anything"}); err != nil {
		t.Fatalf("no policy refused: %v", err)
	}
	open := mustLoad(t, "apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: open}\nspec: {}\n")
	if err := open.Check(Command{Kind: KindRollback, Script: "anything"}); err != nil {
		t.Fatalf("a policy without allow-lists refused: %v", err)
	}
}

func TestSignatures(t *testing.T) {
	pub, priv, _ := specsig.GenerateKey()
	pemKey, _ := specsig.MarshalPublicKey(pub)
	keyFile := filepath.Join(t.TempDir(), "ops.pub")
	if err := os.WriteFile(keyFile, pemKey, 0o644); err != nil {
		t.Fatal(err)
	}
	p := mustLoad(t, "apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: signed}\nspec:\n  signatures:\n    trustedKeys:\n"+
		"      - {name: ops, publicKeyFile: "+keyFile+"}\n")
	steps := []wire.StepSpec{{Name: "a", Run: "echo hi", TimeoutMS: 1000}}
	sig := specsig.Sign(priv, "m", steps).String()
	cmd := Command{Kind: KindRun, Script: "echo hi", Timeout: time.Second, Migration: "m", Steps: steps, Signature: sig}
	if err := p.Check(cmd); err != nil {
		t.Fatalf("signed steps refused: %v", err)
	}
	for name, mod := range map[string]func(c *Command){
		"unsigned": func(c *Command) { c.Signature = "" },
		"altered": func(c *Command) {
			c.Steps = []wire.StepSpec{{Name: "a", Run: "echo pwned", TimeoutMS: 1000}}
		},
		"garbage": func(c *Command) { c.Signature = "ed25519:nope" },
	} {
		c := cmd
		mod(&c)
		var ref *Refusal
		if err := p.Check(c); !errors.As(err, &ref) || ref.Rule != "spec.signatures.trustedKeys" {
			t.Errorf("%s: err = %v, want a refusal by spec.signatures.trustedKeys", name, err)
		}
	}
	// Sweep checks carry no signature: the allow-lists alone govern them.
	if err := p.Check(Command{Kind: KindCheck, Script: "true"}); err != nil {
		t.Fatalf("check refused for want of a signature: %v", err)
	}
	// The digest is the keys' content, not the file's name.
	inline := mustLoad(t, "apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: signed}\nspec:\n  signatures:\n    trustedKeys:\n"+
		"      - name: ops\n        publicKey: |\n"+indent(string(pemKey), "          "))
	if inline.Digest() != p.Digest() || !strings.HasPrefix(p.Digest(), "sha256:") {
		t.Fatalf("digests differ for the same key: %s, %s", inline.Digest(), p.Digest())
	}
	if mustLoad(t, allowList).Digest() == p.Digest() {
		t.Fatal("two different policies with one digest")
	}
}

func indent(s, pre string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" {
			b.WriteString(pre + l)
		}
	}
	return b.String()
}

// Null is the same as absent; an empty list is not.
func TestNullIsAbsent(t *testing.T) {
	head := "apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n"
	if p := mustLoad(t, head+"  commands: ~\n  env: {allow: ~}\n"); p.Commands != nil || p.EnvAllow != nil {
		t.Fatalf("null read as a value: %+v", p)
	}
	if p := mustLoad(t, head+"  commands: {}\n  env: {allow: []}\n"); p.Commands == nil || p.EnvAllow == nil {
		t.Fatalf("empty read as absent: %+v", p)
	}
	if _, err := Parse([]byte(head + "  env: {allow: PATH}\n")); err == nil || !strings.Contains(err.Error(), "spec.env.allow (line 5): must be a list") {
		t.Fatalf("a scalar allow: %v", err)
	}
}

func TestDigestIgnoresFormatting(t *testing.T) {
	a := mustLoad(t, allowList)
	b := mustLoad(t, "# comment\n"+strings.ReplaceAll(allowList, "maxTimeout: 30m", "maxTimeout: 1800s"))
	if a.Digest() != b.Digest() {
		t.Fatalf("same policy, different digests: %s, %s", a.Digest(), b.Digest())
	}
}

func TestErrorsNameFieldAndLine(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{"apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  commands:\n    run: [{exact: a, prefix: b}]\n",
			"spec.commands.run[0] (line 6): must set exactly one"},
		{"apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  commands:\n    run: [{regexp: '('}]\n",
			"spec.commands.run[0].regexp (line 6): is not a regular expression"},
		{"apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  commands:\n    apply: []\n",
			`spec.commands.apply (line 6): unknown field "apply"`},
		{"apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  runAs: {group: x}\n",
			"spec.runAs.user (line 5): is required"},
		{"apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  env:\n    allow: [PATH, 'A-B']\n",
			"spec.env.allow[1] (line 6)"},
		{"apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  runAs: {user: no-such-user-here}\n",
			"spec.runAs.user (line 5)"},
		{"apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  signatures:\n    trustedKeys:\n      - {name: a}\n",
			"spec.signatures.trustedKeys[0] (line 7): must set exactly one"},
		{"apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  maxTimeout: soon\n",
			"spec.maxTimeout (line 5)"},
		{"apiVersion: godwit.dev/v1\nkind: Migration\nmetadata: {name: p}\nspec: {}\n", "kind (line 2): must be AgentPolicy"},
	} {
		path := filepath.Join(t.TempDir(), "policy.yaml")
		_ = os.WriteFile(path, []byte(c.doc), 0o600)
		_, err := Load(path)
		if err == nil || !errors.Is(err, fault.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want %q", err, c.want)
		}
	}
}

// TestRunAs runs a command as nobody through Prepare and execute.Run, as the runner does.
func TestRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root can switch to another user")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody on this system: %v", err)
	}
	t.Setenv("GODWIT_TEST_SECRET", "s3cret")
	t.Setenv("LC_TEST", "yes")
	p := mustLoad(t, "apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  runAs: {user: nobody}\n  env: {allow: [PATH, 'LC_*']}\n")
	c := execute.Command{Script: `echo "$(id -u):$(id -g):$(id -G):$(pwd):$HOME:${GODWIT_TEST_SECRET-unset}:$LC_TEST:$EXTRA"`, Env: []string{"EXTRA=x"}, Timeout: time.Minute}
	p.Prepare(&c)
	res := execute.Run(context.Background(), c)
	want := u.Uid + ":" + u.Gid + ":" + u.Gid + ":/:" + u.HomeDir + ":unset:yes:x\n"
	if !res.OK() || res.Stdout != want {
		t.Fatalf("ran as %q (err %v, stderr %q), want %q", res.Stdout, res.StartErr, res.Stderr, want)
	}
	// A work directory nobody cannot enter is refused at load, not at the first command.
	dir := t.TempDir()
	_ = os.Chmod(dir, 0o700)
	pp, _ := Parse([]byte("apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  runAs: {user: nobody, workDir: " + dir + "}\n"))
	if err := pp.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := pp.Resolve(); err == nil || !strings.Contains(err.Error(), "spec.runAs.workDir (line 5)") {
		t.Fatalf("unreachable work dir: err = %v", err)
	}
}

// The example of docs/security.md is a valid policy.
func TestDocsExample(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i := strings.Index(s, "## Agent policy")
	if i < 0 {
		t.Fatal("docs/security.md has no section Agent policy")
	}
	s = s[i:]
	start := strings.Index(s, "```yaml\n")
	end := strings.Index(s[start+8:], "```")
	if start < 0 || end < 0 {
		t.Fatal("no yaml block in the section Agent policy")
	}
	p, err := Parse([]byte(s[start+8 : start+8+end]))
	if err == nil {
		err = p.Validate()
	}
	if err != nil {
		t.Fatalf("the example policy of docs/security.md: %v", err)
	}
	if len(p.Commands[KindRun]) != 2 || p.RunAs.User == "" || len(p.TrustedKeys) != 2 || p.MaxTimeout == 0 {
		t.Fatalf("the example lost a part: %+v", p)
	}
}

// Failover group hooks are kinds of their own: a hook kind the commands block leaves out
// allows nothing, maxTimeout refuses a longer hook, and under trusted keys (a group is never
// signed) only the allow-lists can let a hook through.
func TestCheckHooks(t *testing.T) {
	p := mustLoad(t, `apiVersion: godwit.dev/v1
kind: AgentPolicy
metadata: {name: db}
spec:
  commands:
    healthCheck: [{exact: "pg_isready -q"}]
    onPromote: [{prefix: "/usr/local/bin/pg-promote "}]
    onFence: []
  maxTimeout: 1m
`)
	for _, c := range []struct {
		kind, script string
		timeout      time.Duration
		rule         string // "" allowed
	}{
		{KindHealthCheck, "pg_isready -q", time.Second, ""},
		{KindHealthCheck, "pg_isready -q; touch /tmp/x", time.Second, "spec.commands.healthCheck"},
		{KindOnPromote, "/usr/local/bin/pg-promote main", time.Second, ""},
		{KindOnPromote, "/usr/local/bin/pg-promote main && reboot", time.Second, "spec.commands.onPromote"},
		{KindOnPromote, "/usr/local/bin/pg-promote main", time.Hour, "spec.maxTimeout"},
		{KindOnFence, "true", time.Second, "spec.commands.onFence"},   // an empty list
		{KindOnDemote, "true", time.Second, "spec.commands.onDemote"}, // absent from the block
		{KindRun, "pg_isready -q", time.Second, "spec.commands.run"},  // kinds do not mix
	} {
		err := p.Check(Command{Kind: c.kind, Script: c.script, Timeout: c.timeout})
		var ref *Refusal
		switch {
		case c.rule == "" && err != nil:
			t.Errorf("%s %q: refused: %v", c.kind, c.script, err)
		case c.rule != "" && (!errors.As(err, &ref) || ref.Rule != c.rule || ref.Policy != "db"):
			t.Errorf("%s %q: err = %v, want a refusal by rule %s", c.kind, c.script, err, c.rule)
		}
	}
	for _, k := range HookKinds {
		if !IsHook(k) {
			t.Errorf("IsHook(%s) = false", k)
		}
	}
	if IsHook(KindRun) || IsHook(KindCheck) {
		t.Error("a step or check kind taken for a hook")
	}

	pub, _, _ := specsig.GenerateKey()
	pemKey, _ := specsig.MarshalPublicKey(pub)
	keys := "  signatures:\n    trustedKeys:\n      - name: ops\n        publicKey: |\n" + indent(string(pemKey), "          ")
	head := "apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: signed}\nspec:\n"
	var ref *Refusal
	keysOnly := mustLoad(t, head+keys)
	if err := keysOnly.Check(Command{Kind: KindOnPromote, Script: "true", Timeout: time.Second}); !errors.As(err, &ref) || ref.Rule != "spec.signatures.trustedKeys" {
		t.Fatalf("a hook under trusted keys and no allow-lists: err = %v, want a refusal by spec.signatures.trustedKeys", err)
	}
	listed := mustLoad(t, head+"  commands:\n    onPromote: [{exact: \"true\"}]\n"+keys)
	if err := listed.Check(Command{Kind: KindOnPromote, Script: "true", Timeout: time.Second}); err != nil {
		t.Fatalf("a hook the allow-list names, under trusted keys: %v", err)
	}
	if err := listed.Check(Command{Kind: KindOnFence, Script: "true", Timeout: time.Second}); !errors.As(err, &ref) || ref.Rule != "spec.commands.onFence" {
		t.Fatalf("a hook the allow-list leaves out, under trusted keys: err = %v", err)
	}
	// A policy without allow-lists or keys lets hooks run, as it does every other command.
	open := mustLoad(t, head+"  maxTimeout: 1m\n")
	if err := open.Check(Command{Kind: KindOnFence, Script: "anything", Timeout: time.Second}); err != nil {
		t.Fatalf("an open policy refused a hook: %v", err)
	}
}
