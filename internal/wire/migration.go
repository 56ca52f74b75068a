package wire

import "time"

// Assignment actions the hub can ask of an agent.
const (
	ActionApply    = "apply"
	ActionRollback = "rollback"
	ActionCancel   = "cancel"
)

// DesiredState is the value of an agent's key in the desired-state bucket: everything the hub
// currently wants of that agent. It is level-triggered: an agent that was away for hours reads
// the current document, never a backlog of commands.
type DesiredState struct {
	AgentID string `json:"agent_id"`
	// Epoch is the fencing epoch of the controller that wrote it. An agent ignores a document
	// with a lower epoch than one it has already acted on (a deposed leader's late write).
	Epoch       int64               `json:"epoch"`
	Assignments []DesiredAssignment `json:"assignments"`
}

// DesiredAssignment is one (migration, agent, attempt) the agent should work on.
type DesiredAssignment struct {
	Migration string `json:"migration"`
	Attempt   int    `json:"attempt"`
	// Generation increases with every new request on the same attempt (apply, then rollback,
	// then a rollback resumed after it failed…). The agent acts on a higher generation, answers
	// the same generation from its journal, and ignores a lower one.
	Generation  int        `json:"generation"`
	Action      string     `json:"action"`
	FromVersion string     `json:"from_version,omitempty"`
	ToVersion   string     `json:"to_version,omitempty"`
	Steps       []StepSpec `json:"steps"`
	// Signature is the spec's spec.signature, unchanged: an ed25519 signature of the migration's
	// name and Steps (package specsig) that an agent with trusted keys requires.
	Signature string `json:"signature,omitempty"`
}

// StepSpec is one step as the agent runs it. Commands run with sh -c.
type StepSpec struct {
	Name     string `json:"name"`
	Detect   string `json:"detect,omitempty"`
	Run      string `json:"run"`
	Verify   string `json:"verify,omitempty"`
	Rollback string `json:"rollback,omitempty"`
	// TimeoutMS bounds each command of the step.
	TimeoutMS int64 `json:"timeout_ms"`
}

// Timeout returns the step's per-command timeout.
func (s StepSpec) Timeout() time.Duration { return time.Duration(s.TimeoutMS) * time.Millisecond }

// ObservedState is the value of an agent's key in the observed bucket: what the agent knows of
// each assignment it was given, from its journal. The controller reconciles it.
type ObservedState struct {
	AgentID     string               `json:"agent_id"`
	Assignments []ObservedAssignment `json:"assignments"`
	UpdatedAt   time.Time            `json:"updated_at"` // agent clock; informational only
}

// ObservedAssignment is the agent's account of one attempt.
type ObservedAssignment struct {
	Migration  string `json:"migration"`
	Attempt    int    `json:"attempt"`
	Generation int    `json:"generation"`
	Action     string `json:"action"`
	// State uses the assignment state names (detecting, applying, verifying, succeeded,
	// not_needed, failed, rolling_back, rolled_back, rollback_failed).
	State    string `json:"state"`
	Step     int    `json:"step"` // index of the step in progress or where it ended
	StepName string `json:"step_name,omitempty"`
	// Applied lists the indexes of steps whose run command was started (so rollback knows what
	// to undo); RolledBack the indexes whose rollback completed.
	Applied    []int     `json:"applied,omitempty"`
	RolledBack []int     `json:"rolled_back,omitempty"`
	Error      string    `json:"error,omitempty"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
}
