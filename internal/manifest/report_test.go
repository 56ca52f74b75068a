package manifest

import (
	"strings"
	"testing"
	"time"
)

func TestReportRules(t *testing.T) {
	lines := Lines{"metadata": 3, "metadata.name": 4, "spec": 5, "spec.sel": 6}
	tests := []struct {
		name  string
		check func(r *Report)
		want  string // the only error, or "" for none
	}{
		{"valid header", func(r *Report) { r.Header("Widget", APIVersion, "Widget", Metadata{Name: "w-1"}) }, ""},
		{"wrong apiVersion", func(r *Report) { r.Header("Widget", "v2", "Widget", Metadata{Name: "w"}) }, `apiVersion: must be godwit.dev/v1, not "v2"`},
		{"wrong kind", func(r *Report) { r.Header("Widget", APIVersion, "Job", Metadata{Name: "w"}) }, `kind: must be Widget, not "Job"`},
		{"missing name", func(r *Report) { r.Header("Widget", APIVersion, "Widget", Metadata{}) }, "metadata.name (line 4): is required"},
		{"bad description", func(r *Report) { r.Header("Widget", APIVersion, "Widget", Metadata{Name: "w", Description: "\xff"}) }, "metadata.description (line 3): must be valid UTF-8"},
		{"name with upper case", func(r *Report) { r.Name("spec.x", "Web") }, `spec.x (line 5): "Web" is not a valid name`},
		{"name ending in a dash", func(r *Report) { r.Name("spec.x", "web-") }, "starting and ending with a letter or digit"},
		{"name too long", func(r *Report) { r.Name("spec.x", strings.Repeat("a", MaxNameLength+1)) }, "must be at most 63 characters, not 64"},
		{"longest name", func(r *Report) { r.Name("spec.x", strings.Repeat("a", MaxNameLength)) }, ""},
		{"command with NUL", func(r *Report) { r.Command("spec.cmd", "echo \x00") }, "spec.cmd (line 5): must not contain a NUL byte"},
		{"command not UTF-8", func(r *Report) { r.Command("spec.cmd", "\xff") }, "must be valid UTF-8"},
		{"enum", func(r *Report) { Enum(r, "spec.mode", "fast", "slow", "safe") }, `spec.mode (line 5): must be one of slow, safe, not "fast"`},
		{"enum ok", func(r *Report) { Enum(r, "spec.mode", "safe", "slow", "safe") }, ""},
		{"below range", func(r *Report) { r.Within("spec.t", 0, time.Second, time.Hour) }, "must be between 1s and 1h, not 0s"},
		{"above range", func(r *Report) { r.Within("spec.t", 90*time.Minute, time.Second, time.Hour) }, "not 1h30m"},
		{"range bounds", func(r *Report) { r.Within("spec.t", time.Hour, time.Second, time.Hour) }, ""},
		{"selector: In without values", func(r *Report) {
			r.Selector("spec.sel", LabelSelector{MatchExpressions: []Requirement{{Key: "a", Operator: OpIn}}})
		}, "spec.sel.matchExpressions[0].values (line 6): operator In needs at least one value"},
		{"selector: Exists with values", func(r *Report) {
			r.Selector("spec.sel", LabelSelector{MatchExpressions: []Requirement{{Key: "a", Operator: OpExists, Values: []string{"x"}}}})
		}, "operator Exists takes no values"},
		{"selector: unknown operator", func(r *Report) {
			r.Selector("spec.sel", LabelSelector{MatchExpressions: []Requirement{{Key: "a", Operator: "Equals"}}})
		}, `spec.sel.matchExpressions[0].operator (line 6): must be one of In, NotIn, Exists, DoesNotExist, not "Equals"`},
		{"selector: no key", func(r *Report) {
			r.Selector("spec.sel", LabelSelector{MatchExpressions: []Requirement{{Operator: OpExists}}})
		}, "spec.sel.matchExpressions[0].key (line 6): is required"},
		{"selector: empty label key", func(r *Report) { r.Selector("spec.sel", LabelSelector{MatchLabels: map[string]string{"": "x"}}) },
			"spec.sel.matchLabels[] (line 6): label key must not be empty"},
		{"selector: valid", func(r *Report) {
			r.Selector("spec.sel", LabelSelector{MatchLabels: map[string]string{"a": ""}, MatchExpressions: []Requirement{{Key: "a", Operator: OpNotIn, Values: []string{"x"}}}})
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Report{Lines: lines}
			tt.check(r)
			err := r.Err()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.want != "" && (err == nil || len(fieldErrors(t, err)) != 1 || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want one error containing %q", err, tt.want)
			}
		})
	}
}

func TestReportCap(t *testing.T) {
	var r Report
	for i := range 3 * MaxErrors {
		r.Fail("spec.x", "error %d", i)
	}
	fes := fieldErrors(t, r.Err())
	if len(fes) != MaxErrors || fes[0].Message != "error 0" || fes[MaxErrors-1].Message != "error 19" {
		t.Fatalf("got %d errors (%v), want the first %d", len(fes), r.Err(), MaxErrors)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Minute: "10m", 2 * time.Hour: "2h", 90 * time.Minute: "1h30m", 1500 * time.Millisecond: "1.5s",
		0: "0s", 168 * time.Hour: "168h", time.Hour + time.Second: "1h0m1s",
	} {
		got := FormatDuration(d)
		if got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := ParseDuration(got); err != nil || back != d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", got, back, err, d)
		}
	}
}
