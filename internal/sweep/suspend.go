package sweep

// Suspension: a suspended sweep fires no scheduled run; it can still be run by hand (the canary
// before a cutover). The state is a column of the sweep's row, so it holds on every replica and
// across restarts, and the firing claim refuses a suspended sweep (store.SweepStore.StartRun).
//
// Two ways change it, and the last one wins:
//   - applying a spec that sets spec.suspended (true or false), or that leaves it out after the
//     spec applied before had set it (the field was removed: back to the default, false);
//   - the suspend and resume commands (API, CLI, UI), which change the stored state and leave
//     the stored spec as it was applied.
//
// So a document that sets spec.suspended is the truth each time it is applied, as kubectl apply
// is for a CronJob's spec.suspend after kubectl patch; a document that leaves it out lets the
// commands decide. Resuming does with the firings held back what spec.resumePolicy says: skip
// (the default) continues from now, misfire hands them to the misfire policy at once.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Limits of a suspend or resume request.
const (
	maxReasonLen = 500
	maxByLen     = 200
)

// appliedSuspension is whether a sweep is suspended after applying sp over existing (if found),
// whose stored spec parsed as old (nil if it did not).
func appliedSuspension(sp *Spec, found bool, existing wire.Sweep, old *Spec) bool {
	switch {
	case sp.Suspended != nil:
		return *sp.Suspended
	case !found:
		return false
	case old != nil && old.Suspended != nil:
		return false // set before, removed now
	default:
		return existing.Suspended
	}
}

// sameField reports whether two specs say the same of spec.suspended (both leave it out, or both
// set the same value): the stored document is the one the next apply compares with, so a change
// of only this field is stored even though the hash leaves it out.
func sameField(old, sp *Spec) bool {
	switch {
	case old == nil:
		return false
	case old.Suspended == nil || sp.Suspended == nil:
		return old.Suspended == nil && sp.Suspended == nil
	default:
		return *old.Suspended == *sp.Suspended
	}
}

// countDue counts the firings of c from from (a stored next firing) up to now, at most
// wire.MaxHeldFiringsCounted.
func countDue(c *Schedule, from, now time.Time) int {
	if c == nil {
		return 0
	}
	n := 0
	for t := from; !t.IsZero() && !t.After(now) && n < wire.MaxHeldFiringsCounted; t = c.Next(t) {
		n++
	}
	return n
}

// checkSuspendRequest validates a suspend or resume request and fills its defaults.
func checkSuspendRequest(req *wire.SweepSuspendRequest) error {
	switch req.Via {
	case "":
		req.Via = wire.SuspendViaAPI
	case wire.SuspendViaAPI, wire.SuspendViaCLI, wire.SuspendViaUI:
	default:
		return fault.Invalid("via", "must be api or cli, not %q (spec is applying spec.suspended)", req.Via)
	}
	// Shown in events, the web UI and the audit record, and stored: bounded, and no control or
	// bidirectional formatting characters, no NUL (PostgreSQL cannot store one).
	if err := wire.CheckText("reason", req.Reason, maxReasonLen); err != nil {
		return err
	}
	return wire.CheckText("by", req.By, maxByLen)
}

// Suspend suspends a sweep: from now on no scheduled firing of it runs, on any hub replica,
// until it is resumed; a run in progress goes on, and Trigger still starts runs. Suspending a
// suspended sweep changes nothing (outcome unchanged). It works on any replica.
func (s *Service) Suspend(ctx context.Context, name string, req wire.SweepSuspendRequest) (wire.SweepSuspendResult, error) {
	if err := checkSuspendRequest(&req); err != nil {
		return wire.SweepSuspendResult{}, err
	}
	for attempt := 1; ; attempt++ {
		sw, err := s.cfg.Store.GetSweep(ctx, name)
		if err != nil {
			return wire.SweepSuspendResult{}, err
		}
		res := wire.SweepSuspendResult{Name: name, Outcome: "unchanged", Suspended: true, Suspension: sw.Suspension}
		if sp, err := s.parseStored(sw.Spec, sw.SpecHash); err == nil {
			res.ResumePolicy = sp.ResumePolicy
			res.HeldFirings = countDue(sp.Cron(), sw.NextFireAt, s.clock.Now())
		}
		if sw.Suspended {
			return res, nil
		}
		now := s.clock.Now().UTC()
		sw.Suspended, sw.Suspension, sw.UpdatedAt = true, &wire.SweepSuspension{Since: now, By: req.By, Via: req.Via, Reason: req.Reason}, now
		err = s.cfg.Store.UpdateSweep(ctx, sw, false)
		if errors.Is(err, fault.ErrConflict) && attempt < 3 {
			continue // changed meanwhile (an apply): read it again
		}
		if err != nil {
			return wire.SweepSuspendResult{}, err
		}
		res.Outcome, res.Suspension, res.HeldFirings = "suspended", sw.Suspension, 0
		msg := fmt.Sprintf("sweep %s suspended%s (via %s): no scheduled run fires until it is resumed", name, byText(req.By), req.Via)
		if req.Reason != "" {
			msg += "; reason: " + req.Reason
		}
		s.suspensionEvent(ctx, name, suspensionExtra("suspend", name, sw.Suspension), msg)
		return res, nil
	}
}

// Resume resumes a suspended sweep. The firings that came due while it was suspended are
// handled as its resumePolicy says: skip (the default) runs none of them and continues from now;
// misfire treats them as missed firings and the misfire policy decides at once (skip: one missed
// record; run_once: one catch-up run, under the sweep's lock like any firing). Resuming a sweep
// that is not suspended changes nothing (outcome unchanged). It works on any replica.
func (s *Service) Resume(ctx context.Context, name string, req wire.SweepSuspendRequest) (wire.SweepSuspendResult, error) {
	if err := checkSuspendRequest(&req); err != nil {
		return wire.SweepSuspendResult{}, err
	}
	for attempt := 1; ; attempt++ {
		sw, err := s.cfg.Store.GetSweep(ctx, name)
		if err != nil {
			return wire.SweepSuspendResult{}, err
		}
		sp, err := s.parseStored(sw.Spec, sw.SpecHash)
		if err != nil {
			return wire.SweepSuspendResult{}, err
		}
		if !sw.Suspended {
			res := wire.SweepSuspendResult{Name: name, Outcome: "unchanged", ResumePolicy: sp.ResumePolicy}
			if !sw.NextFireAt.IsZero() {
				res.NextFirings = append([]time.Time{sw.NextFireAt}, nextFirings(sp.Cron(), sw.NextFireAt, 2)...)
			}
			return res, nil
		}
		now := s.clock.Now().UTC()
		catchUp, err := s.resume(ctx, sw, sp, now)
		if errors.Is(err, fault.ErrConflict) && attempt < 3 {
			continue // changed meanwhile (an apply, a suspend): read it again
		}
		if err != nil {
			return wire.SweepSuspendResult{}, err
		}
		return s.resumed(ctx, sw, sp, catchUp, now, req.By, req.Via, req.Reason), nil
	}
}

// resume resumes sw, stored and suspended under the spec sp. With resumePolicy misfire and held
// firings due, the first claim of those firings resumes it in the same transaction, so no other
// hub can handle them first (and they are recorded as held by the suspension); the records are
// returned. Otherwise one write clears the suspension, moving the next firing to the next one
// after now under resumePolicy skip. ErrConflict: the sweep changed meanwhile.
func (s *Service) resume(ctx context.Context, sw wire.Sweep, sp *Spec, now time.Time) ([]wire.SweepRun, error) {
	c := sp.Cron()
	if sp.ResumePolicy == ResumeMisfire && c != nil && !sw.NextFireAt.IsZero() && !sw.NextFireAt.After(now) {
		// An operator's write (no fence), on whichever replica.
		return s.fire(ctx, store.Fence{}, sw, now, causeSuspended)
	}
	after := sw
	after.Suspended, after.Suspension, after.UpdatedAt = false, nil, now
	reschedule := sp.ResumePolicy == ResumeSkip && c != nil
	if reschedule {
		after.NextFireAt = c.Next(now)
	}
	return nil, s.cfg.Store.UpdateSweep(ctx, after, reschedule)
}

// resumed reports a resume that is stored (before is the sweep as it was while suspended, sp
// the spec it now has, catchUp what resumePolicy misfire recorded): the result, and the
// operator event.
func (s *Service) resumed(ctx context.Context, before wire.Sweep, sp *Spec, catchUp []wire.SweepRun, now time.Time, by, via, reason string) wire.SweepSuspendResult {
	heldBy := sp // the schedule the held firings were due under: the one applied before
	if o, err := s.parseStored(before.Spec, before.SpecHash); err == nil {
		heldBy = o
	}
	held := countDue(heldBy.Cron(), before.NextFireAt, now)
	// An apply that resumes and changes the schedule or time zone reschedules from now: the held
	// firings are not handed to the misfire policy, whatever resumePolicy says.
	rescheduled := heldBy.Schedule != sp.Schedule || heldBy.Timezone != sp.Timezone
	res := wire.SweepSuspendResult{Name: before.Name, Outcome: "resumed", HeldFirings: held, ResumePolicy: sp.ResumePolicy, CatchUp: catchUp}
	if cur, err := s.cfg.Store.GetSweep(ctx, before.Name); err == nil && !cur.NextFireAt.IsZero() && !cur.Suspended {
		res.NextFirings = append([]time.Time{cur.NextFireAt}, nextFirings(sp.Cron(), cur.NextFireAt, 2)...)
	}
	msg := fmt.Sprintf("sweep %s resumed%s (via %s)", before.Name, byText(by), via)
	switch {
	case sp.Cron() == nil:
		msg += ": it has no schedule"
	case held == 0:
		msg += ": no firing came due while it was suspended"
	case sp.ResumePolicy == ResumeSkip:
		msg += fmt.Sprintf(": %s came due while it was suspended; not run (resumePolicy: skip)", plural(held, "firing"))
	case rescheduled:
		msg += fmt.Sprintf(": %s came due while it was suspended; not run (the schedule changed with the resume, so it continues from now)",
			plural(held, "firing"))
	default:
		msg += fmt.Sprintf(": %s came due while it was suspended; handed to misfire: %s (resumePolicy: misfire)", plural(held, "firing"), sp.Misfire)
		for _, r := range catchUp {
			switch {
			case r.LockSkipped:
				msg += "; catch-up run " + r.ID + " lock-skipped"
			case r.Status == wire.SweepRunMissed:
				msg += "; missed record " + r.ID
			default:
				msg += "; run " + r.ID + " started"
			}
		}
	}
	if len(res.NextFirings) > 0 {
		msg += "; next firing " + res.NextFirings[0].UTC().Format(time.RFC3339)
	}
	if reason != "" {
		msg += "; reason: " + reason
	}
	extra := suspensionExtra("resume", before.Name, &wire.SweepSuspension{Since: now, By: by, Via: via, Reason: reason})
	extra["held_firings"], extra["resume_policy"] = held, sp.ResumePolicy
	s.suspensionEvent(ctx, before.Name, extra, msg)
	s.Nudge()
	return res
}

// suspensionExtra is the data.extra of a suspend or resume event: the action, the sweep and who
// (actor, via, reason).
func suspensionExtra(action, sweep string, who *wire.SweepSuspension) map[string]any {
	extra := map[string]any{"action": action, "sweep": sweep}
	if who != nil {
		extra["actor"], extra["via"] = who.By, who.Via
		if who.Reason != "" {
			extra["reason"] = who.Reason
		}
	}
	return extra
}

// suspensionEvent records a suspend or resume as an operator.action event about the sweep.
func (s *Service) suspensionEvent(ctx context.Context, sweep string, extra map[string]any, msg string) {
	b, _ := json.Marshal(extra)
	s.publish(ctx, s.hubEvent(wire.EventOperatorAction, wire.SeverityInfo, "sweep/"+sweep, wire.EventData{Message: msg, Extra: b}))
}

func byText(by string) string {
	if by == "" {
		return ""
	}
	return " by " + by
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
