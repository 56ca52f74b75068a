package spec

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/manifest"
)

func TestValidateErrors(t *testing.T) {
	one := "  steps: [{name: a, run: x}]\n" // line 7
	tests := []struct {
		name  string
		src   string
		mut   func(*Migration) // applied after Parse, for values YAML cannot express
		field string
		line  int
		msg   string
	}{
		// metadata
		{name: "missing name", src: strings.Replace(minimal, "  name: pg-15\n", "  description: x\n", 1),
			field: "metadata.name", line: 3, msg: "is required"},
		{name: "invalid name: upper case", src: strings.Replace(minimal, "name: pg-15", "name: PG-15", 1),
			field: "metadata.name", line: 4, msg: `"PG-15" is not a valid name`},
		{name: "invalid name: underscore", src: strings.Replace(minimal, "name: pg-15", "name: pg_15", 1),
			field: "metadata.name", line: 4, msg: "lowercase letters, digits and '-'"},
		{name: "invalid name: leading dash", src: strings.Replace(minimal, "name: pg-15", "name: -pg", 1),
			field: "metadata.name", line: 4, msg: "starting and ending with a letter or digit"},
		{name: "invalid name: dot", src: strings.Replace(minimal, "name: pg-15", "name: pg.15", 1),
			field: "metadata.name", line: 4, msg: "not a valid name"},
		{name: "name too long", src: strings.Replace(minimal, "name: pg-15", "name: "+strings.Repeat("a", 64), 1),
			field: "metadata.name", line: 4, msg: "at most 63 characters, not 64"},
		{name: "missing toVersion", src: strings.Replace(minimal, "  toVersion: \"15\"\n", "", 1),
			field: "spec.toVersion", line: 5, msg: "is required"},
		// steps
		{name: "no steps field", src: header, field: "spec.steps", line: 5, msg: "at least one step is required"},
		{name: "empty steps", src: doc("  steps: []\n"), field: "spec.steps", line: 7, msg: "at least one step is required"},
		{name: "step without run", src: doc("  steps:\n    - name: a\n      run: x\n    - name: b\n      verify: y\n"),
			field: "spec.steps[1].run", line: 10, msg: "is required"},
		{name: "step with blank run", src: doc("  steps:\n    - name: a\n      run: \"  \"\n"),
			field: "spec.steps[0].run", line: 9, msg: "is required"},
		{name: "step with null run", src: doc("  steps:\n    - name: a\n      run:\n"),
			field: "spec.steps[0].run", line: 9, msg: "is required"},
		{name: "step without name", src: doc("  steps:\n    - run: x\n"),
			field: "spec.steps[0].name", line: 8, msg: "is required"},
		{name: "invalid step name", src: doc("  steps:\n    - name: Install DB\n      run: x\n"),
			field: "spec.steps[0].name", line: 8, msg: `"Install DB" is not a valid name`},
		{name: "step name too long", src: doc("  steps:\n    - name: " + strings.Repeat("s", 64) + "\n      run: x\n"),
			field: "spec.steps[0].name", line: 8, msg: "at most 63"},
		{name: "duplicate step names", src: doc("  steps:\n    - {name: a, run: x}\n    - {name: b, run: x}\n    - {name: a, run: y}\n"),
			field: "spec.steps[2].name", line: 10, msg: `duplicate step name "a" (also spec.steps[0])`},
		{name: "NUL in a command", src: doc("  steps:\n    - name: a\n      run: \"echo \\0\"\n"),
			field: "spec.steps[0].run", line: 9, msg: "NUL"},
		{name: "too many steps", src: doc(manySteps(MaxSteps + 1)),
			field: "spec.steps", line: 7, msg: "has 257 steps, the limit is 256"},
		{name: "command too long", src: doc("  steps:\n    - name: a\n      run: x\n      rollback: \"" + strings.Repeat("x", MaxCommandBytes+1) + "\"\n"),
			field: "spec.steps[0].rollback", line: 10, msg: "is 65537 bytes, the limit is 65536 bytes"},
		{name: "step timeout zero", src: doc("  steps:\n    - {name: a, run: x, timeout: 0s}\n"),
			field: "spec.steps[0].timeout", line: 8, msg: "between 1s and 24h, not 0s"},
		{name: "step timeout too long", src: doc("  steps:\n    - {name: a, run: x, timeout: 25h}\n"),
			field: "spec.steps[0].timeout", line: 8, msg: "between 1s and 24h, not 25h"},
		{name: "step timeout negative", src: doc("  steps:\n    - {name: a, run: x, timeout: -5m}\n"),
			field: "spec.steps[0].timeout", line: 8, msg: "not -5m"},
		// rollout
		{name: "both successThreshold and maxFailures", src: doc(one + "  rollout:\n    successThreshold: 90%\n    maxFailures: 2\n"),
			field: "spec.rollout.successThreshold", line: 9, msg: "not both"},
		{name: "both, maxFailures zero", src: doc(one + "  rollout: {maxFailures: 0, successThreshold: 50%}\n"),
			field: "spec.rollout.successThreshold", line: 8, msg: "not both"},
		{name: "negative canary", src: doc(one + "  rollout: {canary: -1}\n"),
			field: "spec.rollout.canary", line: 8, msg: "must be 0 (no canary) or more"},
		{name: "batch size zero", src: doc(one + "  rollout: {batchSize: 0}\n"),
			field: "spec.rollout.batchSize", line: 8, msg: "at least 1 agent"},
		{name: "batch size negative", src: doc(one + "  rollout: {batchSize: -3}\n"),
			field: "spec.rollout.batchSize", line: 8, msg: "at least 1 agent"},
		{name: "batch percent over 100 (in code)", src: minimal, mut: func(m *Migration) { m.Spec.Rollout.BatchSize = BatchSize{Percent: 101} },
			field: "spec.rollout.batchSize", line: 5, msg: "between 1% and 100%, not 101%"},
		{name: "batch percent negative (in code)", src: minimal, mut: func(m *Migration) { m.Spec.Rollout.BatchSize = BatchSize{Percent: -1} },
			field: "spec.rollout.batchSize", line: 5, msg: "between 1% and 100%"},
		{name: "batch count and percent (in code)", src: minimal, mut: func(m *Migration) { m.Spec.Rollout.BatchSize = BatchSize{Count: 2, Percent: 50} },
			field: "spec.rollout.batchSize", line: 5, msg: "not both"},
		{name: "threshold over 100 (in code)", src: minimal, mut: func(m *Migration) {
			m.Spec.Rollout.SuccessThreshold, m.Spec.Rollout.MaxFailures = 120, nil
		}, field: "spec.rollout.successThreshold", line: 5, msg: "between 1% and 100%, not 120%"},
		{name: "negative maxFailures", src: doc(one + "  rollout: {maxFailures: -1}\n"),
			field: "spec.rollout.maxFailures", line: 8, msg: "0 or more"},
		{name: "bad approval", src: doc(one + "  rollout: {approval: sometimes}\n"),
			field: "spec.rollout.approval", line: 8, msg: `must be one of auto, manual, not "sometimes"`},
		{name: "bad onFailure", src: doc(one + "  rollout:\n    onFailure: continue\n"),
			field: "spec.rollout.onFailure", line: 9, msg: `must be one of pause, abort, rollback, not "continue"`},
		{name: "enum is case-sensitive", src: doc(one + "  rollout: {approval: Auto}\n"),
			field: "spec.rollout.approval", line: 8, msg: "must be one of auto, manual"},
		{name: "empty enum", src: doc(one + "  rollout: {approval: \"\"}\n"),
			field: "spec.rollout.approval", line: 8, msg: `not ""`},
		// timeouts and policies
		{name: "bad deadlinePolicy", src: doc(one + "  deadlinePolicy: monotonic\n"),
			field: "spec.deadlinePolicy", line: 8, msg: `must be one of active, wall, not "monotonic"`},
		{name: "bad onTimeout", src: doc(one + "  onTimeout: retry\n"),
			field: "spec.onTimeout", line: 8, msg: `must be one of rollback, fail, pause, not "retry"`},
		{name: "assignment timeout zero", src: doc(one + "  timeouts: {assignment: 0s}\n"),
			field: "spec.timeouts.assignment", line: 8, msg: "between 1s and 720h"},
		{name: "migration timeout too long", src: doc(one + "  timeouts: {migration: 400d}\n"),
			field: "spec.timeouts.migration", line: 8, msg: "between 1s and 8760h, not 9600h"},
		{name: "assignment longer than migration", src: doc(one + "  timeouts:\n    assignment: 2h\n    migration: 1h\n"),
			field: "spec.timeouts.assignment", line: 9, msg: "must not be longer than timeouts.migration (1h)"},
		// selector
		{name: "bad operator", src: doc(one + "  selector:\n    matchExpressions: [{key: a, operator: Equals, values: [b]}]\n"),
			field: "spec.selector.matchExpressions[0].operator", line: 9, msg: `must be one of In, NotIn, Exists, DoesNotExist, not "Equals"`},
		{name: "missing operator", src: doc(one + "  selector:\n    matchExpressions: [{key: a}]\n"),
			field: "spec.selector.matchExpressions[0].operator", line: 9, msg: "must be one of In"},
		{name: "In without values", src: doc(one + "  selector:\n    matchExpressions:\n      - key: site\n        operator: In\n"),
			field: "spec.selector.matchExpressions[0].values", line: 10, msg: "operator In needs at least one value"},
		{name: "NotIn with empty values", src: doc(one + "  selector:\n    matchExpressions:\n      - {key: site, operator: NotIn, values: []}\n"),
			field: "spec.selector.matchExpressions[0].values", line: 10, msg: "operator NotIn needs at least one value"},
		{name: "Exists with values", src: doc(one + "  selector:\n    matchExpressions:\n      - {key: site, operator: Exists, values: [a]}\n"),
			field: "spec.selector.matchExpressions[0].values", line: 10, msg: "operator Exists takes no values"},
		{name: "DoesNotExist with values", src: doc(one + "  selector:\n    matchExpressions:\n      - key: site\n        operator: DoesNotExist\n        values: [a]\n"),
			field: "spec.selector.matchExpressions[0].values", line: 12, msg: "operator DoesNotExist takes no values"},
		{name: "expression without key", src: doc(one + "  selector:\n    matchExpressions:\n      - {operator: Exists}\n"),
			field: "spec.selector.matchExpressions[0].key", line: 10, msg: "is required"},
		{name: "empty label key", src: doc(one + "  selector:\n    matchLabels: {\"\": x}\n"),
			field: "spec.selector.matchLabels[]", line: 9, msg: "must not be empty"},
		// hand-built spec: no lines
		{name: "wrong kind (in code)", src: minimal, mut: func(m *Migration) { m.Kind = "Job" },
			field: "kind", line: 2, msg: `must be Migration, not "Job"`},
		{name: "invalid UTF-8 (in code)", src: minimal, mut: func(m *Migration) { m.Metadata.Description = "\xff" },
			field: "metadata.description", line: 3, msg: "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, tt.src)
			if tt.mut != nil {
				tt.mut(m)
			}
			wantFieldError(t, m.Validate(), tt.field, tt.line, tt.msg)
		})
	}
}

// manySteps is a steps field with n steps.
func manySteps(n int) string {
	var b strings.Builder
	b.WriteString("  steps:\n")
	for i := range n {
		fmt.Fprintf(&b, "    - {name: s%d, run: x}\n", i)
	}
	return b.String()
}

// At the limits a spec is valid: the limits refuse only what is over them.
func TestValidateAtTheLimits(t *testing.T) {
	m := mustParse(t, doc(manySteps(MaxSteps)))
	m.Spec.Steps[0].Run = strings.Repeat("x", MaxCommandBytes)
	if err := m.Validate(); err != nil {
		t.Fatalf("%d steps and a command of %d bytes: %v", MaxSteps, MaxCommandBytes, err)
	}
}

func TestValidateReportsAll(t *testing.T) {
	m := mustParse(t, `apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: Bad_Name}
spec:
  steps:
    - {name: a}
    - {name: a, run: x, timeout: 48h}
  rollout: {successThreshold: 50%, maxFailures: 1, onFailure: explode}
`)
	fes := fieldErrors(t, m.Validate())
	var got []string
	for _, fe := range fes {
		got = append(got, fe.Error())
	}
	want := []string{
		`metadata.name (line 3): "Bad_Name" is not a valid name`,
		"spec.toVersion (line 4): is required",
		"spec.steps[0].run (line 6): is required",
		`spec.steps[1].name (line 7): duplicate step name "a"`,
		"spec.steps[1].timeout (line 7): must be between 1s and 24h, not 48h",
		"spec.rollout.successThreshold (line 8): set successThreshold or maxFailures, not both",
		"spec.rollout.onFailure (line 8): must be one of pause, abort, rollback",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d = %q\nwant prefix %q", i, got[i], want[i])
		}
	}
}

func TestValidateHandBuilt(t *testing.T) {
	zero := 0
	m := &Migration{
		APIVersion: APIVersion, Kind: Kind,
		Metadata: manifest.Metadata{Name: "hand-built"},
		Spec: Spec{
			ToVersion: "2",
			Steps:     []Step{{Name: "one", Run: "true", Timeout: time.Minute}},
			Rollout:   Rollout{BatchSize: BatchSize{Count: 1}, MaxFailures: &zero, Approval: ApprovalAuto, OnFailure: OnFailureAbort},
			Timeouts:  Timeouts{Assignment: time.Hour, Migration: 2 * time.Hour}, DeadlinePolicy: DeadlineActive, OnTimeout: OnTimeoutFail,
		},
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	m.Spec.Steps[0].Run = ""
	fes := fieldErrors(t, m.Validate())
	if len(fes) != 1 || fes[0].Field != "spec.steps[0].run" || fes[0].Line != 0 {
		t.Fatalf("got %v, want one error on spec.steps[0].run without a line", fes)
	}
	// The zero Migration is invalid, not a panic.
	if (&Migration{}).Validate() == nil {
		t.Fatal("zero Migration validated")
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := map[string]string{
		"full":                full,
		"minimal":             minimal,
		"empty selector":      doc("  selector: {}\n  steps: [{name: a, run: x}]\n"),
		"empty matchLabels":   doc("  selector: {matchLabels: {}}\n  steps: [{name: a, run: x}]\n"),
		"100% threshold":      doc("  steps: [{name: a, run: x}]\n  rollout: {successThreshold: 100%}\n"),
		"1% batch":            doc("  steps: [{name: a, run: x}]\n  rollout: {batchSize: 1%}\n"),
		"63-char names":       strings.Replace(doc("  steps: [{name: "+strings.Repeat("b", 63)+", run: x}]\n"), "pg-15", strings.Repeat("a", 63), 1),
		"single-char name":    strings.Replace(minimal, "pg-15", "p", 1),
		"numeric versions":    strings.Replace(minimal, `"15"`, "15.1", 1),
		"timeout bounds":      doc("  steps:\n    - {name: a, run: x, timeout: 1s}\n    - {name: b, run: x, timeout: 24h}\n"),
		"equal timeouts":      doc("  steps: [{name: a, run: x}]\n  timeouts: {assignment: 3h, migration: 3h}\n"),
		"empty label value":   doc("  selector: {matchLabels: {tier: \"\"}}\n  steps: [{name: a, run: x}]\n"),
		"all operators":       doc("  selector:\n    matchExpressions:\n      - {key: a, operator: In, values: [x]}\n      - {key: b, operator: NotIn, values: [x, y]}\n      - {key: c, operator: Exists}\n      - {key: d, operator: DoesNotExist, values: []}\n  steps: [{name: a, run: x}]\n"),
		"large canary":        doc("  steps: [{name: a, run: x}]\n  rollout: {canary: 1000}\n"),
		"leading doc marker":  "---\n" + minimal,
		"document end marker": minimal + "...\n",
	}
	for name, src := range tests {
		t.Run(name, func(t *testing.T) {
			if err := mustParse(t, src).Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	m := mustParse(t, minimal)
	w := m.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "selector is empty") {
		t.Errorf("warnings = %q, want the empty-selector warning", w)
	}
	m = mustParse(t, full)
	w = m.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], `no rollback command`) || !strings.Contains(w[0], `"switch"`) {
		t.Errorf("warnings = %q, want one about step switch lacking a rollback", w)
	}
	m.Spec.Rollout.OnFailure, m.Spec.OnTimeout = OnFailurePause, OnTimeoutPause
	if w := m.Warnings(); len(w) != 0 {
		t.Errorf("warnings = %q, want none", w)
	}
}
