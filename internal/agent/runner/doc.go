// Package runner is the agent side of a migration: it takes the agent's desired state from the
// hub, runs each assignment's steps with [execute.Run], keeps its progress in a local journal
// (SQLite), reports every result as an event and publishes the agent's observed state.
//
// What follows are the product's promises; the tests of this package hold them.
//
// # Journal first
//
// Every transition is committed to the journal (runner.db in the agent's state directory) before
// it is acted on: "step i run started" is committed before the command starts, the command's
// process group (its id, the boot id, the pid namespace and the start time of its leader) before
// the command runs anything, its result before anything else happens with it. The journal runs
// in WAL mode with synchronous=FULL, so a commit survives a power cut, not only a crash of the
// agent. Nothing that matters lives only in memory:
// the cursor of every assignment, the steps it was given, the highest epoch seen and the last
// accepted desired-state document (so an agent that reboots while the hub is down carries on
// with the work it was given), and the events not yet handed to the outbox.
//
// A journal that is not a SQLite database, is not a runner journal, fails SQLite's integrity
// check or was written by a newer schema is refused with an error naming the file, marked
// health.ErrNeedsOperator, and is never modified or overwritten. A journal of an older schema is
// upgraded in place when opened.
//
// # A journal that cannot be written
//
// A write the file system refuses for a while — full (SQLITE_FULL, ENOSPC), over quota, an I/O
// error, a lock held by another process: see package health — is retried with back-off (0.25 s
// doubling to 5 s) until it succeeds, and Degraded says what fails since when meanwhile; the host
// reports it in its heartbeat and starts no new work. The work loop waits in that write: a
// command's result stays in memory until the journal takes it (should the agent die meanwhile,
// the command counts as interrupted: see below), a command does not start until its start and
// then its process group are recorded, and a desired-state document the journal could not take
// is not acted on and is offered to the journal again on every Resync. Nothing already in the
// journal is lost, and no event is dropped: each is written with its transition or not at all.
// A write refused for good (a read-only file system or file, a permission, a damaged file) makes
// Run return the error, marked health.ErrNeedsOperator by its class.
//
// # Apply
//
// For each step in order:
//   - detect, when set: exit 0 means needed, exit 1 means already done (the step is skipped),
//     anything else (a timeout included) fails the assignment (migration.detection.failed).
//     Both successful answers are reported as migration.detection.succeeded.
//   - run (state applying): the step's index is added to Applied in the same commit that records
//     "run started", so a rollback undoes a step that was interrupted halfway. migration.step.started
//     is reported. A non-zero exit or a timeout fails the assignment: migration.execution.partial
//     when an earlier step was applied by this attempt, migration.execution.failed otherwise.
//   - verify, when set (state verifying): non-zero fails the assignment
//     (migration.verification.failed); success is migration.verification.succeeded.
//
// All steps done: succeeded (migration.execution.succeeded, with the applied and the skipped
// steps in data.extra). No step needed at all (nothing applied): not_needed
// (migration.detection.not_needed).
//
// # Rollback
//
// Action rollback at a higher generation runs the rollback command of every applied step not yet
// in RolledBack, in reverse order (state rolling_back). Steps without a rollback command are
// skipped and named in the event. The first failure ends in rollback_failed
// (migration.rollback.failed); all done is rolled_back (migration.rollback.succeeded). A later
// generation with action rollback resumes: it runs only the steps not yet in RolledBack. The
// steps of the rollback generation replace the journal's when they have the same number of steps
// (so an operator can fix a broken rollback command and resume); otherwise the journal's are kept.
// A rollback that arrives while the same attempt is still applying stops the running command
// and rolls back what was applied, the interrupted step included. The steps that earlier
// attempts of the migration applied on this node and did not roll back (a retry's detect finds
// them already done) are added to Applied when a rollback starts, so it undoes them too; from
// then on this attempt answers for them, and a later attempt's rollback does not run them again.
// A rollback of an attempt this agent never saw undoes what the earlier attempts left applied
// (held like any rollback of a finished attempt, see below); when they left nothing, it ends at
// once as rolled_back: nothing was applied here.
//
// # Cancel
//
// Action cancel stops the running command if it belongs to that assignment and ends it with the
// error "cancelled by operator" (migration.step.cancelled): as failed when it was applying, as
// rollback_failed when it was rolling back (so that the rollback can still be resumed). A cancel
// of a finished attempt only records the generation; a cancel of an attempt never seen records
// it as failed without running anything.
//
// # Fencing and duplicates
//
// A desired-state document with a lower Epoch than the highest one accepted (persisted in the
// journal) is ignored: it is a deposed leader's late write. Per (migration, attempt) the journal
// keeps the highest generation acted on: the same generation again is answered from the journal
// and runs nothing; a lower generation, or an attempt lower than the journal's latest for that
// migration, is stale and ignored (logged once). A higher generation with the same action as the
// one in progress is adopted without restarting anything; apply or cancel at a higher generation
// on a finished attempt only records the generation (re-running an attempt takes a new attempt).
// A new attempt starts fresh; earlier attempts' records are kept. When a new attempt arrives
// while an earlier one of the same migration is unfinished, the command in flight is allowed to
// finish, then the earlier attempt ends as superseded (migration.step.cancelled) and the new one
// starts from its first detect.
//
// # Crash or reboot mid-step
//
// A command's process group never outlives its agent unnoticed. Its leader (the `sh -c`) dies
// with the agent (the parent-death signal SIGKILL: see package execute). Before anything else
// runs or is judged, Run looks at every command the journal says was running when the agent
// stopped, through the process group recorded for it (package procgroup: after a reboot, or
// when its numbers were reused, nothing of it is left):
//   - nothing of it is left: its audit row is closed as "no result";
//   - something of it still runs (a child the parent-death signal does not reach, or a leader
//     that lost the signal by running a set-user-ID program): it is an orphan, reported as
//     migration.step.orphaned (warning, with the group and its pids). Run waits for it to end,
//     up to its step's timeout counted from when the command started (migration.step.orphan_exited,
//     info), and stops it when the timeout passes — SIGTERM, then SIGKILL after Config.Grace
//     (migration.step.orphan_killed, warning). A cancel or a rollback of its assignment stops it
//     at once, and so does the agent stopping (then the next start looks again if anything is
//     still left). A newer attempt does not: like a command in flight, it may finish.
//
// Only then is the step judged, so detect runs only when no copy of the step can still be running,
// and a step without detect never runs alongside its interrupted copy. What is outside the group
// (a process that called setsid or setpgid, a daemon that forked twice) is not the command's.
//
// An assignment that was not finished when the agent stopped is resumed by Run before any new
// work, from the journal alone (the hub may still be down), unless the current desired state
// cancels, rolls back or supersedes it. A command that was started and has no recorded result:
//   - run, when the step has detect: detect runs first. Exit 1: the step had completed, it is not
//     run again (verify still runs); exit 0: run runs again; anything else fails the assignment.
//     The detection event says what became of the interrupted run (ended with the agent, or
//     outlived it and ended on its own, or was stopped) and carries recovered, orphan and
//     orphan_killed in data.extra.
//   - run, without detect: run runs again. Steps without detect must therefore be idempotent.
//   - detect and verify commands run again.
//   - rollback (and, when the rollback is resumed, one a cancel stopped): when the step has
//     detect and the journal's commands show it applied (a run that succeeded, or a detect that
//     said done), detect runs first. Exit 0: the rollback took effect, it is not run again; exit
//     1 or no answer: it runs again. A step never known to be applied (its run failed part-way)
//     and a step without detect: it runs again. Rollback commands must be idempotent.
//
// Cancelling Run's context is handled the same way: the running command is stopped, the
// assignment stays unfinished in the journal, and it is recovered by the next Run.
//
// # Order and back-pressure
//
// One assignment runs at a time: first any unfinished one from the journal, then the desired
// ones in the order of the document. When Config.CanStart reports false (the outbox is full, or
// the agent's storage fails), no new work starts — no new attempt and no rollback of a finished
// attempt — and the runner says so in the log and keeps it pending; it retries on every Desired,
// every Resync and every second.
// The assignment in progress (recovered ones included) runs to its end, a rollback that
// interrupts it included; cancels and bookkeeping that run no command are never held.
//
// # Commands
//
// Every command runs through [execute.Run] (sh -c in its own process group whose leader dies with
// the agent, the step's timeout, SIGTERM then SIGKILL after Config.Grace) in Config.WorkDir,
// with GODWIT_MIGRATION, GODWIT_STEP, GODWIT_STEP_INDEX, GODWIT_ATTEMPT, GODWIT_GENERATION,
// GODWIT_ACTION (apply|rollback), GODWIT_PHASE (detect|run|verify|rollback),
// GODWIT_FROM_VERSION, GODWIT_TO_VERSION and GODWIT_AGENT_ID in its environment. A command that does not exist is the shell's exit code 127
// with its stderr in the event; the assignment fails and the agent goes on.
//
// # Agent policy
//
// With Config.Policy, every command is checked against it (package policy) before anything of
// it is recorded or run, and runs with the user, work directory and environment it decides. A
// refused command never runs and is not recorded as started: the assignment ends failed (a
// refused rollback command, or the detect asked about an interrupted one: rollback_failed,
// resumable), with the refusal, which names the rule,
// as its error and a migration.policy.refused event (error). A refused run command is not added
// to Applied. The signature the steps came with is kept in the journal with them, so a resumed
// step is checked against the same one.
//
// # Events and observed state
//
// Every result becomes an event (error for failed, partial and rollback_failed, warning for
// cancelled, info otherwise) carrying the migration, step, attempt, message, error text, exit
// code, output tail (stderr then stdout), duration, versions, system information, the agent's id
// and, in data.extra, the generation, phase and step index. An event is written to the journal
// in the same transaction as the transition it reports, then handed to Config.Events (the
// outbox); it leaves the journal only once the outbox has taken it. When the outbox refuses it,
// the refusal is logged as an error and it is offered again on every Resync and at the next
// start: the journal is still the truth, and the event's id never changes, so a retry cannot
// duplicate it.
//
// After every transition the full observed state is published through Config.Observed, from a
// separate goroutine so that a hub that is down never slows the steps. A failed publication is
// retried on the next transition and on Resync, which the host calls on every heartbeat tick;
// Resync also republishes at least every minute. The observed state lists the latest attempt of
// every migration that is in the current desired state or unfinished.
package runner
