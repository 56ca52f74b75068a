// Package state holds the two state machines of a migration as explicit transition tables: the
// migration's own state and the state of each assignment (one migration × agent × attempt).
//
// The tables are the single source of truth: CheckMigration and CheckAssignment accept exactly
// the edges listed (plus "no change", from == to), MigrationTransitions and AssignmentTransitions
// return them with the reason each edge exists, and MarkdownTables renders them for the docs.
//
// Two rules shaped the tables beyond the one-line summaries in DESIGN.md:
//
//   - Final means "reached a result; nothing happens without an operator". It does not always
//     mean absorbing: rollback can always resume (principle 5), so a finished migration or
//     assignment that changed agents can still go to rolling_back, and a migration that failed or
//     partially succeeded can be retried. Only rolled_back migrations and not_needed,
//     rolled_back and superseded assignments have no way out.
//   - Assignment progress is reported by the agent and is level-triggered (principle 2): after an
//     outage the hub may see pending followed directly by succeeded. So an assignment may jump
//     forward over states the hub never saw (pending → verifying, detecting → succeeded), but it
//     never goes backwards except between the phases of consecutive steps (verifying of step i →
//     detecting or applying of step i+1). The hub itself writes rolling_back, timed_out,
//     agent_unreachable and superseded, and failed for a request it cannot deliver.
//
// Stale reports (an older attempt, an out-of-order event) are the caller's business: they are
// fenced by the attempt number and the event's position, not by this table.
package state

import (
	"fmt"
	"slices"
	"strings"

	"godwit.dev/godwit/internal/fault"
)

// MigrationState is the state of a migration.
type MigrationState string

// Migration states.
const (
	MigrationPending            MigrationState = "pending"
	MigrationRunning            MigrationState = "running"
	MigrationPaused             MigrationState = "paused"
	MigrationRollingBack        MigrationState = "rolling_back"
	MigrationSucceeded          MigrationState = "succeeded"
	MigrationPartiallySucceeded MigrationState = "partially_succeeded"
	MigrationFailed             MigrationState = "failed"
	MigrationRolledBack         MigrationState = "rolled_back"
	MigrationCancelled          MigrationState = "cancelled"
)

// AssignmentState is the state of one attempt of a migration on one agent.
type AssignmentState string

// Assignment states.
const (
	AssignmentPending          AssignmentState = "pending"
	AssignmentDetecting        AssignmentState = "detecting"
	AssignmentNotNeeded        AssignmentState = "not_needed"
	AssignmentApplying         AssignmentState = "applying"
	AssignmentVerifying        AssignmentState = "verifying"
	AssignmentSucceeded        AssignmentState = "succeeded"
	AssignmentFailed           AssignmentState = "failed"
	AssignmentRollingBack      AssignmentState = "rolling_back"
	AssignmentRolledBack       AssignmentState = "rolled_back"
	AssignmentRollbackFailed   AssignmentState = "rollback_failed"
	AssignmentTimedOut         AssignmentState = "timed_out"
	AssignmentSuperseded       AssignmentState = "superseded"
	AssignmentAgentUnreachable AssignmentState = "agent_unreachable"
)

// MigrationStates lists every migration state in lifecycle order.
func MigrationStates() []MigrationState { return slices.Clone(migrationStates) }

// AssignmentStates lists every assignment state in lifecycle order.
func AssignmentStates() []AssignmentState { return slices.Clone(assignmentStates) }

var migrationStates = []MigrationState{
	MigrationPending, MigrationRunning, MigrationPaused, MigrationRollingBack,
	MigrationSucceeded, MigrationPartiallySucceeded, MigrationFailed, MigrationRolledBack, MigrationCancelled,
}

var assignmentStates = []AssignmentState{
	AssignmentPending, AssignmentDetecting, AssignmentApplying, AssignmentVerifying,
	AssignmentNotNeeded, AssignmentSucceeded, AssignmentFailed, AssignmentTimedOut,
	AssignmentRollingBack, AssignmentRolledBack, AssignmentRollbackFailed,
	AssignmentSuperseded, AssignmentAgentUnreachable,
}

// Final reports whether the migration has reached a result: the controller has nothing left to
// do on its own. An operator can still roll back (any final state but rolled_back) or retry
// (failed, partially_succeeded).
func (s MigrationState) Final() bool {
	switch s {
	case MigrationSucceeded, MigrationPartiallySucceeded, MigrationFailed, MigrationRolledBack, MigrationCancelled:
		return true
	}
	return false
}

// Valid reports whether s is a known migration state.
func (s MigrationState) Valid() bool { return slices.Contains(migrationStates, s) }

// Next returns the states s may move to, in table order.
func (s MigrationState) Next() []MigrationState { return migrationMachine.next(s) }

// Final reports whether the attempt has reached its outcome, so a batch waiting on it can move on.
// failed, timed_out, succeeded and rollback_failed may still go to rolling_back; agent_unreachable
// is not final (the agent may come back).
func (s AssignmentState) Final() bool {
	switch s {
	case AssignmentNotNeeded, AssignmentSucceeded, AssignmentFailed, AssignmentTimedOut,
		AssignmentRolledBack, AssignmentRollbackFailed, AssignmentSuperseded:
		return true
	}
	return false
}

// Valid reports whether s is a known assignment state.
func (s AssignmentState) Valid() bool { return slices.Contains(assignmentStates, s) }

// Next returns the states s may move to, in table order.
func (s AssignmentState) Next() []AssignmentState { return assignmentMachine.next(s) }

// Transition is one legal edge, with what causes it.
type Transition[S ~string] struct {
	From, To S
	// Trigger says who or what takes the edge, for the docs.
	Trigger string
}

// MigrationTransitions returns the migration table in lifecycle order.
func MigrationTransitions() []Transition[MigrationState] { return slices.Clone(migrationTable) }

// AssignmentTransitions returns the assignment table in lifecycle order.
func AssignmentTransitions() []Transition[AssignmentState] { return slices.Clone(assignmentTable) }

// Triggers, shared by several edges.
const (
	opAbort    = "operator: abort"
	opRollback = "operator: rollback"
	opRetry    = "operator: retry the failed agents"
	// undeliverable: a spec stored past Apply's checks (written into the store directly, or the
	// NATS server's max payload lowered since) fails on its own rather than stop the others.
	undeliverable = "controller: the migration cannot be run (its stored spec does not parse, or its desired document exceeds the NATS max payload)"
)

var migrationTable = []Transition[MigrationState]{
	{MigrationPending, MigrationRunning, "controller starts the first batch"},
	{MigrationPending, MigrationCancelled, opAbort},
	{MigrationPending, MigrationFailed, undeliverable},

	{MigrationRunning, MigrationPaused, "operator: pause; approval: manual after a batch; onFailure: pause; onTimeout: pause"},
	{MigrationRunning, MigrationSucceeded, "controller: every assignment succeeded or was not needed"},
	{MigrationRunning, MigrationPartiallySucceeded, "controller: every assignment is final and the failures stayed within the failure budget"},
	{MigrationRunning, MigrationFailed, "controller: failure budget exceeded with onFailure: abort; deadline with onTimeout: fail; " + undeliverable[len("controller: "):]},
	{MigrationRunning, MigrationRollingBack, "operator: rollback; onFailure: rollback; onTimeout: rollback"},
	{MigrationRunning, MigrationCancelled, opAbort},

	{MigrationPaused, MigrationRunning, "operator: resume, or approve the next batch"},
	{MigrationPaused, MigrationRollingBack, "operator: rollback; deadline with onTimeout: rollback"},
	{MigrationPaused, MigrationFailed, "controller: deadline with onTimeout: fail; " + undeliverable[len("controller: "):]},
	{MigrationPaused, MigrationCancelled, opAbort},

	{MigrationRollingBack, MigrationRolledBack, "controller: every assignment that changed an agent is rolled back"},
	{MigrationRollingBack, MigrationFailed, "controller: a rollback failed on some agent (rollback can be resumed)"},
	{MigrationRollingBack, MigrationCancelled, opAbort},

	{MigrationSucceeded, MigrationRollingBack, opRollback},
	{MigrationPartiallySucceeded, MigrationRunning, opRetry},
	{MigrationPartiallySucceeded, MigrationRollingBack, opRollback},
	{MigrationFailed, MigrationRunning, opRetry},
	{MigrationFailed, MigrationRollingBack, "operator: rollback (also resumes a rollback that failed)"},
	{MigrationCancelled, MigrationRollingBack, "operator: rollback what was applied before the abort"},
}

// Assignment triggers.
const (
	agentReport  = "agent report"
	agentSkipped = "agent report (earlier reports not seen by the hub)"
	nextStep     = "agent report: next step"
	agentFailed  = "agent report: a command failed or hit its step timeout, or the agent refused it by policy; hub: the request cannot be delivered (over the NATS max payload)"
	hubDeadline  = "hub: assignment deadline expired (onTimeout decides what follows)"
	hubRollback  = "hub: migration rolls back (the agent may have started unseen)"
	hubOffline   = "hub: agent became unreachable"
	hubSupersede = "hub: a new attempt replaces this one"
	agentBack    = "agent reachable again: back where it was"
	agentBackAt  = "agent reachable again with a result reached while unreachable"
)

var assignmentTable = []Transition[AssignmentState]{
	{AssignmentPending, AssignmentDetecting, agentReport + ": detection started"},
	{AssignmentPending, AssignmentApplying, agentReport + ": first step has no detect, or " + agentSkipped},
	{AssignmentPending, AssignmentVerifying, agentSkipped},
	{AssignmentPending, AssignmentNotNeeded, agentSkipped},
	{AssignmentPending, AssignmentSucceeded, agentSkipped},
	{AssignmentPending, AssignmentFailed, agentFailed},
	{AssignmentPending, AssignmentTimedOut, hubDeadline},
	{AssignmentPending, AssignmentRollingBack, hubRollback},
	{AssignmentPending, AssignmentSuperseded, hubSupersede},
	{AssignmentPending, AssignmentAgentUnreachable, hubOffline},

	{AssignmentDetecting, AssignmentApplying, agentReport + ": detect exit 0, the step is needed"},
	{AssignmentDetecting, AssignmentVerifying, agentSkipped},
	{AssignmentDetecting, AssignmentNotNeeded, agentReport + ": detect exit 1 on every step, nothing to do"},
	{AssignmentDetecting, AssignmentSucceeded, agentReport + ": the last steps were already done (detect exit 1)"},
	{AssignmentDetecting, AssignmentFailed, agentReport + ": detection failed (detect exit neither 0 nor 1)"},
	{AssignmentDetecting, AssignmentTimedOut, hubDeadline},
	{AssignmentDetecting, AssignmentRollingBack, hubRollback},
	{AssignmentDetecting, AssignmentSuperseded, hubSupersede},
	{AssignmentDetecting, AssignmentAgentUnreachable, hubOffline},

	{AssignmentApplying, AssignmentDetecting, nextStep + " (it has a detect command)"},
	{AssignmentApplying, AssignmentVerifying, agentReport + ": run succeeded, verifying"},
	{AssignmentApplying, AssignmentSucceeded, agentReport + ": last step applied (no verify)"},
	{AssignmentApplying, AssignmentFailed, agentFailed},
	{AssignmentApplying, AssignmentTimedOut, hubDeadline},
	{AssignmentApplying, AssignmentRollingBack, hubRollback},
	{AssignmentApplying, AssignmentSuperseded, hubSupersede},
	{AssignmentApplying, AssignmentAgentUnreachable, hubOffline},

	{AssignmentVerifying, AssignmentDetecting, nextStep + " (it has a detect command)"},
	{AssignmentVerifying, AssignmentApplying, nextStep + " (no detect command)"},
	{AssignmentVerifying, AssignmentSucceeded, agentReport + ": last step verified"},
	{AssignmentVerifying, AssignmentFailed, agentFailed},
	{AssignmentVerifying, AssignmentTimedOut, hubDeadline},
	{AssignmentVerifying, AssignmentRollingBack, hubRollback},
	{AssignmentVerifying, AssignmentSuperseded, hubSupersede},
	{AssignmentVerifying, AssignmentAgentUnreachable, hubOffline},

	{AssignmentSucceeded, AssignmentRollingBack, "hub: migration rolls back"},
	{AssignmentFailed, AssignmentRollingBack, "hub: migration rolls back (onFailure: rollback or operator)"},
	{AssignmentTimedOut, AssignmentRollingBack, "hub: onTimeout: rollback, or migration rolls back"},

	{AssignmentRollingBack, AssignmentRolledBack, agentReport + ": every applied step rolled back"},
	{AssignmentRollingBack, AssignmentRollbackFailed, agentReport + ": a rollback command failed or hit its step timeout"},
	{AssignmentRollingBack, AssignmentSuperseded, hubSupersede},
	{AssignmentRollingBack, AssignmentAgentUnreachable, hubOffline},

	{AssignmentRollbackFailed, AssignmentRollingBack, "hub: rollback resumed (operator or controller retry)"},

	{AssignmentAgentUnreachable, AssignmentPending, agentBack},
	{AssignmentAgentUnreachable, AssignmentDetecting, agentBack + ", or further"},
	{AssignmentAgentUnreachable, AssignmentApplying, agentBack + ", or further"},
	{AssignmentAgentUnreachable, AssignmentVerifying, agentBack + ", or further"},
	{AssignmentAgentUnreachable, AssignmentRollingBack, agentBack},
	{AssignmentAgentUnreachable, AssignmentNotNeeded, agentBackAt},
	{AssignmentAgentUnreachable, AssignmentSucceeded, agentBackAt},
	{AssignmentAgentUnreachable, AssignmentFailed, agentBackAt},
	{AssignmentAgentUnreachable, AssignmentRolledBack, agentBackAt},
	{AssignmentAgentUnreachable, AssignmentRollbackFailed, agentBackAt},
	{AssignmentAgentUnreachable, AssignmentTimedOut, "hub: assignment deadline expired while unreachable (deadlinePolicy: wall)"},
	{AssignmentAgentUnreachable, AssignmentSuperseded, hubSupersede},
}

// machine is a transition table indexed for lookups.
type machine[S ~string] struct {
	name   string
	states []S
	edges  map[[2]S]bool
	order  []Transition[S]
}

func newMachine[S ~string](name string, states []S, table []Transition[S]) machine[S] {
	m := machine[S]{name: name, states: states, edges: make(map[[2]S]bool, len(table)), order: table}
	for _, t := range table {
		m.edges[[2]S{t.From, t.To}] = true
	}
	return m
}

var (
	migrationMachine  = newMachine("migration", migrationStates, migrationTable)
	assignmentMachine = newMachine("assignment", assignmentStates, assignmentTable)
)

func (m machine[S]) next(from S) []S {
	var out []S
	for _, t := range m.order {
		if t.From == from {
			out = append(out, t.To)
		}
	}
	return out
}

func (m machine[S]) check(from, to S) error {
	for _, s := range []S{from, to} {
		if !slices.Contains(m.states, s) {
			return fmt.Errorf("unknown %s state %q: %w", m.name, string(s), fault.ErrInvalid)
		}
	}
	if from == to || m.edges[[2]S{from, to}] {
		return nil
	}
	next := m.next(from)
	names := make([]string, len(next))
	for i, s := range next {
		names[i] = string(s)
	}
	return &TransitionError{Machine: m.name, From: string(from), To: string(to), Allowed: names}
}

// CheckMigration returns nil when a migration may go from one state to the other (or stays in
// it), a *TransitionError wrapping fault.ErrConflict when the table forbids it, and an error
// wrapping fault.ErrInvalid for an unknown state.
func CheckMigration(from, to MigrationState) error { return migrationMachine.check(from, to) }

// CheckAssignment is CheckMigration for assignments.
func CheckAssignment(from, to AssignmentState) error { return assignmentMachine.check(from, to) }

// TransitionError is a refused transition. It wraps fault.ErrConflict, so the API answers 409:
// the request was well formed but the object is in the wrong state for it.
type TransitionError struct {
	Machine  string // "migration" or "assignment"
	From, To string
	// Allowed lists the states From may go to; empty when From has no way out.
	Allowed []string
}

func (e *TransitionError) Error() string {
	msg := fmt.Sprintf("illegal %s transition %s → %s", e.Machine, e.From, e.To)
	if len(e.Allowed) == 0 {
		return msg + " (" + e.From + " is final)"
	}
	return msg + " (from " + e.From + ": " + strings.Join(e.Allowed, ", ") + ")"
}

// Unwrap makes every TransitionError a fault.ErrConflict.
func (e *TransitionError) Unwrap() error { return fault.ErrConflict }
