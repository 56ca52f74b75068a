// Package policy is the agent's own limit on what the hub may make it run: the AgentPolicy
// file given with `godwit agent --policy FILE` (docs/security.md, "Agent policy").
//
//	apiVersion: godwit.dev/v1
//	kind: AgentPolicy
//	metadata: {name: web}
//	spec:
//	  commands:                 # allow-lists per kind of command; absent: no allow-list
//	    detect:   [{prefix: "test -f /etc/app/"}]
//	    run:      [{exact: "/usr/local/bin/app-migrate v2"}]
//	    verify:   [{regexp: '^systemctl is-active [a-z-]+$'}]
//	    rollback: []            # nothing
//	    check:    []            # sweep checks
//	    healthCheck: [{exact: "pg_isready -q"}]   # failover group hooks, one kind per hook
//	    onPromote:   [{exact: "/usr/local/bin/pg-promote"}]
//	    onFence:     [{exact: "systemctl stop postgresql"}]
//	    onDemote:    []
//	  runAs: {user: app, group: app, workDir: /var/lib/app}
//	  maxTimeout: 30m
//	  env: {allow: [PATH, LANG, "LC_*"]}
//	  signatures:
//	    trustedKeys:
//	      - {name: ops, publicKeyFile: /etc/godwit/ops.pub}
//
// The promises it keeps:
//   - Every command is checked (Check) before it runs. A refusal is a *Refusal that names the
//     rule (spec.commands.run, spec.maxTimeout, spec.signatures); the runner turns it into a
//     migration.policy.refused event and fails the assignment: nothing of it ran.
//   - With spec.commands present, a kind it does not list allows nothing. An exact entry matches
//     the whole command; a regexp entry the whole command too (it is anchored); a prefix entry
//     matches a command that starts with it and whose rest holds none of the shell's control
//     characters (; & | < > $ ` ( ) and line breaks), so a prefix cannot be extended into a
//     second command.
//   - With runAs, every command runs as that user and group, with no supplementary groups,
//     HOME, USER and LOGNAME set to the user's, in runAs.workDir (default /). Load refuses a
//     policy whose user the agent cannot switch to: it tries, before the agent starts.
//   - With env.allow, only those variables of the agent's environment reach a command (an
//     entry ending in * allows a prefix), besides the GODWIT_* variables the runner sets.
//   - Failover group hooks (healthCheck, onPromote, onFence, onDemote) are command kinds of
//     their own, named as the FailoverGroup names them: with spec.commands present, a hook the
//     allow-list of its kind does not match is refused, and the agent does not join the group.
//   - With trusted keys, a migration's commands run only when its steps carry a valid signature
//     by one of them (package specsig); sweep checks are governed by the allow-lists alone.
//     Failover groups are not signed: under trusted keys a hook runs only when spec.commands
//     allows it, so a policy with keys and no allow-lists refuses every hook.
//   - Digest is "sha256:" and the SHA-256 of the policy's canonical form (public keys by
//     content, not by file name); the agent reports it to the hub with every heartbeat.
package policy

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"godwit.dev/godwit/internal/agent/execute"
	"godwit.dev/godwit/internal/manifest"
	"godwit.dev/godwit/internal/specsig"
	"godwit.dev/godwit/internal/wire"
)

// KindName is the kind of a policy document.
const KindName = "AgentPolicy"

// MaxBytes bounds a policy file.
const MaxBytes = 256 << 10

var kind = manifest.Kind{Name: KindName, MaxBytes: MaxBytes}

// Command kinds: the phases of a migration step, sweep checks, and the hooks of a failover
// group (named as its spec.hooks names them).
const (
	KindDetect      = "detect"
	KindRun         = "run"
	KindVerify      = "verify"
	KindRollback    = "rollback"
	KindCheck       = "check"
	KindHealthCheck = "healthCheck"
	KindOnPromote   = "onPromote"
	KindOnFence     = "onFence"
	KindOnDemote    = "onDemote"
)

// Kinds are the command kinds in the order of the file's reference.
var Kinds = []string{KindDetect, KindRun, KindVerify, KindRollback, KindCheck,
	KindHealthCheck, KindOnPromote, KindOnFence, KindOnDemote}

// HookKinds are the kinds of failover group hooks.
var HookKinds = []string{KindHealthCheck, KindOnPromote, KindOnFence, KindOnDemote}

// IsHook reports whether kind is a failover group hook's.
func IsHook(kind string) bool { return slices.Contains(HookKinds, kind) }

// shellControl are the characters that may not follow a prefix entry's match.
const shellControl = ";&|<>$`()\n\r"

// Entry is one allow-list entry: exactly one of its fields is set.
type Entry struct {
	Exact  string
	Prefix string
	Regexp string
	re     *regexp.Regexp
}

// String renders the entry as it is written in the file.
func (e Entry) String() string {
	switch {
	case e.Prefix != "":
		return "prefix " + strconv.Quote(e.Prefix)
	case e.Regexp != "":
		return "regexp " + strconv.Quote(e.Regexp)
	}
	return "exact " + strconv.Quote(e.Exact)
}

func (e Entry) matches(cmd string) bool {
	switch {
	case e.Prefix != "":
		rest, ok := strings.CutPrefix(cmd, e.Prefix)
		return ok && !strings.ContainsAny(rest, shellControl)
	case e.re != nil:
		return e.re.MatchString(cmd)
	}
	return cmd == e.Exact
}

// RunAs is the user commands run as.
type RunAs struct {
	User    string
	Group   string // default: the user's primary group
	WorkDir string // default: /
}

// KeyRef is a trusted key as the file names it: inline PEM or a file.
type KeyRef struct {
	Name          string
	PublicKey     string
	PublicKeyFile string
}

// Policy is a parsed and loaded policy. Build one with Load (or Parse and Resolve).
type Policy struct {
	Metadata manifest.Metadata
	// Commands are the allow-lists by kind; nil when the file sets none (anything may run).
	Commands   map[string][]Entry
	RunAs      RunAs
	MaxTimeout time.Duration // 0: none
	// EnvAllow lists the variables let through; nil when the file sets none (all are).
	EnvAllow    []string
	TrustedKeys []KeyRef

	lines  manifest.Lines
	keys   []specsig.TrustedKey
	cred   *syscall.Credential
	home   string
	digest string
}

// Load reads, validates and resolves a policy file: its keys are read and its user is looked
// up and tried. Errors name the file, and the field and line.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	p, err := Parse(data)
	if err == nil {
		err = p.Validate()
	}
	if err == nil {
		err = p.Resolve()
	}
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return p, nil
}

// Parse reads one AgentPolicy document strictly (see package manifest). It does not validate.
func Parse(data []byte) (*Policy, error) {
	p := &Policy{}
	entries := func(kindName string) manifest.Field {
		return manifest.Read(kindName, func(v manifest.Value) {
			list := []Entry{}
			v.Each(func(item manifest.Value) {
				var e Entry
				item.Mapping(manifest.String("exact", &e.Exact), manifest.String("prefix", &e.Prefix),
					manifest.String("regexp", &e.Regexp))
				list = append(list, e)
			})
			p.Commands[kindName] = list
		})
	}
	cmdFields := make([]manifest.Field, len(Kinds))
	for i, k := range Kinds {
		cmdFields[i] = entries(k)
	}
	lines, err := kind.Decode(data, &p.Metadata,
		manifest.Read("commands", func(v manifest.Value) {
			if v.Shape() == "value" {
				if _, ok := v.Scalar(); ok {
					v.Fail("must be a mapping of command kinds (%s) to allow-lists", strings.Join(Kinds, ", "))
				}
				return
			}
			p.Commands = map[string][]Entry{}
			v.Mapping(cmdFields...)
		}),
		manifest.Object("runAs", manifest.String("user", &p.RunAs.User), manifest.String("group", &p.RunAs.Group),
			manifest.String("workDir", &p.RunAs.WorkDir)),
		manifest.Duration("maxTimeout", &p.MaxTimeout),
		manifest.Object("env", manifest.Read("allow", func(v manifest.Value) {
			if v.Shape() == "value" { // null is absent: every variable passes
				if _, ok := v.Scalar(); ok {
					v.Fail("must be a list of variable names")
				}
				return
			}
			p.EnvAllow = []string{}
			v.Each(func(item manifest.Value) {
				if s, ok := item.Scalar(); ok {
					p.EnvAllow = append(p.EnvAllow, s)
				}
			})
		})),
		manifest.Object("signatures", manifest.List("trustedKeys", func(v manifest.Value) {
			var k KeyRef
			v.Mapping(manifest.String("name", &k.Name), manifest.String("publicKey", &k.PublicKey),
				manifest.String("publicKeyFile", &k.PublicKeyFile))
			p.TrustedKeys = append(p.TrustedKeys, k)
		})),
	)
	if err != nil {
		return nil, err
	}
	p.lines = lines
	return p, nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\*?$`)

// Validate checks the policy's values; errors name the field and its line.
func (p *Policy) Validate() error {
	r := manifest.Report{Lines: p.lines}
	r.Header(KindName, manifest.APIVersion, KindName, p.Metadata)
	for _, k := range Kinds {
		for i := range p.Commands[k] {
			e := &p.Commands[k][i]
			path := fmt.Sprintf("spec.commands.%s[%d]", k, i)
			set := 0
			for _, s := range []string{e.Exact, e.Prefix, e.Regexp} {
				if s != "" {
					set++
				}
			}
			if set != 1 {
				r.Fail(path, "must set exactly one of exact, prefix or regexp (not empty)")
				continue
			}
			r.Command(path, e.Exact+e.Prefix+e.Regexp)
			if e.Regexp != "" {
				re, err := regexp.Compile(`^(?:` + e.Regexp + `)$`)
				if err != nil {
					r.Fail(path+".regexp", "is not a regular expression: %v", err)
					continue
				}
				e.re = re
			}
		}
	}
	if p.RunAs.User == "" && (p.RunAs.Group != "" || p.RunAs.WorkDir != "") {
		r.Fail("spec.runAs.user", "is required when runAs sets a group or a workDir")
	}
	if p.RunAs.WorkDir != "" && !strings.HasPrefix(p.RunAs.WorkDir, "/") {
		r.Fail("spec.runAs.workDir", "must be an absolute path, not %q", p.RunAs.WorkDir)
	}
	if p.MaxTimeout < 0 {
		r.Fail("spec.maxTimeout", "must not be negative")
	}
	for i, n := range p.EnvAllow {
		if !envName.MatchString(n) {
			r.Fail(fmt.Sprintf("spec.env.allow[%d]", i), "%q is not a variable name (letters, digits and _, optionally ending in * for a prefix)", n)
		}
	}
	names := map[string]bool{}
	for i, k := range p.TrustedKeys {
		path := fmt.Sprintf("spec.signatures.trustedKeys[%d]", i)
		r.Name(path+".name", k.Name)
		if names[k.Name] {
			r.Fail(path+".name", "%q names two keys", k.Name)
		}
		names[k.Name] = true
		if (k.PublicKey == "") == (k.PublicKeyFile == "") {
			r.Fail(path, "must set exactly one of publicKey (PEM) or publicKeyFile")
		} else if k.PublicKey != "" {
			if _, err := specsig.ParsePublicKey([]byte(k.PublicKey)); err != nil {
				r.Fail(path+".publicKey", "%v", err)
			}
		}
	}
	return r.Err()
}

// Resolve reads the trusted keys, looks the user up and tries to run a command as it, and
// computes the digest. A user the agent cannot switch to (it is not root, the user or group
// does not exist, the work directory is out of the user's reach) is an error naming the field.
func (p *Policy) Resolve() error {
	r := manifest.Report{Lines: p.lines}
	p.keys = nil
	for i, k := range p.TrustedKeys {
		path := fmt.Sprintf("spec.signatures.trustedKeys[%d]", i)
		data := []byte(k.PublicKey)
		if k.PublicKeyFile != "" {
			path += ".publicKeyFile"
			b, err := os.ReadFile(k.PublicKeyFile)
			if err != nil {
				r.Fail(path, "%v", err)
				continue
			}
			data = b
		} else {
			path += ".publicKey"
		}
		pub, err := specsig.ParsePublicKey(data)
		if err != nil {
			r.Fail(path, "%v", err)
			continue
		}
		p.keys = append(p.keys, specsig.TrustedKey{Name: k.Name, Key: pub})
	}
	if p.RunAs.User != "" {
		if err := p.resolveUser(&r); err != nil {
			return err
		}
	}
	if err := r.Err(); err != nil {
		return err
	}
	p.digest = "sha256:" + manifest.Hash(p.canonical())
	return nil
}

func (p *Policy) resolveUser(r *manifest.Report) error {
	u, err := user.Lookup(p.RunAs.User)
	if err != nil {
		r.Fail("spec.runAs.user", "%v", err)
		return r.Err()
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		r.Fail("spec.runAs.user", "user %s has a uid or gid that is not a number (%s, %s)", u.Username, u.Uid, u.Gid)
		return r.Err()
	}
	if p.RunAs.Group != "" {
		g, err := user.LookupGroup(p.RunAs.Group)
		if err != nil {
			r.Fail("spec.runAs.group", "%v", err)
			return r.Err()
		}
		if gid, err = strconv.ParseUint(g.Gid, 10, 32); err != nil {
			r.Fail("spec.runAs.group", "group %s has a gid that is not a number (%s)", g.Name, g.Gid)
			return r.Err()
		}
	}
	p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	if os.Geteuid() != 0 {
		// Only root may set the supplementary groups; a user running the agent as itself keeps
		// its own (the probe below says whether the switch works at all).
		p.cred.Groups, p.cred.NoSetGroups = nil, true
	}
	p.home = u.HomeDir
	// Try it, as the runner will: the agent must be able to switch, and the user to enter the
	// work directory.
	probe := exec.Command("/bin/sh", "-c", "exit 0")
	probe.Dir, probe.Env = p.workDir(), []string{}
	probe.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := probe.CombinedOutput(); err != nil {
		field := "spec.runAs.user"
		msg := fmt.Sprintf("the agent cannot run commands as %s (uid %d, gid %d): %v", u.Username, uid, gid, err)
		if os.Geteuid() != 0 && uint64(os.Geteuid()) != uid {
			msg += fmt.Sprintf("; the agent runs as uid %d, and only root can switch to another user", os.Geteuid())
		} else if p.RunAs.WorkDir != "" {
			field = "spec.runAs.workDir"
			msg = fmt.Sprintf("user %s cannot run commands in %s: %v", u.Username, p.workDir(), err)
		}
		if s := strings.TrimSpace(string(out)); s != "" {
			msg += ": " + s
		}
		r.Fail(field, "%s", msg)
		return r.Err()
	}
	return nil
}

func (p *Policy) workDir() string {
	if p.RunAs.WorkDir != "" {
		return p.RunAs.WorkDir
	}
	return "/"
}

// Digest is "sha256:" and the hex SHA-256 of the policy's canonical form; "" for a nil policy.
func (p *Policy) Digest() string {
	if p == nil {
		return ""
	}
	return p.digest
}

// Name is the policy's metadata.name.
func (p *Policy) Name() string { return p.Metadata.Name }

type canonicalEntry struct {
	Exact  string `json:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	Regexp string `json:"regexp,omitempty"`
}

type canonicalKey struct {
	Name      string `json:"name"`
	KeyID     string `json:"keyID"`
	PublicKey string `json:"publicKey"` // raw 32 bytes, base64
}

type canonicalPolicy struct {
	APIVersion string                      `json:"apiVersion"`
	Kind       string                      `json:"kind"`
	Name       string                      `json:"name"`
	Commands   map[string][]canonicalEntry `json:"commands"` // null: no allow-lists
	RunAs      RunAs                       `json:"runAs"`
	MaxTimeout string                      `json:"maxTimeout"`
	EnvAllow   []string                    `json:"envAllow"` // null: all
	Keys       []canonicalKey              `json:"trustedKeys"`
}

func (p *Policy) canonical() canonicalPolicy {
	c := canonicalPolicy{APIVersion: manifest.APIVersion, Kind: KindName, Name: p.Metadata.Name, RunAs: p.RunAs,
		EnvAllow: p.EnvAllow, Keys: []canonicalKey{}}
	if p.MaxTimeout > 0 {
		c.MaxTimeout = manifest.FormatDuration(p.MaxTimeout)
	}
	if p.Commands != nil {
		c.Commands = map[string][]canonicalEntry{}
		for _, k := range Kinds {
			list := []canonicalEntry{}
			for _, e := range p.Commands[k] {
				list = append(list, canonicalEntry{Exact: e.Exact, Prefix: e.Prefix, Regexp: e.Regexp})
			}
			c.Commands[k] = list
		}
	}
	for _, k := range p.keys {
		c.Keys = append(c.Keys, canonicalKey{Name: k.Name, KeyID: specsig.KeyID(k.Key),
			PublicKey: base64.StdEncoding.EncodeToString(k.Key)})
	}
	return c
}

// Command is one command the hub asks the agent to run.
type Command struct {
	Kind    string // detect, run, verify, rollback, check, or a hook kind (HookKinds)
	Script  string
	Timeout time.Duration
	// Migration, Steps and Signature are the assignment the command belongs to (not for checks
	// and hooks).
	Migration string
	Steps     []wire.StepSpec
	Signature string
}

// Refusal is why the policy refuses a command: the rule (a field of the policy file) and why.
type Refusal struct {
	Policy string // metadata.name
	Rule   string // spec.commands.run, spec.maxTimeout, spec.signatures.trustedKeys
	Reason string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("refused by agent policy %q, rule %s: %s", r.Policy, r.Rule, r.Reason)
}

// Check returns nil when c may run, or the *Refusal that names the rule. A nil policy allows
// everything.
func (p *Policy) Check(c Command) error {
	if p == nil {
		return nil
	}
	refuse := func(rule, format string, args ...any) error {
		return &Refusal{Policy: p.Metadata.Name, Rule: rule, Reason: fmt.Sprintf(format, args...)}
	}
	if len(p.keys) > 0 && IsHook(c.Kind) && p.Commands == nil {
		// A failover group carries no signature: the allow-lists are the only gate for its
		// hooks, and with keys but no allow-lists nothing vouches for them.
		return refuse("spec.signatures.trustedKeys", "failover group hooks are not signed, and this agent runs only signed commands (trusted keys: %s) unless spec.commands.%s allows them; refused %s",
			p.keyNames(), c.Kind, quoteClip(c.Script))
	}
	if len(p.keys) > 0 && c.Kind != KindCheck && !IsHook(c.Kind) {
		_, err := specsig.Verify(p.keys, c.Signature, c.Migration, c.Steps)
		switch {
		case errors.Is(err, specsig.ErrUnsigned):
			return refuse("spec.signatures.trustedKeys", "migration %s is not signed, and this agent runs only steps signed by one of its %d trusted keys (%s)",
				c.Migration, len(p.keys), p.keyNames())
		case err != nil:
			return refuse("spec.signatures.trustedKeys", "migration %s: %v; trusted keys: %s", c.Migration, err, p.keyNames())
		}
	}
	if p.MaxTimeout > 0 && (c.Timeout <= 0 || c.Timeout > p.MaxTimeout) {
		t := "none"
		if c.Timeout > 0 {
			t = manifest.FormatDuration(c.Timeout)
		}
		return refuse("spec.maxTimeout", "the %s command's timeout (%s) is over the %s this agent allows", c.Kind, t,
			manifest.FormatDuration(p.MaxTimeout))
	}
	if p.Commands != nil {
		list := p.Commands[c.Kind]
		if !slices.ContainsFunc(list, func(e Entry) bool { return e.matches(c.Script) }) {
			rule := "spec.commands." + c.Kind
			if len(list) == 0 {
				return refuse(rule, "no %s command is allowed on this agent; refused %s", c.Kind, quoteClip(c.Script))
			}
			return refuse(rule, "%s matches none of its %d entries", quoteClip(c.Script), len(list))
		}
	}
	return nil
}

func (p *Policy) keyNames() string {
	names := make([]string, len(p.keys))
	for i, k := range p.keys {
		names[i] = k.Name + " (" + specsig.KeyID(k.Key) + ")"
	}
	return strings.Join(names, ", ")
}

func quoteClip(s string) string {
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strconv.Quote(s)
}

// Prepare sets what the policy decides of how c runs: the user and group, the work directory
// and the environment. A nil policy leaves c as it is.
func (p *Policy) Prepare(c *execute.Command) {
	if p == nil {
		return
	}
	if p.EnvAllow != nil || p.cred != nil {
		env := []string{}
		for _, kv := range os.Environ() {
			name, _, _ := strings.Cut(kv, "=")
			if p.cred != nil && (name == "HOME" || name == "USER" || name == "LOGNAME") {
				continue
			}
			if p.EnvAllow == nil || slices.ContainsFunc(p.EnvAllow, func(a string) bool {
				pre, wild := strings.CutSuffix(a, "*")
				return name == a || (wild && strings.HasPrefix(name, pre))
			}) {
				env = append(env, kv)
			}
		}
		if p.cred != nil {
			env = append(env, "HOME="+p.home, "USER="+p.RunAs.User, "LOGNAME="+p.RunAs.User)
		}
		c.Environ = env
	}
	if p.cred != nil {
		cred := *p.cred
		c.Credential = &cred
		c.Dir = p.workDir()
	}
}
