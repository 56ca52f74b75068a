// Package sweep runs sweeps: named, scheduled consistency checks across the fleet, with a lock,
// a time budget and an audit record per firing (docs/sweeps.md).
//
// The Service has two sides. Its API side (Apply, Trigger, Get, List, Runs, Run, Delete) works
// on every hub replica, straight on the store. Its leader side (Start) fires the schedule and
// drives the runs, under its own fencing epoch ("sweeps"):
//
//   - Schedule: each sweep's next firing is stored; a pass claims a due firing by moving it
//     with compare-and-set in the transaction that records the run, so a firing is recorded once
//     whichever hub claims it, and a restarted hub finds what it missed (misfire decides).
//   - Lock: at most one running run per sweep is a unique index in SQL; a run that would be a
//     second one is recorded lock_skipped instead (store.SweepStore.StartRun).
//   - Runs: each pass takes the agents' answers (watched from the godwit-sweep-results bucket),
//     marks agents that went away missing, spends the budget, dispatches within the
//     concurrency, ends the run (remediating if asked) and then writes each agent's requests,
//     derived from SQL, to the godwit-sweep bucket: the level-triggered pattern of the
//     migration controller, with the agent side in internal/agent/sweepcheck.
//
// Every time-dependent decision reads the injected Clock, so tests jump hours and cross
// daylight-saving changes.
package sweep

// Time zones come from the host's zoneinfo, or from the copy embedded here when the host has
// none (a minimal container): a schedule in Europe/Berlin must not depend on the image.
import _ "time/tzdata"
