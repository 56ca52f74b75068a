package spec

import (
	"fmt"
	"strings"

	"godwit.dev/godwit/internal/manifest"
	"godwit.dev/godwit/internal/specsig"
)

// Validate checks the semantics of a parsed (or hand-built) spec. It returns nil, one
// *fault.FieldError, or several joined with errors.Join (in the order metadata, versions,
// selector, steps, rollout, timeouts). Each names the field path and, for a parsed spec, the line
// it came from; a missing field points at the line of its closest parent.
func (m *Migration) Validate() error {
	v := &validator{m: m, Report: manifest.Report{Lines: m.lines}}
	v.top()
	v.Selector("spec.selector", m.Spec.Selector)
	v.steps()
	v.rollout()
	v.timeouts()
	if m.Spec.Signature != "" {
		// Only its form: which keys to trust is each agent's policy, not the hub's.
		if _, err := specsig.ParseEnvelope(m.Spec.Signature); err != nil {
			v.Fail("spec.signature", "%v (write it with godwit sign)", err)
		}
	}
	return v.Err()
}

type validator struct {
	m *Migration
	manifest.Report
}

func (v *validator) top() {
	m := v.m
	v.Header(Kind, m.APIVersion, m.Kind, m.Metadata)
	v.Text("spec.fromVersion", m.Spec.FromVersion)
	if strings.TrimSpace(m.Spec.ToVersion) == "" {
		v.Fail("spec.toVersion", "is required: the version the migration brings agents to")
	} else {
		v.Text("spec.toVersion", m.Spec.ToVersion)
	}
}

func (v *validator) steps() {
	steps := v.m.Spec.Steps
	if len(steps) == 0 {
		v.Fail("spec.steps", "at least one step is required")
		return
	}
	if len(steps) > MaxSteps {
		v.Fail("spec.steps", "has %d steps, the limit is %d: split the migration, or move the work into scripts the steps run", len(steps), MaxSteps)
		return
	}
	first := map[string]int{}
	for i, s := range steps {
		p := fmt.Sprintf("spec.steps[%d]", i)
		v.Name(p+".name", s.Name)
		if j, dup := first[s.Name]; dup && s.Name != "" {
			v.Fail(p+".name", "duplicate step name %q (also spec.steps[%d])", s.Name, j)
		} else {
			first[s.Name] = i
		}
		if strings.TrimSpace(s.Run) == "" {
			v.Fail(p+".run", "is required: the command that applies the step")
		}
		for _, c := range []struct{ field, cmd string }{{"detect", s.Detect}, {"run", s.Run}, {"verify", s.Verify}, {"rollback", s.Rollback}} {
			if len(c.cmd) > MaxCommandBytes {
				v.Fail(p+"."+c.field, "is %d bytes, the limit is %d bytes: put a long script in a file on the agents and run that", len(c.cmd), MaxCommandBytes)
				continue
			}
			v.Command(p+"."+c.field, c.cmd)
		}
		v.Within(p+".timeout", s.Timeout, MinStepTimeout, MaxStepTimeout)
	}
}

func (v *validator) rollout() {
	r := v.m.Spec.Rollout
	const p = "spec.rollout"
	if r.Canary < 0 {
		v.Fail(p+".canary", "must be 0 (no canary) or more, not %d", r.Canary)
	}
	b := r.BatchSize
	switch {
	case b.Count != 0 && b.Percent != 0:
		v.Fail(p+".batchSize", "set a count or a percentage, not both (%d and %d%%)", b.Count, b.Percent)
	case b.Percent != 0:
		if b.Percent < 1 || b.Percent > 100 {
			v.Fail(p+".batchSize", "percentage must be between 1%% and 100%%, not %d%%", b.Percent)
		}
	case b.Count < 1:
		v.Fail(p+".batchSize", "must be at least 1 agent (or a percentage such as 25%%), not %d", b.Count)
	}
	if r.SuccessThreshold != 0 && r.MaxFailures != nil {
		v.Fail(p+".successThreshold", "set successThreshold or maxFailures, not both")
	}
	if r.SuccessThreshold != 0 && (r.SuccessThreshold < 1 || r.SuccessThreshold > 100) {
		v.Fail(p+".successThreshold", "percentage must be between 1%% and 100%%, not %d%%", r.SuccessThreshold)
	}
	if r.MaxFailures != nil && *r.MaxFailures < 0 {
		v.Fail(p+".maxFailures", "must be 0 or more, not %d", *r.MaxFailures)
	}
	manifest.Enum(&v.Report, p+".approval", r.Approval, approvals...)
	manifest.Enum(&v.Report, p+".onFailure", r.OnFailure, onFailures...)
	if r.OnAgentFailure != "" { // empty in a spec built in code: the default, rollback
		manifest.Enum(&v.Report, p+".onAgentFailure", r.OnAgentFailure, onAgentFailures...)
	}
}

func (v *validator) timeouts() {
	t := v.m.Spec.Timeouts
	v.Within("spec.timeouts.assignment", t.Assignment, MinTimeout, MaxAssignmentTimeout)
	v.Within("spec.timeouts.migration", t.Migration, MinTimeout, MaxMigrationTimeout)
	if t.Assignment > t.Migration && t.Migration >= MinTimeout {
		v.Fail("spec.timeouts.assignment", "must not be longer than timeouts.migration (%s)", manifest.FormatDuration(t.Migration))
	}
	manifest.Enum(&v.Report, "spec.deadlinePolicy", v.m.Spec.DeadlinePolicy, deadlinePolicies...)
	manifest.Enum(&v.Report, "spec.onTimeout", v.m.Spec.OnTimeout, onTimeouts...)
}
