package store

import (
	"context"
	"fmt"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// SweepStore holds sweeps (scheduled fleet-wide checks) and their runs.
//
// A sweep's suspension is stored with it: while it is suspended, no firing of it can be claimed
// (StartRun), on any replica and across restarts.
//
// The sweep lock lives here, in SQL, so that it holds across hub replicas and restarts: at most
// one run of a sweep is running at any time (a unique index over running runs), and a run that
// would be a second one is recorded as lock-skipped instead, in the same transaction.
type SweepStore interface {
	// CreateSweep stores a new sweep with version 1. A sweep of the same name: ErrConflict.
	CreateSweep(ctx context.Context, sw wire.Sweep) error
	// UpdateSweep replaces a sweep's spec and suspension (Suspended, Suspension) if its stored
	// version is still sw.Version (else ErrConflict; unknown sweep: ErrNotFound); the stored
	// version becomes sw.Version+1. With reschedule the next firing becomes sw.NextFireAt;
	// without, the stored one is kept, since the scheduler may have moved it meanwhile.
	UpdateSweep(ctx context.Context, sw wire.Sweep, reschedule bool) error
	GetSweep(ctx context.Context, name string) (wire.Sweep, error)
	// ListSweeps returns every sweep by name.
	ListSweeps(ctx context.Context) ([]wire.Sweep, error)
	// DeleteSweep removes a sweep; its runs stay as the audit trail. Unknown: ErrNotFound.
	DeleteSweep(ctx context.Context, name string) error

	// StartRun records a run in one transaction, fenced like SaveMigration when fence.Epoch is
	// not zero (else ErrFenced):
	//   - with a firing, the sweep's next firing first moves from firing.From to firing.Next,
	//     only if it is still firing.From under firing.SpecHash and the sweep is not suspended
	//     (else ErrConflict and nothing is stored): one scheduled instant fires once, whichever
	//     hub claims it, and none while the sweep is suspended (with firing.Resume: only while
	//     it is, and the claim resumes it). If the run's scheduled instant already has a record
	//     (the next firing was set back onto it), the claim alone is stored and the error is
	//     ErrFiringRecorded: that instant has fired, and the schedule moves on;
	//   - a run with status running takes the sweep's lock together with its agents' rows; if
	//     another run of the sweep is running, the run is stored as skipped with lock_skipped,
	//     exit code 0 and no agents instead;
	//   - a run in any other status (a missed-firing record) is stored as it is.
	// It returns the run as stored.
	StartRun(ctx context.Context, fence Fence, firing *SweepFiring, run wire.SweepRun, agents []wire.SweepRunAgent) (wire.SweepRun, error)
	// SaveRun writes a run and upserts the given agents' rows in one transaction, only while
	// the stored run is still running (else ErrConflict; unknown run: ErrNotFound), fenced as
	// StartRun. Writing a final status releases the sweep's lock.
	SaveRun(ctx context.Context, fence Fence, run wire.SweepRun, changed []wire.SweepRunAgent) error
	GetRun(ctx context.Context, id string) (wire.SweepRun, error)
	// ListRuns returns a page of runs newest first (by fired_at, then id), without their
	// context snapshot (GetRun has it), and the cursor of the next page ("" after the last).
	ListRuns(ctx context.Context, q RunQuery) (page []wire.SweepRun, next string, err error)
	// RunningRuns returns every running run, oldest first.
	RunningRuns(ctx context.Context) ([]wire.SweepRun, error)
	// ListRunAgents returns a run's agents by name, then id.
	ListRunAgents(ctx context.Context, runID string) ([]wire.SweepRunAgent, error)
}

// RunQuery selects a page of sweep runs.
type RunQuery struct {
	Sweep  string // "" for every sweep's runs
	Limit  int    // 1..1000
	Cursor string // from a previous page's next
}

// ErrFiringRecorded is StartRun's answer to a claimed firing whose scheduled instant already has
// a record: the claim is stored (the next firing moved on), nothing else is. It is a conflict.
var ErrFiringRecorded = fmt.Errorf("firing already recorded: %w", fault.ErrConflict)

// SweepFiring claims one scheduled firing of a sweep for StartRun.
type SweepFiring struct {
	Sweep    string
	SpecHash string
	From     time.Time // the stored next firing the claimer saw
	Next     time.Time // the next firing after this one; zero: none
	// Resume makes the claim resume the sweep in the same write: it then requires the sweep to
	// be suspended (not the other way round) and clears the suspension, and the version moves
	// on. Resuming with resumePolicy: misfire claims the firings held back so, and no other hub
	// can claim them first.
	Resume bool
}
