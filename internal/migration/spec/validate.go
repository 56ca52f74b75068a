package spec

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"godwit.dev/godwit/internal/fault"
)

// nameRE is a DNS label: it is safe in URLs, KV keys, NATS subjects and file names, and cannot be
// mistaken for a CLI flag.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// Validate checks the semantics of a parsed (or hand-built) spec. It returns nil, one
// *fault.FieldError, or several joined with errors.Join (in the order metadata, versions,
// selector, steps, rollout, timeouts). Each names the field path and, for a parsed spec, the line
// it came from; a missing field points at the line of its closest parent.
func (m *Migration) Validate() error {
	v := &validator{m: m}
	v.top()
	v.selector()
	v.steps()
	v.rollout()
	v.timeouts()
	return joinErrors(v.errs)
}

type validator struct {
	m    *Migration
	errs []error
}

func (v *validator) fail(path, format string, args ...any) {
	if len(v.errs) < maxErrors {
		v.errs = append(v.errs, &fault.FieldError{Field: path, Line: v.m.lineOf(path), Message: fmt.Sprintf(format, args...)})
	}
}

// text refuses what cannot round-trip or be passed to a process.
func (v *validator) text(path, s string, command bool) {
	switch {
	case !utf8.ValidString(s):
		v.fail(path, "must be valid UTF-8")
	case command && strings.ContainsRune(s, 0):
		v.fail(path, "must not contain a NUL byte")
	}
}

func (v *validator) name(path, s string) {
	switch {
	case s == "":
		v.fail(path, "is required")
	case len(s) > MaxNameLength:
		v.fail(path, "must be at most %d characters, not %d", MaxNameLength, len(s))
	case !nameRE.MatchString(s):
		v.fail(path, "%q is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit", s)
	}
}

func enum[T ~string](v *validator, path string, got T, allowed []T) {
	if oneOf(got, allowed) {
		return
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	v.fail(path, "must be one of %s, not %q", strings.Join(names, ", "), string(got))
}

func (v *validator) duration(path string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		v.fail(path, "must be between %s and %s, not %s", fmtDuration(lo), fmtDuration(hi), fmtDuration(d))
	}
}

// fmtDuration prints 10m rather than 10m0s.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (v *validator) top() {
	m := v.m
	if m.APIVersion != APIVersion {
		v.fail("apiVersion", "must be %s, not %q", APIVersion, m.APIVersion)
	}
	if m.Kind != Kind {
		v.fail("kind", "must be %s, not %q", Kind, m.Kind)
	}
	v.name("metadata.name", m.Metadata.Name)
	v.text("metadata.description", m.Metadata.Description, false)
	v.text("spec.fromVersion", m.Spec.FromVersion, false)
	if strings.TrimSpace(m.Spec.ToVersion) == "" {
		v.fail("spec.toVersion", "is required: the version the migration brings agents to")
	} else {
		v.text("spec.toVersion", m.Spec.ToVersion, false)
	}
}

func (v *validator) selector() {
	sel := v.m.Spec.Selector
	for _, k := range sortedKeys(sel.MatchLabels) {
		p := "spec.selector.matchLabels[" + k + "]"
		if k == "" {
			v.fail(p, "label key must not be empty")
		}
		v.text(p, k, false)
		v.text(p, sel.MatchLabels[k], false)
	}
	for i, r := range sel.MatchExpressions {
		p := fmt.Sprintf("spec.selector.matchExpressions[%d]", i)
		if r.Key == "" {
			v.fail(p+".key", "is required")
		}
		v.text(p+".key", r.Key, false)
		for j, val := range r.Values {
			v.text(fmt.Sprintf("%s.values[%d]", p, j), val, false)
		}
		switch r.Operator {
		case OpIn, OpNotIn:
			if len(r.Values) == 0 {
				v.fail(p+".values", "operator %s needs at least one value", r.Operator)
			}
		case OpExists, OpDoesNotExist:
			if len(r.Values) > 0 {
				v.fail(p+".values", "operator %s takes no values (remove values, or use In / NotIn)", r.Operator)
			}
		default:
			enum(v, p+".operator", r.Operator, operators)
		}
	}
}

func (v *validator) steps() {
	steps := v.m.Spec.Steps
	if len(steps) == 0 {
		v.fail("spec.steps", "at least one step is required")
		return
	}
	first := map[string]int{}
	for i, s := range steps {
		p := fmt.Sprintf("spec.steps[%d]", i)
		v.name(p+".name", s.Name)
		if j, dup := first[s.Name]; dup && s.Name != "" {
			v.fail(p+".name", "duplicate step name %q (also spec.steps[%d])", s.Name, j)
		} else {
			first[s.Name] = i
		}
		if strings.TrimSpace(s.Run) == "" {
			v.fail(p+".run", "is required: the command that applies the step")
		}
		for _, c := range []struct{ field, cmd string }{{"detect", s.Detect}, {"run", s.Run}, {"verify", s.Verify}, {"rollback", s.Rollback}} {
			v.text(p+"."+c.field, c.cmd, true)
		}
		v.duration(p+".timeout", s.Timeout, MinStepTimeout, MaxStepTimeout)
	}
}

func (v *validator) rollout() {
	r := v.m.Spec.Rollout
	const p = "spec.rollout"
	if r.Canary < 0 {
		v.fail(p+".canary", "must be 0 (no canary) or more, not %d", r.Canary)
	}
	b := r.BatchSize
	switch {
	case b.Count != 0 && b.Percent != 0:
		v.fail(p+".batchSize", "set a count or a percentage, not both (%d and %d%%)", b.Count, b.Percent)
	case b.Percent != 0:
		if b.Percent < 1 || b.Percent > 100 {
			v.fail(p+".batchSize", "percentage must be between 1%% and 100%%, not %d%%", b.Percent)
		}
	case b.Count < 1:
		v.fail(p+".batchSize", "must be at least 1 agent (or a percentage such as 25%%), not %d", b.Count)
	}
	if r.SuccessThreshold != 0 && r.MaxFailures != nil {
		v.fail(p+".successThreshold", "set successThreshold or maxFailures, not both")
	}
	if r.SuccessThreshold != 0 && (r.SuccessThreshold < 1 || r.SuccessThreshold > 100) {
		v.fail(p+".successThreshold", "percentage must be between 1%% and 100%%, not %d%%", r.SuccessThreshold)
	}
	if r.MaxFailures != nil && *r.MaxFailures < 0 {
		v.fail(p+".maxFailures", "must be 0 or more, not %d", *r.MaxFailures)
	}
	enum(v, p+".approval", r.Approval, approvals)
	enum(v, p+".onFailure", r.OnFailure, onFailures)
	if r.OnAgentFailure != "" { // empty in a spec built in code: the default, rollback
		enum(v, p+".onAgentFailure", r.OnAgentFailure, onAgentFailures)
	}
}

func (v *validator) timeouts() {
	t := v.m.Spec.Timeouts
	v.duration("spec.timeouts.assignment", t.Assignment, MinTimeout, MaxAssignmentTimeout)
	v.duration("spec.timeouts.migration", t.Migration, MinTimeout, MaxMigrationTimeout)
	if t.Assignment > t.Migration && t.Migration >= MinTimeout {
		v.fail("spec.timeouts.assignment", "must not be longer than timeouts.migration (%s)", fmtDuration(t.Migration))
	}
	enum(v, "spec.deadlinePolicy", v.m.Spec.DeadlinePolicy, deadlinePolicies)
	enum(v, "spec.onTimeout", v.m.Spec.OnTimeout, onTimeouts)
}
