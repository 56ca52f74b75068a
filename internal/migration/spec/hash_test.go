package spec

import (
	"strings"
	"testing"
)

// base is the reference spec of the hash tests; every variant below is either the same spec
// written differently or a real change.
const base = `apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: pg-15
  description: upgrade
spec:
  selector:
    matchLabels: {role: db, env: prod}
    matchExpressions:
      - {key: site, operator: In, values: [a, b]}
      - {key: legacy, operator: DoesNotExist}
  toVersion: "15"
  steps:
    - name: install
      run: apt-get install -y postgresql-15
      rollback: apt-get remove -y postgresql-15
    - name: switch
      run: pg_upgradecluster 14 main
      timeout: 30m
  rollout:
    canary: 1
    batchSize: 25%
    successThreshold: 90%
`

func TestHashSameSpec(t *testing.T) {
	want := mustParse(t, base).Hash()
	same := map[string]string{
		"comments and blank lines": "# header\n" + strings.ReplaceAll(base, "\n  steps:", "\n\n  # the work\n  steps:"),
		"key order": `kind: Migration
apiVersion: godwit.dev/v1
spec:
  rollout: {successThreshold: 90%, batchSize: 25%, canary: 1}
  steps:
    - run: apt-get install -y postgresql-15
      name: install
      rollback: apt-get remove -y postgresql-15
    - {timeout: 30m, run: pg_upgradecluster 14 main, name: switch}
  toVersion: "15"
  selector:
    matchExpressions:
      - {operator: DoesNotExist, key: legacy}
      - {values: [a, b], operator: In, key: site}
    matchLabels: {env: prod, role: db}
metadata: {description: upgrade, name: pg-15}
`,
		"defaults written out": strings.Replace(base, "      run: apt-get install -y postgresql-15\n",
			"      run: apt-get install -y postgresql-15\n      timeout: 10m\n", 1) + `    approval: auto
    onFailure: pause
  timeouts: {assignment: 1h, migration: 7d}
  deadlinePolicy: active
  onTimeout: pause
`,
		"same durations, other notation": strings.Replace(base, "timeout: 30m", "timeout: 1800s", 1),
		"unquoted version":               strings.Replace(base, `toVersion: "15"`, "toVersion: 15", 1),
		"single-quoted strings":          strings.Replace(base, "description: upgrade", "description: 'upgrade'", 1),
		"expression order": strings.Replace(base,
			"      - {key: site, operator: In, values: [a, b]}\n      - {key: legacy, operator: DoesNotExist}\n",
			"      - {key: legacy, operator: DoesNotExist}\n      - {key: site, operator: In, values: [a, b]}\n", 1),
		"value order and duplicates": strings.Replace(base, "values: [a, b]", "values: [b, a, b]", 1),
		"block style": strings.Replace(base, "    matchLabels: {role: db, env: prod}\n",
			"    matchLabels:\n      role: db\n      env: prod\n", 1),
		"null fields": strings.Replace(base, "  toVersion:", "  fromVersion: ~\n  timeouts:\n  toVersion:", 1),
		"JSON": `{"apiVersion":"godwit.dev/v1","kind":"Migration","metadata":{"name":"pg-15","description":"upgrade"},
"spec":{"selector":{"matchLabels":{"role":"db","env":"prod"},"matchExpressions":[{"key":"site","operator":"In","values":["a","b"]},{"key":"legacy","operator":"DoesNotExist"}]},
"toVersion":"15","steps":[{"name":"install","run":"apt-get install -y postgresql-15","rollback":"apt-get remove -y postgresql-15"},{"name":"switch","run":"pg_upgradecluster 14 main","timeout":"30m"}],
"rollout":{"canary":1,"batchSize":"25%","successThreshold":"90%"}}}`,
	}
	for name, src := range same {
		t.Run(name, func(t *testing.T) {
			if got := mustParse(t, src).Hash(); got != want {
				t.Errorf("hash changed: %s != %s", got, want)
			}
		})
	}
}

func TestHashChangedSpec(t *testing.T) {
	seen := map[string]string{mustParse(t, base).Hash(): "base"}
	changed := map[string]string{
		"run command":       strings.Replace(base, "main\n", "main --link\n", 1),
		"trailing space":    strings.Replace(base, "run: pg_upgradecluster 14 main", `run: "pg_upgradecluster 14 main "`, 1),
		"step order":        strings.Replace(strings.Replace(base, "name: install", "name: tmp", 1), "name: switch", "name: install", 1),
		"step timeout":      strings.Replace(base, "timeout: 30m", "timeout: 31m", 1),
		"added verify":      strings.Replace(base, "      timeout: 30m\n", "      timeout: 30m\n      verify: pg_lsclusters\n", 1),
		"removed rollback":  strings.Replace(base, "      rollback: apt-get remove -y postgresql-15\n", "", 1),
		"description":       strings.Replace(base, "description: upgrade", "description: upgrade!", 1),
		"name":              strings.Replace(base, "name: pg-15", "name: pg-16", 1),
		"toVersion":         strings.Replace(base, `toVersion: "15"`, `toVersion: "15.0"`, 1),
		"fromVersion":       strings.Replace(base, "  toVersion:", "  fromVersion: \"14\"\n  toVersion:", 1),
		"label value":       strings.Replace(base, "env: prod", "env: staging", 1),
		"operator":          strings.Replace(base, "operator: In,", "operator: NotIn,", 1),
		"values":            strings.Replace(base, "values: [a, b]", "values: [a, c]", 1),
		"canary":            strings.Replace(base, "canary: 1", "canary: 2", 1),
		"batch percent":     strings.Replace(base, "batchSize: 25%", "batchSize: 26%", 1),
		"batch count":       strings.Replace(base, "batchSize: 25%", "batchSize: 25", 1),
		"threshold":         strings.Replace(base, "successThreshold: 90%", "successThreshold: 95%", 1),
		"maxFailures":       strings.Replace(base, "successThreshold: 90%", "maxFailures: 0", 1),
		"approval":          base + "    approval: manual\n",
		"onFailure":         base + "    onFailure: abort\n",
		"deadlinePolicy":    base + "  deadlinePolicy: wall\n",
		"onTimeout":         base + "  onTimeout: fail\n",
		"assignment":        base + "  timeouts: {assignment: 2h}\n",
		"migration timeout": base + "  timeouts: {migration: 8d}\n",
	}
	for name, src := range changed {
		h := mustParse(t, src).Hash()
		if other, dup := seen[h]; dup {
			t.Errorf("%q hashes like %q", name, other)
		}
		seen[h] = name
	}
}

// The hash is persisted next to every migration: if it moves, every stored migration looks
// changed. Update this value only together with a note in the release notes.
func TestHashGolden(t *testing.T) {
	const want = "9db19451d4afd4c118dd8794de9c1636c0af8a3f36755d5a387f71876877211d"
	if got := mustParse(t, base).Hash(); got != want {
		t.Errorf("Hash(base) = %s, want %s", got, want)
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	for name, src := range map[string]string{"base": base, "full": full, "minimal": minimal} {
		t.Run(name, func(t *testing.T) {
			m := mustParse(t, src)
			c, err := m.Canonical()
			if err != nil {
				t.Fatal(err)
			}
			m2 := mustParse(t, string(c))
			if err := m2.Validate(); err != nil {
				t.Fatalf("canonical form does not validate: %v\n%s", err, c)
			}
			if m2.Hash() != m.Hash() {
				t.Errorf("hash changed through the canonical form:\n%s", c)
			}
			c2, _ := m2.Canonical()
			if string(c2) != string(c) {
				t.Errorf("canonical form is not a fixed point:\n%s\n---\n%s", c, c2)
			}
		})
	}
}

func TestCanonicalShape(t *testing.T) {
	c, err := mustParse(t, minimal).Canonical()
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: pg-15
spec:
  toVersion: "15"
  steps:
    - name: install
      run: "true"
      timeout: 10m
  rollout:
    canary: 0
    batchSize: 100%
    maxFailures: 0
    approval: auto
    onFailure: pause
    onAgentFailure: rollback
  timeouts:
    assignment: 1h
    migration: 168h
  deadlinePolicy: active
  onTimeout: pause
`
	if string(c) != want {
		t.Errorf("Canonical =\n%s\nwant\n%s", c, want)
	}
}

// Strings that YAML emitters and parsers are known to disagree on must survive the canonical form
// in every string-valued field.
func TestCanonicalRoundTripAwkwardStrings(t *testing.T) {
	awkward := []string{
		"null", "~", "Null", "true", "yes", "no", "on", "0x10", "1e3", "0o7", ".inf", "-", "- x", "? x",
		": x", "x: y", "#x", "x #y", "'", `"`, `\`, "&a", "*a", "!tag", "%x", "@x", "`x", "{a}", "[a]",
		",", "a, b", " leading", "trailing ", "\ttab", "line\nbreak", "trailing newline\n",
		"two trailing\n\n", "\n", "\r\n", "cr\r", " ", "é ü 漢字 🙂", "\u2028", "\ufeffbom", "\x7f",
		"\x01ctl", "---", "...", "--- x", "<<", "=", "2024-01-01", "12:30:00", "1_000",
		"a\u00a0b", strings.Repeat("long ", 100),
	}
	for i, s := range awkward {
		m := mustParse(t, full)
		m.Metadata.Description = s
		m.Spec.FromVersion = s
		m.Spec.ToVersion = "v" + s
		st := &m.Spec.Steps[0]
		st.Detect, st.Run, st.Verify, st.Rollback = s, "run "+s, s, s
		m.Spec.Selector.MatchLabels = map[string]string{"k" + s: s, s + "k": ""}
		m.Spec.Selector.MatchExpressions[0].Key = s + "key"
		m.Spec.Selector.MatchExpressions[0].Values = []string{s, "x" + s}
		if err := m.Validate(); err != nil {
			t.Errorf("%d %q: Validate: %v", i, s, err)
			continue
		}
		c, err := m.Canonical()
		if err != nil {
			t.Errorf("%d %q: Canonical: %v", i, s, err)
			continue
		}
		m2, err := Parse(c)
		if err != nil {
			t.Errorf("%d %q: canonical form does not parse: %v\n%s", i, s, err, c)
			continue
		}
		if m2.Hash() != m.Hash() || m2.Spec.Steps[0].Run != "run "+s || m2.Metadata.Description != s || m2.Spec.Selector.MatchLabels["k"+s] != s {
			t.Errorf("%d %q: changed through the canonical form:\n%s", i, s, c)
		}
	}
}
