package runner

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"godwit.dev/godwit/internal/agent/execute"
	"godwit.dev/godwit/internal/agent/health"
	"godwit.dev/godwit/internal/agent/policy"
	"godwit.dev/godwit/internal/agent/procgroup"
	"godwit.dev/godwit/internal/wire"
)

// errCancelled is the error of an assignment the operator cancelled.
const errCancelled = "cancelled by operator"

var (
	// errStopped: Run's context ended while a command ran; the assignment stays unfinished.
	errStopped = errors.New("runner stopping")
	// errPreempted: the desired state changed the course of the assignment in progress.
	errPreempted = errors.New("preempted by a newer desired state")
	// errRefused: the agent's policy refused a command; the assignment has ended (recorded).
	errRefused = errors.New("refused by the agent policy")
)

type jobKind int

const (
	jobResume    jobKind = iota // continue an unfinished assignment of the journal
	jobNew                      // an attempt the journal has no record of
	jobChange                   // a higher generation of an attempt the journal has
	jobSupersede                // an unfinished attempt replaced by a newer attempt
)

type job struct {
	kind jobKind
	rec  *record
	want wire.DesiredAssignment
}

// next picks the next thing to do: an unfinished assignment first, then the desired ones in
// order. held reports that new work was held back because CanStart said no.
func (r *Runner) next(ctx context.Context) (j *job, held bool, err error) {
	r.mu.Lock()
	fatal := r.fatal
	r.mu.Unlock()
	if fatal != nil {
		return nil, false, fatal
	}
	unfinished, err := r.j.unfinished(ctx)
	if err != nil {
		return nil, false, err
	}
	doc := r.currentDesired()
	for _, rec := range unfinished {
		if d, ok := wanted(doc, rec.Migration); ok {
			switch {
			case d.Attempt > rec.Attempt:
				return &job{kind: jobSupersede, rec: rec, want: d}, false, nil
			case d.Attempt == rec.Attempt && d.Generation > rec.Generation:
				return &job{kind: jobChange, rec: rec, want: d}, false, nil
			}
		}
		return &job{kind: jobResume, rec: rec}, false, nil
	}
	if doc == nil {
		return nil, false, nil
	}
	canStart := r.cfg.CanStart()
	var hold *wire.DesiredAssignment
	for _, d := range doc.Assignments {
		if d.Migration == "" || !validAction(d.Action) {
			if r.once(fmt.Sprintf("invalid:%s/%d/%d/%s", d.Migration, d.Attempt, d.Generation, d.Action)) {
				r.log.Error("ignoring an invalid desired assignment", "migration", d.Migration, "attempt", d.Attempt,
					"generation", d.Generation, "action", d.Action)
			}
			continue
		}
		latest, err := r.j.latest(ctx, d.Migration)
		if err != nil {
			return nil, false, err
		}
		var next *job
		gated := false
		switch {
		case latest == nil || d.Attempt > latest.Attempt:
			next, gated = &job{kind: jobNew, want: d}, d.Action == wire.ActionApply
			if d.Action == wire.ActionRollback && latest != nil {
				// It runs rollback commands when an earlier attempt left steps applied.
				left, _, err := r.j.leftApplied(ctx, d.Migration, d.Attempt)
				if err != nil {
					return nil, false, err
				}
				gated = len(left) > 0
			}
		case d.Attempt < latest.Attempt:
			r.stale(d, "its attempt is older than the journal's", latest)
			continue
		case d.Generation < latest.Generation:
			r.stale(d, "its generation is older than the journal's", latest)
			continue
		case d.Generation == latest.Generation:
			continue // a duplicate: the journal already holds the answer
		default:
			next, gated = &job{kind: jobChange, rec: latest, want: d}, d.Action == wire.ActionRollback
		}
		if gated && !canStart {
			if hold == nil {
				hold = &d
			}
			continue
		}
		if gated {
			r.noteHold(nil)
		}
		return next, false, nil
	}
	r.noteHold(hold)
	return nil, hold != nil, nil
}

func (r *Runner) stale(d wire.DesiredAssignment, why string, latest *record) {
	if r.once(fmt.Sprintf("stale:%s/%d/%d", d.Migration, d.Attempt, d.Generation)) {
		r.log.Warn("ignoring a stale desired assignment: "+why, "migration", d.Migration, "attempt", d.Attempt,
			"generation", d.Generation, "action", d.Action, "journal_attempt", latest.Attempt,
			"journal_generation", latest.Generation)
	}
}

// noteHold logs when new work starts or stops being held back by CanStart.
func (r *Runner) noteHold(d *wire.DesiredAssignment) {
	key := ""
	if d != nil {
		key = fmt.Sprintf("%s/%d/%d", d.Migration, d.Attempt, d.Generation)
	}
	r.mu.Lock()
	prev := r.holding
	r.holding = key
	r.mu.Unlock()
	switch {
	case key != "" && prev == "":
		r.log.Warn("not starting new work: the agent takes none now (its outbox is full or its storage fails); it stays pending until it can",
			"migration", d.Migration, "attempt", d.Attempt, "generation", d.Generation, "action", d.Action)
	case key == "" && prev != "":
		r.log.Info("new work can start again", "held", prev)
	}
}

func (r *Runner) handle(ctx context.Context, j *job) error {
	switch j.kind {
	case jobResume:
		if j.rec.InFlight {
			r.log.Warn("resuming an assignment whose command has no recorded result", "migration", j.rec.Migration,
				"attempt", j.rec.Attempt, "step", j.rec.Step, "phase", j.rec.Phase)
		}
		return r.drive(ctx, j.rec)
	case jobNew:
		return r.begin(ctx, j.want)
	case jobChange:
		return r.change(ctx, j.rec, j.want)
	case jobSupersede:
		return r.supersede(ctx, j.rec, j.want)
	}
	return fmt.Errorf("unknown job kind %d", j.kind)
}

// begin takes on an attempt the journal has no record of.
func (r *Runner) begin(ctx context.Context, d wire.DesiredAssignment) error {
	rec := &record{Migration: d.Migration, Attempt: d.Attempt, Generation: d.Generation, Action: d.Action,
		From: d.FromVersion, To: d.ToVersion, Steps: d.Steps, Signature: d.Signature, Phase: phaseDetect}
	switch d.Action {
	case wire.ActionApply:
		rec.State = stateDetecting
		r.log.Info("starting assignment", "migration", d.Migration, "attempt", d.Attempt, "generation", d.Generation,
			"steps", len(d.Steps))
		if err := r.save(ctx, rec, nil); err != nil {
			return err
		}
		return r.drive(ctx, rec)
	case wire.ActionRollback:
		left, prev, err := r.j.leftApplied(ctx, d.Migration, d.Attempt)
		if err != nil {
			return fmt.Errorf("runner journal %s: %w", r.j.path, err)
		}
		if len(left) > 0 {
			// An earlier attempt left steps applied here: this attempt's rollback undoes them.
			rec.Steps, rec.Signature = prev.Steps, prev.Signature
			r.adoptSteps(rec, d)
			rec.State, rec.Phase, rec.Applied = stateRollingBack, phaseRollback, left
			r.log.Info("rolling back an attempt this agent never took on: undoing what the earlier attempts left applied",
				"migration", d.Migration, "attempt", d.Attempt, "generation", d.Generation, "previous_attempt", prev.Attempt,
				"applied", left)
			if err := r.save(ctx, rec, nil); err != nil {
				return err
			}
			return r.drive(ctx, rec)
		}
		rec.State, rec.Phase = stateRolledBack, phaseRollback
		return r.save(ctx, rec, nil, r.event(rec, wire.EventRollbackSucceeded, wire.SeverityInfo, detail{step: -1,
			msg: "nothing to roll back: this agent never applied this attempt"}))
	default: // cancel
		rec.State, rec.Error = stateFailed, errCancelled
		return r.save(ctx, rec, nil, r.event(rec, wire.EventMigrationStepCancelled, wire.SeverityWarning, detail{step: -1,
			msg: "cancelled by operator before it started on this agent", errText: errCancelled}))
	}
}

// change acts on a higher generation of an attempt the journal has.
func (r *Runner) change(ctx context.Context, rec *record, d wire.DesiredAssignment) error {
	prevGen := rec.Generation
	rec.Generation, rec.Action = d.Generation, d.Action
	log := r.log.With("migration", rec.Migration, "attempt", rec.Attempt, "generation", d.Generation,
		"previous_generation", prevGen, "state", rec.State)
	switch d.Action {
	case wire.ActionCancel:
		if final(rec.State) {
			log.Info("cancel of a finished attempt: generation recorded, nothing to stop")
			return r.save(ctx, rec, nil)
		}
		ended := stateFailed
		if rec.State == stateRollingBack {
			ended = stateRollbackFailed // still resumable by a later rollback
		}
		phase := rec.Phase
		// A rollback command the cancel stopped may have done its work: the record keeps it
		// without a result, so that a resumed rollback asks detect before running it again.
		inFlight := rec.InFlight && ended == stateRollbackFailed && phase == phaseRollback
		rec.State, rec.InFlight, rec.Error, rec.ExitCode = ended, inFlight, errCancelled, nil
		log.Warn("assignment cancelled by operator")
		return r.save(ctx, rec, nil, r.event(rec, wire.EventMigrationStepCancelled, wire.SeverityWarning, detail{
			step: rec.Step, phase: phase, errText: errCancelled,
			msg: fmt.Sprintf("cancelled by operator (generation %d) during the %s command of step %d", d.Generation, phase, rec.Step)}))
	case wire.ActionRollback:
		r.adoptSteps(rec, d)
		if err := r.inherit(ctx, rec); err != nil {
			return err
		}
		var events []wire.Event
		if !final(rec.State) && rec.State != stateRollingBack {
			events = append(events, r.event(rec, wire.EventMigrationStepCancelled, wire.SeverityWarning, detail{
				step: rec.Step, phase: rec.Phase,
				msg: fmt.Sprintf("apply interrupted by a rollback (generation %d) during the %s command of step %d",
					d.Generation, rec.Phase, rec.Step)}))
		}
		if rec.State != stateRollingBack {
			// Only a rollback command stopped by a cancel is still without a result here.
			inFlight := rec.State == stateRollbackFailed && rec.Phase == phaseRollback && rec.InFlight
			rec.State, rec.Phase, rec.InFlight, rec.Error, rec.ExitCode = stateRollingBack, phaseRollback, inFlight, "", nil
		}
		log.Info("rolling back", "applied", rec.Applied, "rolled_back", rec.RolledBack)
		if err := r.save(ctx, rec, nil, events...); err != nil {
			return err
		}
		return r.drive(ctx, rec)
	default: // apply
		if final(rec.State) {
			log.Info("apply of a finished attempt at a higher generation: generation recorded, nothing run (a new attempt runs it again)")
			return r.save(ctx, rec, nil)
		}
		if err := r.save(ctx, rec, nil); err != nil {
			return err
		}
		return r.drive(ctx, rec)
	}
}

// adoptSteps takes the steps of a rollback generation when they line up with the journal's, so
// an operator can fix a rollback command and resume.
func (r *Runner) adoptSteps(rec *record, d wire.DesiredAssignment) {
	switch {
	case len(d.Steps) == len(rec.Steps):
		rec.Steps, rec.Signature = d.Steps, d.Signature
	case len(d.Steps) > 0:
		r.log.Warn("the rollback's steps do not line up with the applied ones; rolling back with the journal's",
			"migration", rec.Migration, "attempt", rec.Attempt, "journal_steps", len(rec.Steps), "desired_steps", len(d.Steps))
	}
}

// inherit adds to rec.Applied the steps that earlier attempts of its migration applied on this
// node and did not roll back (a retry's detect finds them already done and skips them), so that
// rolling rec back undoes them too, once: from then on rec answers for them.
func (r *Runner) inherit(ctx context.Context, rec *record) error {
	left, _, err := r.j.leftApplied(ctx, rec.Migration, rec.Attempt)
	if err != nil {
		return fmt.Errorf("runner journal %s: %w", r.j.path, err)
	}
	var added []int
	for _, a := range left {
		if !slices.Contains(rec.Applied, a) {
			rec.Applied = append(rec.Applied, a)
			added = append(added, a)
		}
	}
	if len(added) > 0 {
		r.log.Info("the rollback also undoes the steps earlier attempts left applied", "migration", rec.Migration,
			"attempt", rec.Attempt, "steps", added)
	}
	return nil
}

// supersede ends an unfinished attempt replaced by a newer attempt of the same migration.
func (r *Runner) supersede(ctx context.Context, rec *record, d wire.DesiredAssignment) error {
	phase := rec.Phase
	rec.State, rec.InFlight = stateSuperseded, false
	rec.Error = fmt.Sprintf("superseded by attempt %d", d.Attempt)
	r.log.Warn("unfinished attempt superseded", "migration", rec.Migration, "attempt", rec.Attempt, "new_attempt", d.Attempt)
	return r.save(ctx, rec, nil, r.event(rec, wire.EventMigrationStepCancelled, wire.SeverityWarning, detail{
		step: rec.Step, phase: phase, errText: rec.Error,
		msg: fmt.Sprintf("attempt %d superseded by attempt %d; it stops here", rec.Attempt, d.Attempt)}))
}

// drive runs rec from its cursor until it is final, the desired state changes its course, or
// ctx ends.
func (r *Runner) drive(ctx context.Context, rec *record) error {
	switch rec.State {
	case stateDetecting, stateApplying, stateVerifying:
		return r.apply(ctx, rec)
	case stateRollingBack:
		return r.rollback(ctx, rec)
	}
	return nil
}

// preempted reports whether the desired state now stops rec's course: a newer attempt, a
// cancel, or a rollback of an apply. A higher generation asking for the same course is adopted
// (and recorded by the next commit).
func (r *Runner) preempted(rec *record) bool {
	d, ok := wanted(r.currentDesired(), rec.Migration)
	switch {
	case !ok || d.Attempt < rec.Attempt:
		return false
	case d.Attempt > rec.Attempt:
		return true
	case d.Generation <= rec.Generation:
		return false
	case d.Action == wire.ActionCancel:
		return true
	case d.Action == wire.ActionRollback && rec.State != stateRollingBack:
		return true
	}
	if d.Action == wire.ActionRollback {
		r.adoptSteps(rec, d)
	}
	rec.Generation, rec.Action = d.Generation, d.Action
	return false
}

// detect answers.
const (
	detectNeeded = iota
	detectDone
	detectFailed
)

func detectAnswer(res execute.Result) int {
	if res.StartErr != nil || res.TimedOut || res.Cancelled {
		return detectFailed
	}
	switch res.ExitCode {
	case 0:
		return detectNeeded
	case 1:
		return detectDone
	}
	return detectFailed
}

// apply runs the apply course from rec's cursor.
func (r *Runner) apply(ctx context.Context, rec *record) error {
	for rec.Step < len(rec.Steps) {
		if r.preempted(rec) {
			return errPreempted
		}
		i, s := rec.Step, rec.Steps[rec.Step]
		switch rec.Phase {
		case phaseDetect:
			if s.Detect == "" {
				rec.Phase, rec.InFlight = phaseRun, false
				continue
			}
			c, err := r.runCommand(ctx, rec, phaseDetect, true, "")
			if err != nil {
				return err
			}
			switch detectAnswer(c.res) {
			case detectNeeded:
				rec.Phase, rec.InFlight = phaseRun, false
				err = r.save(ctx, rec, r.finish(c, ""), r.event(rec, wire.EventDetectionSucceeded, wire.SeverityInfo,
					detail{step: i, phase: phaseDetect, res: &c.res, msg: fmt.Sprintf("step %d (%s) is needed", i, s.Name),
						extra: map[string]any{"needed": true}}))
			case detectDone:
				rec.Step, rec.Phase, rec.InFlight = i+1, phaseDetect, false
				err = r.save(ctx, rec, r.finish(c, ""), r.event(rec, wire.EventDetectionSucceeded, wire.SeverityInfo,
					detail{step: i, phase: phaseDetect, res: &c.res, msg: fmt.Sprintf("step %d (%s) is already done: skipped", i, s.Name),
						extra: map[string]any{"needed": false}}))
			default:
				return r.fail(ctx, rec, c, stateFailed, wire.EventDetectionFailed, wire.SeverityError, nil)
			}
			if err != nil {
				return err
			}

		case phaseRun:
			note := ""
			if rec.InFlight {
				was := r.takeRecovered(rec)
				if s.Detect == "" {
					note = "started again: the agent stopped while it ran and the step has no detect command " +
						"(steps without detect must be idempotent)" + was.clause("; the interrupted copy ", "")
				} else {
					// The run may have completed before the agent stopped: ask detect.
					c, err := r.runCommand(ctx, rec, phaseDetect, false, "")
					if err != nil {
						return err
					}
					switch detectAnswer(c.res) {
					case detectDone:
						rec.Phase, rec.InFlight = phaseVerify, false
						if err := r.save(ctx, rec, r.finish(c, ""), r.event(rec, wire.EventDetectionSucceeded, wire.SeverityInfo,
							detail{step: i, phase: phaseDetect, res: &c.res, extra: was.extra(false),
								msg: fmt.Sprintf("step %d (%s): its run was interrupted when the agent stopped%s; detect says it took effect: not run again",
									i, s.Name, was.clause(" (it ", ")"))})); err != nil {
							return err
						}
						continue
					case detectNeeded:
						note = "started again: it was interrupted when the agent stopped, and detect says it is still needed"
						if err := r.save(ctx, rec, r.finish(c, ""), r.event(rec, wire.EventDetectionSucceeded, wire.SeverityInfo,
							detail{step: i, phase: phaseDetect, res: &c.res, extra: was.extra(true),
								msg: fmt.Sprintf("step %d (%s): its run was interrupted when the agent stopped%s; detect says it is still needed: it runs again",
									i, s.Name, was.clause(" (it ", ")"))})); err != nil {
							return err
						}
					default:
						return r.fail(ctx, rec, c, stateFailed, wire.EventDetectionFailed, wire.SeverityError, nil)
					}
				}
			}
			c, err := r.runCommand(ctx, rec, phaseRun, true, note)
			if err != nil {
				return err
			}
			if !c.res.OK() {
				typ, sev := wire.EventExecutionFailed, wire.SeverityError
				if slices.ContainsFunc(rec.Applied, func(a int) bool { return a < i }) {
					// Earlier steps were applied: the agent is part-way, which is no less an error.
					typ = wire.EventExecutionPartial
				}
				return r.fail(ctx, rec, c, stateFailed, typ, sev, map[string]any{"applied": rec.Applied})
			}
			rec.Phase, rec.InFlight = phaseVerify, false
			if err := r.save(ctx, rec, r.finish(c, "")); err != nil {
				return err
			}

		case phaseVerify:
			if s.Verify == "" {
				rec.Step, rec.Phase, rec.InFlight = i+1, phaseDetect, false
				continue
			}
			c, err := r.runCommand(ctx, rec, phaseVerify, true, "")
			if err != nil {
				return err
			}
			if !c.res.OK() {
				return r.fail(ctx, rec, c, stateFailed, wire.EventVerificationFailed, wire.SeverityError, map[string]any{"applied": rec.Applied})
			}
			rec.Step, rec.Phase, rec.InFlight = i+1, phaseDetect, false
			if err := r.save(ctx, rec, r.finish(c, ""), r.event(rec, wire.EventVerificationSucceeded, wire.SeverityInfo,
				detail{step: i, phase: phaseVerify, res: &c.res, msg: fmt.Sprintf("step %d (%s) verified", i, s.Name)})); err != nil {
				return err
			}

		default:
			return fmt.Errorf("assignment %s attempt %d: unknown phase %q in the journal", rec.Migration, rec.Attempt, rec.Phase)
		}
	}

	rec.Step, rec.InFlight, rec.Error, rec.ExitCode = max(len(rec.Steps)-1, 0), false, "", nil
	var skipped []int
	for i := range rec.Steps {
		if !slices.Contains(rec.Applied, i) {
			skipped = append(skipped, i)
		}
	}
	extra := map[string]any{"applied": orEmpty(rec.Applied), "skipped": orEmpty(skipped)}
	if len(rec.Applied) == 0 {
		rec.State = stateNotNeeded
		r.log.Info("assignment not needed", "migration", rec.Migration, "attempt", rec.Attempt)
		return r.save(ctx, rec, nil, r.event(rec, wire.EventDetectionNotNeeded, wire.SeverityInfo, detail{step: -1, extra: extra,
			msg: fmt.Sprintf("no step needed: all %d steps were already done", len(rec.Steps))}))
	}
	rec.State = stateSucceeded
	r.log.Info("assignment succeeded", "migration", rec.Migration, "attempt", rec.Attempt, "applied", rec.Applied)
	msg := fmt.Sprintf("applied %d of %d steps: %s", len(rec.Applied), len(rec.Steps), stepList(rec, rec.Applied))
	if len(skipped) > 0 {
		msg += "; already done: " + stepList(rec, skipped)
	}
	return r.save(ctx, rec, nil, r.event(rec, wire.EventExecutionSucceeded, wire.SeverityInfo, detail{step: -1, msg: msg, extra: extra}))
}

// rollback runs the rollback course: the rollback command of every applied step not yet rolled
// back, in reverse order.
func (r *Runner) rollback(ctx context.Context, rec *record) error {
	var skipped []int // applied steps without a rollback command
	for {
		if r.preempted(rec) {
			return errPreempted
		}
		i, ok := nextRollback(rec, skipped)
		if !ok {
			break
		}
		if i >= len(rec.Steps) || rec.Steps[i].Rollback == "" {
			skipped = append(skipped, i)
			continue
		}
		note := ""
		if rec.Step != i || rec.Phase != phaseRollback {
			rec.InFlight = false
		} else if rec.InFlight {
			var undone bool
			var err error
			if note, undone, err = r.interruptedRollback(ctx, rec, i); err != nil {
				return err
			}
			if undone {
				continue
			}
		}
		rec.Step = i
		c, err := r.runCommand(ctx, rec, phaseRollback, true, note)
		if err != nil {
			return err
		}
		if !c.res.OK() {
			return r.fail(ctx, rec, c, stateRollbackFailed, wire.EventRollbackFailed, wire.SeverityError,
				map[string]any{"rolled_back": orEmpty(rec.RolledBack), "skipped_no_rollback": orEmpty(skipped)})
		}
		rec.RolledBack = append(rec.RolledBack, i)
		rec.InFlight = false
		if err := r.save(ctx, rec, r.finish(c, "")); err != nil {
			return err
		}
	}
	rec.State, rec.InFlight, rec.Error, rec.ExitCode = stateRolledBack, false, "", nil
	msg := "rolled back"
	if len(rec.RolledBack) > 0 {
		msg += ": " + stepList(rec, rec.RolledBack)
	} else {
		msg += ": nothing to undo"
	}
	if len(skipped) > 0 {
		msg += "; steps without a rollback command were left as they are: " + stepList(rec, skipped)
	}
	r.log.Info("assignment rolled back", "migration", rec.Migration, "attempt", rec.Attempt,
		"rolled_back", rec.RolledBack, "skipped_no_rollback", skipped)
	return r.save(ctx, rec, nil, r.event(rec, wire.EventRollbackSucceeded, wire.SeverityInfo, detail{step: -1, msg: msg,
		extra: map[string]any{"rolled_back": orEmpty(rec.RolledBack), "skipped_no_rollback": orEmpty(skipped)}}))
}

// interruptedRollback deals with step i's rollback command that was stopped before its result
// was recorded (the agent stopped, or a cancel stopped it, possibly before it started): it may
// have done its work. A step with detect that the audit trail shows applied is asked first: when
// detect says the step is needed (its effect is gone), the rollback is recorded as done and not
// run again (undone). A step never known to be applied (its run failed part-way, or was cut
// short) is rolled back for what its run may have left, which detect cannot see: its rollback
// runs again, as it does without detect. Otherwise note says why it runs again.
func (r *Runner) interruptedRollback(ctx context.Context, rec *record, i int) (note string, undone bool, err error) {
	was := r.takeRecovered(rec).clause("; the interrupted copy ", "")
	s := rec.Steps[i]
	if s.Detect == "" {
		return "started again: its last run was interrupted and the step has no detect command (rollback commands must be idempotent)" + was, false, nil
	}
	applied, err := r.j.stepApplied(ctx, rec.Migration, rec.Attempt, i)
	if err != nil {
		return "", false, fmt.Errorf("runner journal %s: %w", r.j.path, err)
	}
	if !applied {
		return "started again: its last run was interrupted and the step was never known to be applied (its run did not " +
			"succeed), so detect cannot tell whether the rollback took effect (rollback commands must be idempotent)" + was, false, nil
	}
	rec.Step = i
	c, err := r.runCommand(ctx, rec, phaseDetect, false, "")
	if err != nil {
		return "", false, err
	}
	answer := detectAnswer(c.res)
	if answer == detectNeeded {
		rec.RolledBack = append(rec.RolledBack, i)
		rec.InFlight = false
		return "", true, r.save(ctx, rec, r.finish(c, ""), r.event(rec, wire.EventDetectionSucceeded, wire.SeverityInfo,
			detail{step: i, phase: phaseDetect, res: &c.res, extra: map[string]any{"needed": true, "recovered": true},
				msg: fmt.Sprintf("step %d (%s): its rollback was interrupted%s; detect says the step is not applied: the rollback took effect, not run again",
					i, s.Name, was)}))
	}
	note = "started again: its last run was interrupted and detect says the step is still applied" + was
	if answer == detectFailed {
		note = "started again: its last run was interrupted and detect gave no answer (rollback commands must be idempotent)" + was
	}
	return note, false, r.save(ctx, rec, r.finish(c, ""))
}

// nextRollback returns the highest applied step that is neither rolled back nor skipped.
func nextRollback(rec *record, skipped []int) (int, bool) {
	best, found := -1, false
	for _, a := range rec.Applied {
		if a > best && !slices.Contains(rec.RolledBack, a) && !slices.Contains(skipped, a) {
			best, found = a, true
		}
	}
	return best, found
}

// fail ends rec in state with the command c's result.
func (r *Runner) fail(ctx context.Context, rec *record, c *ran, state, typ, severity string, extra map[string]any) error {
	errText := describe(rec, c.step, c.phase, c.res)
	code := c.res.ExitCode
	rec.State, rec.InFlight, rec.Error, rec.ExitCode = state, false, errText, &code
	r.log.Warn("assignment "+state, "migration", rec.Migration, "attempt", rec.Attempt, "step", c.step,
		"phase", c.phase, "exit_code", code, "err", errText)
	return r.save(ctx, rec, r.finish(c, errText), r.event(rec, typ, severity, detail{step: c.step, phase: c.phase,
		res: &c.res, errText: errText, extra: extra,
		msg: fmt.Sprintf("%s: the %s command of step %d (%s) did not succeed", state, c.phase, c.step, rec.Steps[c.step].Name)}))
}

// ran is a command that ran to a result.
type ran struct {
	id    int64 // its row in commands
	step  int
	phase string
	res   execute.Result
}

// runCommand commits "phase of rec.Step started", runs the command and returns its result. With
// moveCursor the assignment's cursor moves to the command (and a run is added to Applied);
// without, only the audit row is written (a recovery detect, which must not erase the record
// of the run it checks). It returns errStopped when ctx ended and errPreempted when the desired
// state stopped the command; either way the assignment's row still says the command has no
// result.
func (r *Runner) runCommand(ctx context.Context, rec *record, phase string, moveCursor bool, note string) (*ran, error) {
	i := rec.Step
	s := rec.Steps[i]
	script := map[string]string{phaseDetect: s.Detect, phaseRun: s.Run, phaseVerify: s.Verify, phaseRollback: s.Rollback}[phase]
	if err := r.cfg.Policy.Check(policy.Command{Kind: phase, Script: script, Timeout: s.Timeout(), Migration: rec.Migration,
		Steps: rec.Steps, Signature: rec.Signature}); err != nil {
		return nil, r.refuse(ctx, rec, i, phase, err)
	}
	if moveCursor {
		rec.Phase, rec.InFlight = phase, true
		rec.State = map[string]string{phaseDetect: stateDetecting, phaseRun: stateApplying, phaseVerify: stateVerifying,
			phaseRollback: stateRollingBack}[phase]
		if phase == phaseRun && !slices.Contains(rec.Applied, i) {
			rec.Applied = append(rec.Applied, i)
		}
	}
	var events []wire.Event
	if phase == phaseRun || phase == phaseRollback {
		msg := fmt.Sprintf("%s command of step %d (%s) started", phase, i, s.Name)
		if note != "" {
			msg += "; " + note
		}
		events = append(events, r.event(rec, wire.EventMigrationStepStarted, wire.SeverityInfo, detail{step: i, phase: phase, msg: msg}))
	}
	var id int64
	if err := r.save(ctx, rec, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		id, err = r.j.commandStarted(ctx, tx, rec, i, phase, r.now())
		return err
	}, events...); err != nil {
		return nil, err
	}

	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r.mu.Lock()
	r.cur = &inFlight{migration: rec.Migration, attempt: rec.Attempt, generation: rec.Generation,
		rollingBack: rec.State == stateRollingBack, cancel: cancel}
	// A change that arrived between the commit and now stops the command before it starts.
	if cause := r.preemptsLocked(r.cur); cause != nil {
		cancel(cause)
	}
	r.mu.Unlock()
	var res execute.Result
	var recordErr error
	if cctx.Err() == nil {
		cmd := execute.Command{Script: script, Env: r.env(rec, i, phase), Dir: r.cfg.WorkDir,
			Timeout: s.Timeout(), Grace: r.cfg.Grace, Started: func(g procgroup.Group) error {
				// The command waits at its gate until its process group is in the journal: a
				// restarted agent must be able to find whatever of it outlives this one.
				recordErr = r.write(cctx, func(ctx context.Context) error {
					return r.j.tx(ctx, func(tx *sql.Tx) error { return r.j.commandGroup(ctx, tx, id, g, r.now()) })
				})
				return recordErr
			}}
		r.cfg.Policy.Prepare(&cmd)
		res = execute.Run(cctx, cmd)
	} else {
		res = execute.Result{ExitCode: -1, Cancelled: true}
	}
	r.mu.Lock()
	r.cur = nil
	r.mu.Unlock()
	if recordErr != nil && !res.Cancelled {
		// Nothing ran: the journal could not take the command's process group.
		return nil, fmt.Errorf("runner journal %s: record the process group of the %s command of step %d: %w",
			r.j.path, phase, i, recordErr)
	}

	if res.Cancelled {
		if ctx.Err() != nil {
			r.log.Warn("stopping: command interrupted; the assignment is resumed at the next start", "migration", rec.Migration,
				"attempt", rec.Attempt, "step", i, "phase", phase)
			return nil, errStopped
		}
		cause := context.Cause(cctx)
		if err := r.write(ctx, func(ctx context.Context) error {
			return r.j.tx(ctx, func(tx *sql.Tx) error {
				return r.j.commandFinished(ctx, tx, id, res, "interrupted: "+cause.Error(), r.now())
			})
		}); err != nil {
			if ctx.Err() != nil {
				return nil, errStopped
			}
			return nil, fmt.Errorf("runner journal %s: %w", r.j.path, err)
		}
		return nil, errPreempted
	}
	return &ran{id: id, step: i, phase: phase, res: res}, nil
}

// refuse ends rec because the agent's policy refused the phase command of step i (err, a
// *policy.Refusal): failed, or rollback_failed for a command of a rollback (the rollback
// command, or the detect asked about an interrupted one; so that a rollback can still be
// resumed once the policy or the spec is fixed), with a migration.policy.refused event
// naming the rule. Nothing of the command ran. It returns errRefused once that is recorded.
func (r *Runner) refuse(ctx context.Context, rec *record, i int, phase string, err error) error {
	state := stateFailed
	switch {
	case phase == phaseRollback:
		state = stateRollbackFailed
		rec.Step, rec.Phase, rec.InFlight = i, phase, false
	case rec.State == stateRollingBack:
		// The detect asked about step i's interrupted rollback: the rollback stays resumable and
		// its command still has no result, so that a resumed rollback asks detect again.
		state = stateRollbackFailed
		rec.Step = i
	default:
		rec.Step, rec.Phase, rec.InFlight = i, phase, false
	}
	rec.State, rec.Error, rec.ExitCode = state, err.Error(), nil
	extra := map[string]any{"policy_digest": r.cfg.Policy.Digest()}
	var ref *policy.Refusal
	if errors.As(err, &ref) {
		extra["policy"], extra["rule"] = ref.Policy, ref.Rule
	}
	if state != stateRollbackFailed {
		extra["applied"] = orEmpty(rec.Applied)
	}
	r.log.Error("the agent policy refused a command; the assignment ends "+state, "migration", rec.Migration, "attempt", rec.Attempt,
		"step", i, "phase", phase, "err", err)
	if err := r.save(ctx, rec, nil, r.event(rec, wire.EventPolicyRefused, wire.SeverityError, detail{step: i, phase: phase,
		errText: err.Error(), extra: extra,
		msg: fmt.Sprintf("%s: the %s command of step %d (%s) was not run: the agent policy refused it", state, phase, i, rec.Steps[i].Name)})); err != nil {
		return err
	}
	return errRefused
}

func (r *Runner) env(rec *record, i int, phase string) []string {
	action := wire.ActionApply
	if phase == phaseRollback {
		action = wire.ActionRollback
	}
	return []string{
		"GODWIT_MIGRATION=" + rec.Migration,
		"GODWIT_STEP=" + rec.Steps[i].Name,
		"GODWIT_STEP_INDEX=" + strconv.Itoa(i),
		"GODWIT_ATTEMPT=" + strconv.Itoa(rec.Attempt),
		"GODWIT_GENERATION=" + strconv.Itoa(rec.Generation),
		"GODWIT_ACTION=" + action,
		"GODWIT_PHASE=" + phase,
		"GODWIT_FROM_VERSION=" + rec.From,
		"GODWIT_TO_VERSION=" + rec.To,
		"GODWIT_AGENT_ID=" + r.cfg.AgentID,
	}
}

// finish returns the write that records c's result in the audit trail.
func (r *Runner) finish(c *ran, errText string) func(context.Context, *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		return r.j.commandFinished(ctx, tx, c.id, c.res, errText, r.now())
	}
}

// save commits rec, the extra writes and the events in one transaction, then hands the events
// to the outbox and schedules a publication of the observed state. A result that happened is
// recorded even while Run is stopping.
func (r *Runner) save(ctx context.Context, rec *record, extra func(context.Context, *sql.Tx) error, events ...wire.Event) error {
	rec.UpdatedAt = r.now().UTC()
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = rec.UpdatedAt
	}
	err := r.write(ctx, func(ctx context.Context) error {
		return r.j.tx(ctx, func(tx *sql.Tx) error {
			if err := r.j.put(ctx, tx, rec); err != nil {
				return err
			}
			if extra != nil {
				if err := extra(ctx, tx); err != nil {
					return err
				}
			}
			return r.j.queueEvents(ctx, tx, events)
		})
	})
	if err != nil {
		return fmt.Errorf("runner journal %s: %w", r.j.path, err)
	}
	for _, e := range events {
		r.log.Debug("event journaled", "event_id", e.ID, "type", e.Type, "migration", e.Data.Migration, "attempt", e.Data.Attempt)
	}
	if len(events) > 0 {
		r.deliver(context.WithoutCancel(ctx))
	}
	r.changed()
	return nil
}

// write runs fn, a journal write, until it succeeds. A failure the agent waits out (a full disk,
// an I/O error: see package health) is retried with back-off while ctx lasts, and makes the
// runner degraded until a write succeeds; any other failure is returned at once. fn always runs
// with a context that is not cancelled, so a result that happened is recorded even while Run is
// stopping; only the waiting between attempts ends with ctx.
func (r *Runner) write(ctx context.Context, fn func(context.Context) error) error {
	for n := 1; ; n++ {
		err := r.writeOnce(fn)
		if err == nil || health.Classify(err) != health.Wait {
			return err
		}
		t := time.NewTimer(health.Backoff(n))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// writeOnce runs fn, a journal write, once, and keeps the journal's condition.
func (r *Runner) writeOnce(fn func(context.Context) error) error {
	err := health.Injected()
	if err == nil {
		err = fn(context.Background())
	}
	if err == nil {
		r.cond.OK()
	} else if health.Classify(err) == health.Wait {
		r.cond.Failed(err)
	}
	return err
}
