package spec

import (
	"errors"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/manifest"
)

// full sets every field; the line numbers in comments are what the error tests rely on.
const full = `# a comment
apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: pg-15
  description: "Upgrade PostgreSQL 14 → 15"
spec:
  selector:
    matchLabels: {role: db}
    matchExpressions:
      - {key: site, operator: In, values: [a, b]}
      - {key: legacy, operator: DoesNotExist}
  fromVersion: "14"
  toVersion: "15"
  steps:
    - name: install
      detect: "! pg_config --version | grep -q ' 15'"
      run: apt-get install -y postgresql-15
      verify: pg_config --version | grep -q ' 15'
      rollback: apt-get remove -y postgresql-15
      timeout: 5m
    - name: switch
      run: |
        pg_upgradecluster 14 main
        systemctl restart postgresql
  rollout:
    canary: 1
    batchSize: 25%
    successThreshold: 90%
    approval: manual
    onFailure: rollback
  timeouts:
    assignment: 30m
    migration: 2d
  deadlinePolicy: wall
  onTimeout: rollback
`

// header is a minimal valid document whose spec mapping continues at line 7 with two spaces of
// indentation; doc(body) appends body there.
const header = `apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: pg-15
spec:
  toVersion: "15"
`

func doc(body string) string { return header + body }

// minimal is the smallest valid spec.
var minimal = doc(`  steps:
    - name: install
      run: "true"
`)

func mustParse(t *testing.T, src string) *Migration {
	t.Helper()
	m, err := Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return m
}

// fieldErrors flattens a (possibly joined) error into its FieldErrors.
func fieldErrors(t *testing.T, err error) []*fault.FieldError {
	t.Helper()
	var out []*fault.FieldError
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var fe *fault.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %v (%T) is not a *fault.FieldError", e, e)
		}
		out = append(out, fe)
	}
	walk(err)
	return out
}

// wantFieldError asserts that err is invalid and holds a FieldError on field, at line (when line
// is not -1), whose message contains msg.
func wantFieldError(t *testing.T, err error, field string, line int, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s: %s", field, msg)
	}
	if !errors.Is(err, fault.ErrInvalid) {
		t.Fatalf("error %v does not wrap fault.ErrInvalid", err)
	}
	for _, fe := range fieldErrors(t, err) {
		if fe.Field == field && (line == -1 || fe.Line == line) && strings.Contains(fe.Message, msg) {
			return
		}
	}
	t.Fatalf("no error on %s (line %d) containing %q in:\n%v", field, line, msg, err)
}

func TestParseFull(t *testing.T) {
	m := mustParse(t, full)
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	s := m.Spec
	checks := []struct {
		name      string
		got, want any
	}{
		{"apiVersion", m.APIVersion, APIVersion},
		{"kind", m.Kind, Kind},
		{"name", m.Metadata.Name, "pg-15"},
		{"description", m.Metadata.Description, "Upgrade PostgreSQL 14 → 15"},
		{"matchLabels", s.Selector.MatchLabels["role"], "db"},
		{"expressions", len(s.Selector.MatchExpressions), 2},
		{"expr0 op", s.Selector.MatchExpressions[0].Operator, manifest.OpIn},
		{"expr0 values", strings.Join(s.Selector.MatchExpressions[0].Values, ","), "a,b"},
		{"expr1 op", s.Selector.MatchExpressions[1].Operator, manifest.OpDoesNotExist},
		{"expr1 values", len(s.Selector.MatchExpressions[1].Values), 0},
		{"fromVersion", s.FromVersion, "14"},
		{"toVersion", s.ToVersion, "15"},
		{"steps", len(s.Steps), 2},
		{"step0 name", s.Steps[0].Name, "install"},
		{"step0 detect", s.Steps[0].Detect, "! pg_config --version | grep -q ' 15'"},
		{"step0 run", s.Steps[0].Run, "apt-get install -y postgresql-15"},
		{"step0 verify", s.Steps[0].Verify, "pg_config --version | grep -q ' 15'"},
		{"step0 rollback", s.Steps[0].Rollback, "apt-get remove -y postgresql-15"},
		{"step0 timeout", s.Steps[0].Timeout, 5 * time.Minute},
		{"step1 run", s.Steps[1].Run, "pg_upgradecluster 14 main\nsystemctl restart postgresql\n"},
		{"step1 timeout (default)", s.Steps[1].Timeout, DefaultStepTimeout},
		{"canary", s.Rollout.Canary, 1},
		{"batchSize", s.Rollout.BatchSize, BatchSize{Percent: 25}},
		{"successThreshold", s.Rollout.SuccessThreshold, 90},
		{"maxFailures unset", s.Rollout.MaxFailures == nil, true},
		{"approval", s.Rollout.Approval, ApprovalManual},
		{"onFailure", s.Rollout.OnFailure, OnFailureRollback},
		{"assignment", s.Timeouts.Assignment, 30 * time.Minute},
		{"migration", s.Timeouts.Migration, 48 * time.Hour},
		{"deadlinePolicy", s.DeadlinePolicy, DeadlineWall},
		{"onTimeout", s.OnTimeout, OnTimeoutRollback},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	m := mustParse(t, minimal)
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	s := m.Spec
	if !s.Selector.Empty() {
		t.Errorf("selector not empty: %+v", s.Selector)
	}
	if s.Steps[0].Timeout != 10*time.Minute {
		t.Errorf("step timeout = %v, want 10m", s.Steps[0].Timeout)
	}
	r := s.Rollout
	if r.Canary != 0 || r.BatchSize != (BatchSize{Percent: 100}) || r.SuccessThreshold != 0 ||
		r.MaxFailures == nil || *r.MaxFailures != 0 || r.Approval != ApprovalAuto || r.OnFailure != OnFailurePause {
		t.Errorf("rollout defaults = %+v (maxFailures %v)", r, r.MaxFailures)
	}
	if s.Timeouts != (Timeouts{Assignment: time.Hour, Migration: 168 * time.Hour}) {
		t.Errorf("timeouts = %+v", s.Timeouts)
	}
	if s.DeadlinePolicy != DeadlineActive || s.OnTimeout != OnTimeoutPause {
		t.Errorf("deadlinePolicy %q, onTimeout %q", s.DeadlinePolicy, s.OnTimeout)
	}
}

// A null value is the same as leaving the field out.
func TestParseNullIsAbsent(t *testing.T) {
	m := mustParse(t, doc(`  selector:
  steps:
    - name: install
      run: "true"
      timeout: ~
  rollout:
    batchSize:
    maxFailures: null
  timeouts: {assignment: ~}
  onTimeout:
`))
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if m.Hash() != mustParse(t, minimal).Hash() {
		t.Error("nulls changed the hash")
	}
}

func TestParseCountAndMaxFailures(t *testing.T) {
	m := mustParse(t, doc(`  steps: [{name: a, run: x}]
  rollout: {batchSize: 10, maxFailures: 2}
`))
	if m.Spec.Rollout.BatchSize != (BatchSize{Count: 10}) {
		t.Errorf("batchSize = %+v", m.Spec.Rollout.BatchSize)
	}
	if m.Spec.Rollout.MaxFailures == nil || *m.Spec.Rollout.MaxFailures != 2 {
		t.Errorf("maxFailures = %v", m.Spec.Rollout.MaxFailures)
	}
	m = mustParse(t, doc(`  steps: [{name: a, run: x}]
  rollout: {batchSize: "10"}
`))
	if m.Spec.Rollout.BatchSize != (BatchSize{Count: 10}) {
		t.Errorf("quoted batchSize = %+v", m.Spec.Rollout.BatchSize)
	}
}

func TestParseJSON(t *testing.T) {
	m := mustParse(t, `{"apiVersion": "godwit.dev/v1", "kind": "Migration",
 "metadata": {"name": "pg-15"},
 "spec": {"toVersion": "15", "steps": [{"name": "install", "run": "true"}]}}`)
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if m.Hash() != mustParse(t, minimal).Hash() {
		t.Error("JSON and YAML forms of the same spec hash differently")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		field string
		line  int
		msg   string
	}{
		{"invalid YAML", "apiVersion: godwit.dev/v1\nkind: [Migration\n", "document", -1, "invalid YAML"},
		{"bad indentation", "apiVersion: a\n  kind: b\n", "document", 2, "invalid YAML"},
		{"empty", "", "document", 0, "empty document"},
		{"only comments", "# nothing\n", "document", 0, "empty document"},
		{"not a mapping", "- a\n- b\n", "document", 1, "must be a mapping"},
		{"scalar document", "hello\n", "document", 1, "must be a mapping"},
		{"two documents", minimal + "---\n" + minimal, "document", 10, "more than one YAML document"},
		{"second document empty", minimal + "---\n", "document", -1, "more than one YAML document"},
		{"wrong kind", "apiVersion: godwit.dev/v1\nkind: Deployment\n", "kind", 2, `must be Migration, not "Deployment"`},
		{"wrong apiVersion", "apiVersion: apps/v1\nkind: Migration\n", "apiVersion", 1, `must be godwit.dev/v1, not "apps/v1"`},
		{"old apiVersion", "apiVersion: godwit.dev/v2\nkind: Migration\n", "apiVersion", 1, "must be godwit.dev/v1"},
		{"missing kind", "apiVersion: godwit.dev/v1\nmetadata: {name: x}\n", "kind", 1, "is required"},
		{"missing apiVersion", "kind: Migration\n", "apiVersion", 1, "is required"},
		{"kind is a list", "apiVersion: godwit.dev/v1\nkind: [Migration]\n", "kind", 2, `not "list"`},
		{"unknown top-level field", strings.Replace(minimal, "metadata:", "metdata:", 1), "metdata", 3, `unknown field "metdata"`},
		{"unknown metadata field", strings.Replace(minimal, "  name: pg-15", "  name: pg-15\n  labels: {a: b}", 1), "metadata.labels", 5, "allowed here: name, description"},
		{"unknown step field", doc("  steps:\n    - name: a\n      run: x\n      tmeout: 5m\n"), "spec.steps[0].tmeout", 10, `unknown field "tmeout"`},
		{"unknown rollout field", doc("  steps: [{name: a, run: x}]\n  rollout:\n    canaries: 1\n"), "spec.rollout.canaries", 9, "allowed here: canary, batchSize"},
		{"unknown selector field", doc("  selector: {matchLabel: {a: b}}\n  steps: [{name: a, run: x}]\n"), "spec.selector.matchLabel", 7, "unknown field"},
		{"unknown expression field", doc("  selector:\n    matchExpressions:\n      - {key: a, op: In}\n  steps: [{name: a, run: x}]\n"), "spec.selector.matchExpressions[0].op", 9, "unknown field"},
		{"field set twice", doc("  steps: [{name: a, run: x}]\n  toVersion: \"16\"\n"), "spec.toVersion", 8, "set twice"},
		{"label set twice", doc("  selector:\n    matchLabels:\n      a: x\n      a: y\n  steps: [{name: a, run: x}]\n"), "spec.selector.matchLabels[a]", 10, "set twice"},
		{"bad duration", doc("  steps:\n    - name: a\n      run: x\n      timeout: 5 minutes\n"), "spec.steps[0].timeout", 10, `"5 minutes" is not a duration`},
		{"duration without unit", doc("  steps:\n    - name: a\n      run: x\n      timeout: 300\n"), "spec.steps[0].timeout", 10, "is not a duration"},
		{"bad timeouts duration", doc("  steps: [{name: a, run: x}]\n  timeouts: {migration: forever}\n"), "spec.timeouts.migration", 8, "is not a duration"},
		{"days overflow", doc("  steps: [{name: a, run: x}]\n  timeouts: {migration: 9999999d}\n"), "spec.timeouts.migration", 8, "too long"},
		{"steps not a list", doc("  steps: {name: a, run: x}\n"), "spec.steps", 7, "must be a list"},
		{"metadata not a mapping", strings.Replace(minimal, "metadata:\n  name: pg-15", "metadata: pg-15", 1), "metadata", 3, "must be a mapping"},
		{"step not a mapping", doc("  steps:\n    - install\n"), "spec.steps[0]", 8, "must be a mapping"},
		{"name is a list", doc("  steps:\n    - name: [a]\n      run: x\n"), "spec.steps[0].name", 8, "must be a single value"},
		{"matchLabels is a list", doc("  selector: {matchLabels: [a]}\n  steps: [{name: a, run: x}]\n"), "spec.selector.matchLabels", 7, "must be a mapping of label keys"},
		{"values not a list", doc("  selector:\n    matchExpressions: [{key: a, operator: In, values: b}]\n  steps: [{name: a, run: x}]\n"), "spec.selector.matchExpressions[0].values", 8, "must be a list"},
		{"canary not a number", doc("  steps: [{name: a, run: x}]\n  rollout: {canary: one}\n"), "spec.rollout.canary", 8, `must be a whole number, not "one"`},
		{"maxFailures a float", doc("  steps: [{name: a, run: x}]\n  rollout: {maxFailures: 1.5}\n"), "spec.rollout.maxFailures", 8, "whole number"},
		{"batchSize garbage", doc("  steps: [{name: a, run: x}]\n  rollout: {batchSize: half}\n"), "spec.rollout.batchSize", 8, "number of agents (10) or a percentage"},
		{"batchSize bad percent", doc("  steps: [{name: a, run: x}]\n  rollout: {batchSize: x%}\n"), "spec.rollout.batchSize", 8, "not a percentage"},
		{"batchSize 0%", doc("  steps: [{name: a, run: x}]\n  rollout: {batchSize: 0%}\n"), "spec.rollout.batchSize", 8, "between 1% and 100%"},
		{"batchSize 150%", doc("  steps: [{name: a, run: x}]\n  rollout: {batchSize: 150%}\n"), "spec.rollout.batchSize", 8, "between 1% and 100%, not 150%"},
		{"successThreshold 101%", doc("  steps: [{name: a, run: x}]\n  rollout: {successThreshold: 101%}\n"), "spec.rollout.successThreshold", 8, "between 1% and 100%"},
		{"successThreshold -5%", doc("  steps: [{name: a, run: x}]\n  rollout: {successThreshold: -5%}\n"), "spec.rollout.successThreshold", 8, "between 1% and 100%"},
		{"successThreshold without %", doc("  steps: [{name: a, run: x}]\n  rollout: {successThreshold: 90}\n"), "spec.rollout.successThreshold", 8, "use maxFailures"},
		{"alias", doc("  steps:\n    - &s {name: a, run: x}\n    - *s\n"), "spec.steps[1]", 9, "aliases (*s) are not supported"},
		{"custom tag", doc("  steps:\n    - name: a\n      run: !cmd x\n"), "spec.steps[0].run", 9, "unsupported YAML tag !cmd"},
		{"binary tag", doc("  steps:\n    - name: a\n      run: !!binary eA==\n"), "spec.steps[0].run", 9, "unsupported YAML tag"},
		{"complex key", doc("  steps: [{name: a, run: x}]\n  ? [a]\n  : b\n"), "spec", 8, "keys must be plain strings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.src))
			if m != nil {
				t.Errorf("Parse returned a Migration with an error")
			}
			wantFieldError(t, err, tt.field, tt.line, tt.msg)
		})
	}
}

// Several errors come back together, each with its own line.
func TestParseReportsAllErrors(t *testing.T) {
	_, err := Parse([]byte(doc(`  steps:
    - name: a
      run: x
      tmeout: 5m
      timeout: soon
  rollout: {canary: x}
`)))
	fes := fieldErrors(t, err)
	if len(fes) != 3 {
		t.Fatalf("got %d errors, want 3:\n%v", len(fes), err)
	}
	want := []string{"spec.steps[0].tmeout (line 10)", "spec.steps[0].timeout (line 11)", "spec.rollout.canary (line 12)"}
	for i, fe := range fes {
		if !strings.HasPrefix(fe.Error(), want[i]) {
			t.Errorf("error %d = %q, want prefix %q", i, fe.Error(), want[i])
		}
	}
}

func TestParseErrorCountBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString(doc("  steps:\n"))
	for range 100 {
		b.WriteString("    - {name: a, run: x, bogus: 1}\n")
	}
	_, err := Parse([]byte(b.String()))
	if n := len(fieldErrors(t, err)); n != manifest.MaxErrors {
		t.Errorf("got %d errors, want them capped at %d", n, manifest.MaxErrors)
	}
}

func TestParseTooLarge(t *testing.T) {
	big := minimal + "# " + strings.Repeat("x", MaxSpecBytes) + "\n"
	_, err := Parse([]byte(big))
	if !errors.Is(err, fault.ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}
