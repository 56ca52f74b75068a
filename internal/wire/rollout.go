package wire

import "time"

// Migration is a migration as the hub stores it and the API returns it (GET
// /api/v1/migrations, the migration of a description, the answer to an operator action).
type Migration struct {
	Name          string    `json:"name"`
	Spec          string    `json:"spec"` // the YAML as applied
	SpecHash      string    `json:"spec_hash"`
	State         string    `json:"state"`
	Reason        string    `json:"reason,omitempty"`
	Batches       int       `json:"batches"`
	CurrentBatch  int       `json:"current_batch"`  // highest batch dispatched; -1 before the first
	ApprovedBatch int       `json:"approved_batch"` // highest batch allowed to start
	ActiveMS      int64     `json:"active_ms"`      // deadline time counted so far
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	FinishedAt    time.Time `json:"finished_at,omitzero"`
	Version       int64     `json:"version"`
}

// Assignment is one (migration, agent, attempt), as stored and as described.
type Assignment struct {
	Migration  string `json:"migration"`
	AgentID    string `json:"agent_id"`
	Attempt    int    `json:"attempt"`
	Batch      int    `json:"batch"`
	State      string `json:"state"`
	Generation int    `json:"generation"`
	// AckedGeneration is the highest generation of this attempt its agent has reported on; a
	// request with a higher generation is not yet confirmed.
	AckedGeneration int    `json:"acked_generation"`
	Action          string `json:"action"`
	Step            int    `json:"step"`
	StepName        string `json:"step_name,omitempty"`
	Error           string `json:"error,omitempty"`
	// Failure keeps why the attempt failed, even after its agent was rolled back.
	Failure         string    `json:"failure,omitempty"`
	FailedStep      string    `json:"failed_step,omitempty"` // the step it failed at
	ExitCode        *int      `json:"exit_code,omitempty"`
	PreviousAttempt int       `json:"previous_attempt,omitempty"`
	Applied         int       `json:"applied"` // steps whose run started
	ActiveMS        int64     `json:"active_ms"`
	DispatchedAt    time.Time `json:"dispatched_at,omitzero"`
	// UnreachableSince is when the assignment last became agent_unreachable; zero while it is
	// not.
	UnreachableSince time.Time `json:"unreachable_since,omitzero"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
	FinishedAt       time.Time `json:"finished_at,omitzero"`
}

// MigrationApplyResult is what applying a migration spec returns (POST /api/v1/migrations,
// godwit apply).
type MigrationApplyResult struct {
	Name string `json:"name"`
	// Outcome is "created", "unchanged" or, with DryRun, "planned".
	Outcome  string     `json:"outcome"`
	DryRun   bool       `json:"dry_run"`
	Matched  int        `json:"matched"`
	Batches  [][]string `json:"batches"` // agent ids per batch
	Names    [][]string `json:"names"`   // agent names per batch, for people
	Budget   int        `json:"failure_budget"`
	Warnings []string   `json:"warnings,omitempty"`
}

// MigrationAction is an operator action on a migration: the last segment of
// POST /api/v1/migrations/{name}/{action}.
type MigrationAction string

// Operator actions on a migration.
const (
	MigrationPause    MigrationAction = "pause"
	MigrationResume   MigrationAction = "resume"
	MigrationApprove  MigrationAction = "approve"
	MigrationAbort    MigrationAction = "abort"
	MigrationRollback MigrationAction = "rollback"
	MigrationRetry    MigrationAction = "retry" // the failed agents, each with a new attempt
)

// Valid reports whether a is one of the operator actions.
func (a MigrationAction) Valid() bool {
	switch a {
	case MigrationPause, MigrationResume, MigrationApprove, MigrationAbort, MigrationRollback, MigrationRetry:
		return true
	}
	return false
}

// MigrationDescription is a migration with its progress (GET /api/v1/migrations/{name},
// godwit describe migration).
type MigrationDescription struct {
	Migration   Migration       `json:"migration"`
	Budget      int             `json:"failure_budget"`
	Batches     []BatchProgress `json:"batches"`
	Assignments []Assignment    `json:"assignments"` // every attempt
	Failures    []FailureGroup  `json:"failures"`
}

// AssignmentsShown chooses the assignments a migration's description carries.
type AssignmentsShown string

// The assignments a description carries: every attempt, the latest attempts that failed
// (including those rolled back since), or none (counts and failure groups only).
const (
	AssignmentsAll    AssignmentsShown = "all"
	AssignmentsFailed AssignmentsShown = "failed"
	AssignmentsNone   AssignmentsShown = "none"
)

// BatchProgress counts one batch's latest attempts by state.
type BatchProgress struct {
	Batch  int            `json:"batch"`
	Total  int            `json:"total"`
	States map[string]int `json:"states"`
}

// FailureGroup gathers agents that failed the same way.
type FailureGroup struct {
	Step      string   `json:"step"`
	Signature string   `json:"signature"`
	Count     int      `json:"count"`
	Agents    []string `json:"agents"`
	Example   string   `json:"example"`
}

// Kinds of CheckFinding, and the rule the controller resolves each by.
const (
	// FindingNeverReceived: the hub asked an agent (reachable for a while) for something and the
	// agent reports nothing about that request. Rule: the agent's desired state is written again.
	FindingNeverReceived = "never_received"
	// FindingOrphanAttempt: an agent is working on an attempt the hub has replaced with a newer
	// one. Rule: none needed — the agent supersedes it when it takes the newer attempt; reported.
	FindingOrphanAttempt = "orphan_attempt"
	// FindingUnknownWork: an agent is working on a migration or attempt the hub has no record of
	// (e.g. the hub's database was restored from an older backup). Rule: reported for a person;
	// the agent finishes it from its journal.
	FindingUnknownWork = "unknown_work"
	// FindingAgentAhead: the agent acted on a newer generation than the hub recorded (same
	// cause). Rule: reported; the hub keeps its own record and the next request supersedes.
	FindingAgentAhead = "agent_ahead"
)

// CheckFinding is one disagreement between the hub's records and an agent's observed state
// (POST /api/v1/check, godwit check).
type CheckFinding struct {
	Kind      string `json:"kind"`
	Migration string `json:"migration"`
	AgentID   string `json:"agent_id"`
	Attempt   int    `json:"attempt"`
	Detail    string `json:"detail"`
	Fix       string `json:"fix"`
}
