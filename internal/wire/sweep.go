package wire

import (
	"encoding/json"
	"time"
)

// Sweep buckets. Like desired and observed state, check requests and check results are
// level-triggered documents, one key per agent: the hub writes an agent's requests, the agent
// writes its results, and after an outage each side reads the current document.
const (
	// BucketSweep holds the checks the hub currently asks of each agent (key: agent ID). The
	// hub writes it; an agent may only read and watch its own key.
	BucketSweep = "godwit-sweep"
	// BucketSweepResults holds each agent's answers to those checks (key: agent ID). Only the
	// agent writes its own key.
	BucketSweepResults = "godwit-sweep-results"
)

// Run statuses. A run is running until it ends completed or failed; a firing that did not run
// is recorded as skipped (the sweep's lock was held: LockSkipped) or missed (the hub was down
// when it was due and the misfire policy is skip).
const (
	SweepRunRunning   = "running"
	SweepRunCompleted = "completed"
	SweepRunFailed    = "failed"
	SweepRunSkipped   = "skipped"
	SweepRunMissed    = "missed"
)

// What started a run.
const (
	TriggerSchedule = "schedule"
	TriggerAPI      = "api"
	TriggerCLI      = "cli"
)

// States of one agent in a run. pending, dispatched and running are in flight; the others are
// final: clean (check exit 0), drifted (exit 1), error (any other result), missing (offline,
// revoked or gone) and budget (the run's time budget ran out before its answer).
const (
	CheckPending    = "pending"
	CheckDispatched = "dispatched"
	CheckRunning    = "running"
	CheckClean      = "clean"
	CheckDrifted    = "drifted"
	CheckError      = "error"
	CheckMissing    = "missing"
	CheckBudget     = "budget"
)

// CheckFinal reports whether an agent's state in a run is final.
func CheckFinal(state string) bool {
	switch state {
	case CheckPending, CheckDispatched, CheckRunning:
		return false
	}
	return true
}

// Sweep is the stored record of a sweep: its spec as applied, the next time it fires and
// whether it is suspended.
type Sweep struct {
	Name     string `json:"name"`
	Spec     string `json:"spec"` // the YAML as applied
	SpecHash string `json:"spec_hash"`
	// NextFireAt is the next scheduled firing; zero for a sweep without a schedule. While the
	// sweep is suspended it stays where it was: the first firing held back.
	NextFireAt time.Time `json:"next_fire_at,omitzero"`
	// Suspended: no scheduled firing runs (triggered runs do). Suspension says by whom, when,
	// how and why; it is nil when the sweep is not suspended.
	Suspended  bool             `json:"suspended"`
	Suspension *SweepSuspension `json:"suspension,omitempty"`
	CreatedAt  time.Time        `json:"created_at"`
	UpdatedAt  time.Time        `json:"updated_at"`
	// Version counts the changes of the spec and of the suspension.
	Version int64 `json:"version"`
}

// How a sweep was suspended (SweepSuspension.Via, SweepSuspendRequest.Via).
const (
	SuspendViaSpec = "spec" // applied with spec.suspended: true
	SuspendViaAPI  = "api"
	SuspendViaCLI  = "cli"
	SuspendViaUI   = "ui"
)

// SweepSuspension records a sweep's suspension.
type SweepSuspension struct {
	Since time.Time `json:"since"`
	// By names who suspended it: the CLI's user@host, a UI session, the API's "by" or client
	// address; empty when a spec with spec.suspended: true was applied.
	By     string `json:"by,omitempty"`
	Via    string `json:"via"` // spec | api | cli | ui
	Reason string `json:"reason,omitempty"`
}

// SweepSuspendRequest is the body of POST /api/v1/sweeps/{name}/suspend and …/resume. Every
// field is optional.
type SweepSuspendRequest struct {
	// Reason says why, for the audit record (at most 500 characters).
	Reason string `json:"reason,omitempty"`
	// Via is "api" (the default) or "cli".
	Via string `json:"via,omitempty"`
	// By says who asked (at most 200 characters).
	By string `json:"by,omitempty"`
}

// SweepSuspendResult is what suspending or resuming a sweep returns.
type SweepSuspendResult struct {
	Name string `json:"name"`
	// Outcome is suspended, resumed or unchanged (it already was in that state).
	Outcome    string           `json:"outcome"`
	Suspended  bool             `json:"suspended"`
	Suspension *SweepSuspension `json:"suspension,omitempty"`
	// HeldFirings counts the scheduled firings that came due while the sweep was suspended
	// (on resume; at most MaxHeldFiringsCounted are counted).
	HeldFirings  int    `json:"held_firings"`
	ResumePolicy string `json:"resume_policy"`
	// CatchUp is what resuming recorded for the held firings under resumePolicy: misfire (a
	// catch-up run, a missed record, or a lock-skipped record).
	CatchUp     []SweepRun  `json:"catch_up,omitempty"`
	NextFirings []time.Time `json:"next_firings,omitempty"`
}

// MaxHeldFiringsCounted bounds how many held-back firings are counted for a suspended sweep.
const MaxHeldFiringsCounted = 10_000

// SweepSummary is a sweep as the API lists it: the record, the spec's main settings and the
// latest run.
type SweepSummary struct {
	Sweep
	Schedule string `json:"schedule,omitempty"`
	Timezone string `json:"timezone"`
	Misfire  string `json:"misfire"`
	// ResumePolicy is skip or misfire: what resuming does with the firings held back.
	ResumePolicy string `json:"resume_policy"`
	// HeldFirings counts, for a suspended sweep, the scheduled firings that have come due
	// since its stored next firing (at most MaxHeldFiringsCounted).
	HeldFirings int         `json:"held_firings,omitempty"`
	Action      string      `json:"action"`
	Remediate   string      `json:"remediate,omitempty"` // the migration remediation starts
	MaxSeconds  int         `json:"max_seconds"`
	NextFirings []time.Time `json:"next_firings,omitempty"`
	LastRun     *SweepRun   `json:"last_run,omitempty"`
}

// SweepRun is the audit record of one firing of a sweep.
type SweepRun struct {
	ID          string `json:"id"` // UUIDv7
	Sweep       string `json:"sweep"`
	Trigger     string `json:"trigger"`                // schedule | api | cli
	TriggeredBy string `json:"triggered_by,omitempty"` // who: "scheduler", a user, a client address
	// ScheduledFor is the cron instant of a scheduled firing (for a catch-up run, the latest
	// missed one); zero for API and CLI triggers.
	ScheduledFor time.Time `json:"scheduled_for,omitzero"`
	FiredAt      time.Time `json:"fired_at"`
	// Deadline is FiredAt + MaxSeconds: agents without an answer then count as skipped_budget.
	Deadline    time.Time `json:"deadline"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	MaxSeconds  int       `json:"max_seconds"`
	Status      string    `json:"status"`
	LockSkipped bool      `json:"lock_skipped"`
	// ExitCode is null while the run is running, 0 when it completed (drift found or not),
	// non-zero when the run itself failed (see docs/sweeps.md).
	ExitCode *int   `json:"exit_code"`
	Error    string `json:"error,omitempty"`
	// Every matched agent is counted in exactly one of processed (its check found drift or
	// failed: drifted + errors), skipped_clean, skipped_missing and skipped_budget once the run
	// has ended; while it runs, the rest are in flight.
	Matched        int             `json:"matched"`
	Processed      int             `json:"processed"`
	SkippedClean   int             `json:"skipped_clean"`
	SkippedMissing int             `json:"skipped_missing"`
	SkippedBudget  int             `json:"skipped_budget"`
	Drifted        int             `json:"drifted"`
	Errors         int             `json:"errors"`
	DriftedAgents  []SweepAgentRef `json:"drifted_agents"`
	// MissedFirings counts scheduled firings that were due while no hub ran: recorded on the
	// missed record (misfire: skip) or on the catch-up run (misfire: run_once).
	MissedFirings int `json:"missed_firings,omitempty"`
	// Remediation names the migration this run started for its drifted agents.
	Remediation string `json:"remediation,omitempty"`
	// Context is the snapshot the run was made with: the spec, its hash, the hub, the budget.
	// Run listings leave it out; the single run has it.
	Context   json.RawMessage `json:"context,omitempty"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// Final reports whether the run has ended.
func (r SweepRun) Final() bool { return r.Status != SweepRunRunning }

// SweepAgentRef names an agent in a run record.
type SweepAgentRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// SweepRunAgent is one agent's part in a run.
type SweepRunAgent struct {
	RunID        string    `json:"run_id"`
	AgentID      string    `json:"agent_id"`
	AgentName    string    `json:"agent_name"`
	State        string    `json:"state"`
	ExitCode     *int      `json:"exit_code,omitempty"`
	Error        string    `json:"error,omitempty"`
	OutputTail   string    `json:"output_tail,omitempty"`
	DurationMS   int64     `json:"duration_ms,omitempty"`
	DispatchedAt time.Time `json:"dispatched_at,omitzero"`
	FinishedAt   time.Time `json:"finished_at,omitzero"`
}

// SweepRunDetail is a run with every agent's part.
type SweepRunDetail struct {
	SweepRun
	Agents []SweepRunAgent `json:"agents"`
}

// SweepTriggerRequest is the body of POST /api/v1/sweeps/{name}/runs. Every field is optional.
type SweepTriggerRequest struct {
	// MaxSeconds overrides the spec's budget for this run; it must be positive.
	MaxSeconds *int `json:"max_seconds,omitempty"`
	// Trigger is "api" (the default) or "cli".
	Trigger string `json:"trigger,omitempty"`
	// By says who asked, for the audit record.
	By string `json:"by,omitempty"`
}

// SweepApplyResult is what applying a sweep spec returns.
type SweepApplyResult struct {
	Name string `json:"name"`
	// Outcome is created, updated, unchanged or, with a dry run, planned.
	Outcome     string      `json:"outcome"`
	DryRun      bool        `json:"dry_run"`
	Matched     int         `json:"matched"` // agents the selector matches now
	NextFirings []time.Time `json:"next_firings,omitempty"`
	// Suspended is the sweep's state after the apply; Suspension says "suspended" or "resumed"
	// when the apply changed it (spec.suspended set, or removed after being set).
	Suspended  bool     `json:"suspended"`
	Suspension string   `json:"suspension,omitempty"`
	Warnings   []string `json:"warnings,omitempty"`
}

// SweepRequests is the value of an agent's key in BucketSweep: every check the hub currently
// wants an answer to from that agent.
type SweepRequests struct {
	AgentID string `json:"agent_id"`
	// Epoch is the sweep leader's fencing epoch; an agent ignores a document older than one it
	// has acted on.
	Epoch  int64               `json:"epoch"`
	Checks []SweepCheckRequest `json:"checks"`
}

// SweepCheckRequest asks for one check in one run. The run id fences answers: the hub takes an
// answer only for the run it asked in.
type SweepCheckRequest struct {
	Sweep   string `json:"sweep"`
	RunID   string `json:"run_id"`
	Command string `json:"command"` // run with sh -c
	// TimeoutMS bounds the command; the hub never gives more than what is left of the budget.
	TimeoutMS int64 `json:"timeout_ms"`
}

// SweepResults is the value of an agent's key in BucketSweepResults.
type SweepResults struct {
	AgentID   string             `json:"agent_id"`
	Results   []SweepCheckResult `json:"results"`
	UpdatedAt time.Time          `json:"updated_at"` // agent clock; informational only
}

// SweepCheckResult is the agent's answer to one check request.
type SweepCheckResult struct {
	Sweep string `json:"sweep"`
	RunID string `json:"run_id"`
	// State is running, clean (exit 0), drifted (exit 1) or error (anything else).
	State      string `json:"state"`
	ExitCode   *int   `json:"exit_code,omitempty"`
	Error      string `json:"error,omitempty"`
	OutputTail string `json:"output_tail,omitempty"`
	DurationMS int64  `json:"duration_ms,omitempty"`
}
