package controller

import (
	"godwit.dev/godwit/internal/migration/state"
	"godwit.dev/godwit/internal/wire"
)

// Short names for the states of package state, as stored.
const (
	mPending            = string(state.MigrationPending)
	mRunning            = string(state.MigrationRunning)
	mPaused             = string(state.MigrationPaused)
	mRollingBack        = string(state.MigrationRollingBack)
	mSucceeded          = string(state.MigrationSucceeded)
	mPartiallySucceeded = string(state.MigrationPartiallySucceeded)
	mFailed             = string(state.MigrationFailed)
	mRolledBack         = string(state.MigrationRolledBack)
	mCancelled          = string(state.MigrationCancelled)

	aPending        = string(state.AssignmentPending)
	aDetecting      = string(state.AssignmentDetecting)
	aNotNeeded      = string(state.AssignmentNotNeeded)
	aApplying       = string(state.AssignmentApplying)
	aVerifying      = string(state.AssignmentVerifying)
	aSucceeded      = string(state.AssignmentSucceeded)
	aFailed         = string(state.AssignmentFailed)
	aRollingBack    = string(state.AssignmentRollingBack)
	aRolledBack     = string(state.AssignmentRolledBack)
	aRollbackFailed = string(state.AssignmentRollbackFailed)
	aTimedOut       = string(state.AssignmentTimedOut)
	aSuperseded     = string(state.AssignmentSuperseded)
	aUnreachable    = string(state.AssignmentAgentUnreachable)
)

func migrationFinal(s string) bool { return state.MigrationState(s).Final() }

// assignmentSettled: the agent has nothing more to do for this request.
func assignmentSettled(s string) bool {
	switch s {
	case aNotNeeded, aSucceeded, aFailed, aRolledBack, aRollbackFailed, aTimedOut, aSuperseded:
		return true
	}
	return false
}

// inFlight: the agent is (or should be) working on it.
func inFlight(s string) bool {
	switch s {
	case aDetecting, aApplying, aVerifying, aRollingBack, aUnreachable:
		return true
	}
	return false
}

func isFailure(s string) bool { return s == aFailed || s == aTimedOut }

// failedAttempt: the attempt failed, whatever happened to the agent afterwards (its applied
// steps may since have been rolled back).
func failedAttempt(a *wire.Assignment) bool { return a.Failure != "" || isFailure(a.State) }
