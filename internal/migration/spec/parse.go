package spec

import (
	"strconv"
	"strings"

	"godwit.dev/godwit/internal/manifest"
)

// kind is what the manifest decoder needs to know of a Migration document.
var kind = manifest.Kind{Name: Kind, MaxBytes: MaxSpecBytes}

// Parse reads exactly one YAML (or JSON) document holding a Migration. It is strict: unknown and
// repeated fields, values of the wrong shape, bad durations and percentages, aliases, a second
// document and a kind or apiVersion other than Migration / godwit.dev/v1 are errors. Absent
// fields take their defaults. Parse does not run Validate; call it next.
//
// Errors are *fault.FieldError values (joined when there are several) naming the field path and
// its line; an input over MaxSpecBytes wraps fault.ErrTooLarge.
func Parse(data []byte) (*Migration, error) {
	m := withDefaults()
	lines, err := kind.Decode(data, &m.Metadata, m.Spec.fields()...)
	if err != nil {
		return nil, err
	}
	if m.Spec.Rollout.SuccessThreshold == 0 && m.Spec.Rollout.MaxFailures == nil {
		zero := 0
		m.Spec.Rollout.MaxFailures = &zero
	}
	m.APIVersion, m.Kind, m.lines = APIVersion, Kind, lines
	return m, nil
}

// withDefaults returns a Migration holding every default; decoding overwrites what the document
// sets.
func withDefaults() *Migration {
	return &Migration{Spec: Spec{
		Rollout: Rollout{
			BatchSize:      BatchSize{Percent: 100},
			Approval:       ApprovalAuto,
			OnFailure:      OnFailurePause,
			OnAgentFailure: OnAgentFailureRollback,
		},
		Timeouts:       Timeouts{Assignment: DefaultAssignmentTimeout, Migration: DefaultMigrationTimeout},
		DeadlinePolicy: DeadlineActive,
		OnTimeout:      OnTimeoutPause,
	}}
}

// fields are the fields of a Migration's spec, decoded into s.
func (s *Spec) fields() []manifest.Field {
	r := &s.Rollout
	return []manifest.Field{
		manifest.Selector("selector", &s.Selector),
		manifest.String("fromVersion", &s.FromVersion),
		manifest.String("toVersion", &s.ToVersion),
		manifest.List("steps", func(item manifest.Value) {
			st := Step{Timeout: DefaultStepTimeout}
			item.Mapping(
				manifest.String("name", &st.Name),
				manifest.String("detect", &st.Detect),
				manifest.String("run", &st.Run),
				manifest.String("verify", &st.Verify),
				manifest.String("rollback", &st.Rollback),
				manifest.Duration("timeout", &st.Timeout),
			)
			s.Steps = append(s.Steps, st)
		}),
		manifest.Object("rollout",
			manifest.Int("canary", &r.Canary),
			manifest.Read("batchSize", func(v manifest.Value) {
				str, ok := v.Scalar()
				if !ok {
					return
				}
				if strings.HasSuffix(str, "%") {
					if pct, ok := percent(v, str); ok {
						r.BatchSize = BatchSize{Percent: pct}
					}
					return
				}
				c, err := strconv.Atoi(str)
				if err != nil {
					v.Fail("must be a number of agents (10) or a percentage of the matched agents (25%%), not %q", str)
					return
				}
				r.BatchSize = BatchSize{Count: c}
			}),
			manifest.Read("successThreshold", func(v manifest.Value) {
				str, ok := v.Scalar()
				if !ok {
					return
				}
				if !strings.HasSuffix(str, "%") {
					v.Fail("must be a percentage of the matched agents such as 90%%, not %q (for a count of failures use maxFailures)", str)
					return
				}
				if pct, ok := percent(v, str); ok {
					r.SuccessThreshold = pct
				}
			}),
			manifest.Read("maxFailures", func(v manifest.Value) {
				var n int
				if v.Int(&n) {
					r.MaxFailures = &n
				}
			}),
			manifest.String("approval", &r.Approval),
			manifest.String("onFailure", &r.OnFailure),
			manifest.String("onAgentFailure", &r.OnAgentFailure),
		),
		manifest.Object("timeouts",
			manifest.Duration("assignment", &s.Timeouts.Assignment),
			manifest.Duration("migration", &s.Timeouts.Migration),
		),
		manifest.String("deadlinePolicy", &s.DeadlinePolicy),
		manifest.String("onTimeout", &s.OnTimeout),
		manifest.String("signature", &s.Signature),
	}
}

// percent parses "N%" with N in 1..100. The range is checked here because 0% would otherwise be
// indistinguishable from an absent value.
func percent(v manifest.Value, s string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	if err != nil {
		v.Fail("%q is not a percentage (write e.g. 25%%)", s)
		return 0, false
	}
	if n < 1 || n > 100 {
		v.Fail("percentage must be between 1%% and 100%%, not %s", s)
		return 0, false
	}
	return n, true
}
