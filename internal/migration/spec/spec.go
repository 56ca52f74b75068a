package spec

import (
	"strconv"
	"strings"
	"time"

	"godwit.dev/godwit/internal/manifest"
	"godwit.dev/godwit/internal/wire"
)

// The only apiVersion and kind this package reads.
const (
	APIVersion = manifest.APIVersion
	Kind       = "Migration"
)

// Defaults and limits. Parse fills the defaults for fields that are absent (or null); Validate
// enforces the limits.
const (
	DefaultStepTimeout       = 10 * time.Minute
	MinStepTimeout           = time.Second
	MaxStepTimeout           = 24 * time.Hour
	DefaultAssignmentTimeout = time.Hour
	DefaultMigrationTimeout  = 7 * 24 * time.Hour
	MinTimeout               = time.Second
	MaxAssignmentTimeout     = 30 * 24 * time.Hour
	MaxMigrationTimeout      = 365 * 24 * time.Hour
	// MaxSpecBytes bounds the input of Parse.
	MaxSpecBytes = 1 << 20
	// MaxSteps bounds the steps of one migration, and MaxCommandBytes each of a step's commands.
	// A spec within them is not yet known to be deliverable: what the hub sends an agent (the
	// spec's desired document) must also fit in one NATS message, which the hub checks against
	// the server it is connected to when the spec is applied (docs/migrations.md, "Limits").
	MaxSteps        = 256
	MaxCommandBytes = 64 << 10
)

// Migration is a parsed spec. The zero value is not valid; build one with Parse, or fill every
// field and call Validate.
type Migration struct {
	APIVersion string
	Kind       string
	// Metadata.Name is a DNS label ([a-z0-9-], starting and ending with a letter or digit, ≤ 63):
	// it ends up in URLs, KV keys and NATS subjects.
	Metadata manifest.Metadata
	Spec     Spec

	// lines maps a field path (spec.steps[1].run) to the YAML line it was read from, so that
	// Validate's errors carry lines too. Nil for a Migration built in code.
	lines manifest.Lines
}

// Spec is what the migration does and how it rolls out.
type Spec struct {
	// Selector picks the agents the migration runs on.
	Selector manifest.LabelSelector
	// FromVersion is optional; ToVersion is required. Both are reported in events.
	FromVersion string
	ToVersion   string
	// Steps run in order on every selected agent.
	Steps          []Step
	Rollout        Rollout
	Timeouts       Timeouts
	DeadlinePolicy DeadlinePolicy
	OnTimeout      OnTimeout
	// Signature is the envelope `godwit sign` writes (package specsig): an ed25519 signature of
	// the migration's name and its steps as agents receive them (StepSpecs). The hub keeps it
	// unchanged and hands it to agents with the steps; an agent with trusted keys in its policy
	// runs nothing of an unsigned or altered spec. Empty: not signed.
	Signature string
}

// Step is one ordered unit of work. Each command is a shell command run by the agent.
type Step struct {
	Name string
	// Detect is optional: exit 0 = the step is needed, exit 1 = already done, anything else =
	// detection failed.
	Detect string
	// Run is required.
	Run string
	// Verify is optional: exit 0 = verified.
	Verify string
	// Rollback is optional; a step without one is skipped when rolling back.
	Rollback string
	// Timeout applies to each command of this step separately.
	Timeout time.Duration
}

// Rollout says how the selected agents are split into batches and when to stop.
type Rollout struct {
	// Canary is the size of the first batch; 0 means no canary batch.
	Canary int
	// BatchSize is the size of every batch after the canary.
	BatchSize BatchSize
	// SuccessThreshold is a percentage (1..100) of the matched agents that must succeed (or be
	// not needed); 0 means unset. Exclusive with MaxFailures.
	SuccessThreshold int
	// MaxFailures is the number of failed agents tolerated; nil means unset. When neither is
	// set Parse fills MaxFailures = 0.
	MaxFailures *int
	Approval    Approval
	OnFailure   OnFailure
	// OnAgentFailure is what happens on an agent whose attempt failed or timed out: rollback
	// (the default) undoes its applied steps so no agent is left half-migrated; leave keeps it
	// as it is for inspection.
	OnAgentFailure OnAgentFailure
}

// BatchSize is a count or a percentage of the matched agents: exactly one of the two is set.
type BatchSize struct {
	Count   int
	Percent int
}

// Of returns the number of agents per batch for total matched agents: the count, or the
// percentage of total rounded up, and at least 1.
func (b BatchSize) Of(total int) int {
	n := b.Count
	if b.Percent > 0 {
		n = (total*b.Percent + 99) / 100
	}
	return max(n, 1)
}

// String renders the batch size as it is written in a spec ("10" or "25%").
func (b BatchSize) String() string {
	if b.Percent != 0 {
		return strconv.Itoa(b.Percent) + "%"
	}
	return strconv.Itoa(b.Count)
}

// Timeouts bound an assignment (one agent's attempt) and the whole migration. How the time is
// counted is Spec.DeadlinePolicy.
type Timeouts struct {
	Assignment time.Duration
	Migration  time.Duration
}

// Approval says who starts each batch after the first.
type Approval string

// Approval values.
const (
	ApprovalAuto   Approval = "auto"
	ApprovalManual Approval = "manual"
)

// OnFailure is what happens when the failure budget is exceeded.
type OnFailure string

// OnFailure values.
const (
	OnFailurePause    OnFailure = "pause"
	OnFailureAbort    OnFailure = "abort"
	OnFailureRollback OnFailure = "rollback"
)

// DeadlinePolicy says which time counts towards a deadline.
type DeadlinePolicy string

// DeadlinePolicy values.
const (
	// DeadlineActive counts only time during which the hub was up and the agent reachable.
	DeadlineActive DeadlinePolicy = "active"
	// DeadlineWall counts wall-clock time.
	DeadlineWall DeadlinePolicy = "wall"
)

// OnAgentFailure is what happens on one agent whose attempt failed.
type OnAgentFailure string

// OnAgentFailure values.
const (
	OnAgentFailureRollback OnAgentFailure = "rollback"
	OnAgentFailureLeave    OnAgentFailure = "leave"
)

// OnTimeout is what happens when a deadline expires.
type OnTimeout string

// OnTimeout values.
const (
	OnTimeoutRollback OnTimeout = "rollback"
	OnTimeoutFail     OnTimeout = "fail"
	OnTimeoutPause    OnTimeout = "pause"
)

// The allowed values of each enum, in the order error messages list them.
var (
	approvals        = []Approval{ApprovalAuto, ApprovalManual}
	onFailures       = []OnFailure{OnFailurePause, OnFailureAbort, OnFailureRollback}
	onAgentFailures  = []OnAgentFailure{OnAgentFailureRollback, OnAgentFailureLeave}
	deadlinePolicies = []DeadlinePolicy{DeadlineActive, DeadlineWall}
	onTimeouts       = []OnTimeout{OnTimeoutRollback, OnTimeoutFail, OnTimeoutPause}
)

// Warnings returns advice about a valid spec that is probably not what the operator meant. They
// are not errors; the API shows them when a spec is applied.
func (m *Migration) Warnings() []string {
	var out []string
	if m.Spec.Selector.Empty() {
		out = append(out, "selector is empty: the migration targets every agent")
	}
	if m.Spec.Rollout.OnFailure == OnFailureRollback || m.Spec.OnTimeout == OnTimeoutRollback {
		var missing []string
		for _, s := range m.Spec.Steps {
			if s.Rollback == "" {
				missing = append(missing, s.Name)
			}
		}
		if len(missing) > 0 {
			out = append(out, "a failure or timeout policy rolls back, but these steps have no rollback command and will be left as they are: "+joinQuoted(missing))
		}
	}
	return out
}

func joinQuoted(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// StepSpecs returns the steps as agents receive and run them, and as a signature covers them.
func (m *Migration) StepSpecs() []wire.StepSpec {
	out := make([]wire.StepSpec, len(m.Spec.Steps))
	for i, s := range m.Spec.Steps {
		out[i] = wire.StepSpec{Name: s.Name, Detect: s.Detect, Run: s.Run, Verify: s.Verify, Rollback: s.Rollback, TimeoutMS: s.Timeout.Milliseconds()}
	}
	return out
}
