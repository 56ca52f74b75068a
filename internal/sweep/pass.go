package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Exit codes of a run that ended.
const (
	// ExitCompleted: the run checked what it could within its budget; drift, missing agents
	// and a budget that ran out are in the counts, not failures of the run.
	ExitCompleted = 0
	// ExitFailed: the run itself could not be carried out (its snapshot does not validate).
	ExitFailed = 1
	// ExitRemediationFailed: drift was found but the remediation migration could not start.
	ExitRemediationFailed = 2
)

// maxCountedMisses bounds how many missed firings one pass counts one by one (a per-minute
// sweep after a hub outage of 70 days); beyond it the count is a lower bound.
const maxCountedMisses = 100_000

// maxOutputTail bounds the output kept per agent in a run.
const maxOutputTail = 2048

// Pass is one pass of the leader: fire what the schedule says is due, advance every running
// run, then write each agent's check requests (derived from SQL alone).
func (s *Service) Pass(ctx context.Context) error {
	if s.fence().Epoch == 0 {
		return fmt.Errorf("sweeps: not leading (Start first): %w", fault.ErrUnavailable)
	}
	s.events.Flush(ctx)
	now := s.clock.Now().UTC()
	sweeps, err := s.cfg.Store.ListSweeps(ctx)
	if err != nil {
		return err
	}
	var errs []error
	var due []wire.Sweep
	for _, sw := range sweeps {
		// A suspended sweep's firings are held: its next firing stays where it was until it is
		// resumed (and the claim would be refused anyway, see store.SweepStore.StartRun).
		if sw.Suspended || sw.NextFireAt.IsZero() || sw.NextFireAt.After(now) {
			continue
		}
		due = append(due, sw)
	}
	wait, err := s.endExpired(ctx, now, due)
	if err != nil {
		if errors.Is(err, fault.ErrFenced) {
			return err
		}
		errs = append(errs, err)
	}
	for _, sw := range due {
		if wait[sw.Name] {
			continue
		}
		if _, err := s.fire(ctx, s.fence(), sw, now, causeNoHub); err != nil {
			if errors.Is(err, fault.ErrFenced) {
				return err
			}
			errs = append(errs, fmt.Errorf("sweep %s: %w", sw.Name, err))
		}
	}
	if !s.isSynced() {
		return errors.Join(errs...) // runs wait for every agent's stored answers
	}
	runs, err := s.cfg.Store.RunningRuns(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	// The fleet is read only for running runs to advance: a pass runs every second, and reading
	// every agent in it cost the hub per agent even when no sweep was running.
	var byID map[string]wire.Agent
	if len(runs) > 0 {
		if byID, err = s.agentsByID(ctx); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	requests := map[string][]wire.SweepCheckRequest{}
	complete := true
	for _, r := range runs {
		if err := s.advance(ctx, r, now, byID, requests); err != nil {
			if errors.Is(err, fault.ErrFenced) {
				return err
			}
			errs = append(errs, fmt.Errorf("sweep %s run %s: %w", r.Sweep, r.ID, err))
			complete = false
		}
	}
	// With a run left out, its agents' documents would withdraw checks that are still wanted:
	// keep the documents as they are until a pass sees every run.
	if complete {
		if err := s.writeRequests(ctx, requests); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// endExpired ends the running runs of the due sweeps whose budget has run out, before their
// firings are claimed. Such a run (its leader failed mid-run, and the budget ran out before the
// next leader's first pass) still holds the sweep's lock in SQL until a pass judges it, and the
// firing would be recorded lock_skipped behind a run that is over. Until the results watch has
// delivered the stored answers such a run cannot be judged: the sweeps whose firing waits for
// that are returned.
func (s *Service) endExpired(ctx context.Context, now time.Time, due []wire.Sweep) (map[string]bool, error) {
	if len(due) == 0 {
		return nil, nil
	}
	runs, err := s.cfg.Store.RunningRuns(ctx)
	if err != nil {
		return nil, err
	}
	isDue := make(map[string]bool, len(due))
	for _, sw := range due {
		isDue[sw.Name] = true
	}
	var expired []wire.SweepRun
	for _, r := range runs {
		if isDue[r.Sweep] && !now.Before(r.Deadline) {
			expired = append(expired, r)
		}
	}
	if len(expired) == 0 {
		return nil, nil
	}
	if !s.isSynced() {
		wait := make(map[string]bool, len(expired))
		for _, r := range expired {
			wait[r.Sweep] = true
		}
		return wait, nil
	}
	byID, err := s.agentsByID(ctx)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, r := range expired {
		// Every agent is settled now (answered, missing or over budget): no requests.
		if err := s.advance(ctx, r, now, byID, map[string][]wire.SweepCheckRequest{}); err != nil {
			if errors.Is(err, fault.ErrFenced) {
				return nil, err
			}
			errs = append(errs, fmt.Errorf("sweep %s run %s: %w", r.Sweep, r.ID, err))
		}
	}
	return nil, errors.Join(errs...)
}

// agentsByID reads the fleet, by agent ID, for advancing runs.
func (s *Service) agentsByID(ctx context.Context) (map[string]wire.Agent, error) {
	agents, err := s.cfg.Store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]wire.Agent, len(agents))
	for _, a := range agents {
		byID[a.ID] = a
	}
	return byID, nil
}

// Why firings were missed, for their records (firing.cause).
const (
	causeNoHub     = "no_hub"    // no hub ran (the leader's pass finds them late)
	causeSuspended = "suspended" // the sweep was suspended (resumePolicy: misfire)
)

// fire handles a sweep whose next firing is due. The firings due since the stored next firing
// are counted: the latest is on time if found within MisfireGrace, and every other one was
// missed (cause says why: no hub ran, or the sweep was suspended). misfire: skip records the
// missed ones (one record, no run) and runs the latest only if it is on time; run_once runs the
// latest once, late or not, as a catch-up. Each step claims its firings by moving the stored
// next firing with compare-and-set, so a firing is never run twice and a restart never forgets
// one. It returns the records it stored.
//
// With cause causeSuspended the sweep is being resumed: the first claim also resumes it
// (store.SweepFiring.Resume), and a first claim lost to a change meanwhile is returned
// (ErrConflict) for the caller to read the sweep again.
func (s *Service) fire(ctx context.Context, fence store.Fence, sw wire.Sweep, now time.Time, cause string) ([]wire.SweepRun, error) {
	resume := cause == causeSuspended
	lost := func(err error) error {
		if resume && !errors.Is(err, store.ErrFiringRecorded) {
			return err
		}
		return ignoreLostClaim(err) // a recorded instant's claim is stored, and resumed the sweep
	}
	sp, err := s.parseStored(sw.Spec, sw.SpecHash)
	if err != nil {
		return nil, err
	}
	c := sp.Cron()
	if c == nil {
		return nil, nil // no schedule: Apply never stores a next firing for it
	}
	n := 0
	var prev, last time.Time
	t := sw.NextFireAt
	for !t.IsZero() && !t.After(now) && n < maxCountedMisses {
		prev, last = last, t
		n++
		t = c.Next(t)
	}
	next := t
	if !next.IsZero() && !next.After(now) {
		next = c.Next(now) // more misses than counted
	}
	late := now.Sub(last) > s.cfg.MisfireGrace
	missed, missedLast := n-1, prev
	if late {
		missed, missedLast = n, last
	}
	var out []wire.SweepRun
	if missed > 0 && sp.Misfire == MisfireSkip {
		to := next
		if !late {
			to = last // the on-time firing is claimed next, on its own
		}
		rec := firing{kind: wire.TriggerSchedule, scheduledFor: missedLast, missed: missed, missedFirst: sw.NextFireAt, missedLast: missedLast,
			onlyRecord: true, cause: cause}
		claim := &store.SweepFiring{Sweep: sw.Name, SpecHash: sw.SpecHash, From: sw.NextFireAt, Next: to, Resume: resume}
		sw.Suspended = sw.Suspended && !resume
		r, err := s.startRun(ctx, fence, claim, sw, sp, rec)
		if err != nil {
			return out, lost(err)
		}
		if out = append(out, r); late {
			return out, nil
		}
		sw.NextFireAt, missed, resume = last, 0, false
	}
	f := firing{kind: wire.TriggerSchedule, scheduledFor: last, cause: cause}
	if missed > 0 {
		f.missed, f.missedFirst, f.missedLast = missed, sw.NextFireAt, missedLast
	}
	claim := &store.SweepFiring{Sweep: sw.Name, SpecHash: sw.SpecHash, From: sw.NextFireAt, Next: next, Resume: resume}
	sw.Suspended = sw.Suspended && !resume
	r, err := s.startRun(ctx, fence, claim, sw, sp, f)
	if err != nil {
		return out, lost(err)
	}
	return append(out, r), nil
}

// ignoreLostClaim: a claim lost to another hub, or to an Apply that rescheduled the sweep, is
// not an error; the next pass reads what won. Nor is a firing whose instant is already recorded
// (store.ErrFiringRecorded): its claim moved the schedule on, and that instant ran once.
func ignoreLostClaim(err error) error {
	if errors.Is(err, fault.ErrConflict) {
		return nil
	}
	return err
}

// advance moves one running run forward: it takes the agents' answers for this run, marks
// agents that went away as missing, spends the budget, dispatches checks within the
// concurrency, ends the run when every agent is settled, and saves what changed.
func (s *Service) advance(ctx context.Context, run wire.SweepRun, now time.Time, agents map[string]wire.Agent, requests map[string][]wire.SweepCheckRequest) error {
	targets, err := s.cfg.Store.ListRunAgents(ctx, run.ID)
	if err != nil {
		return err
	}
	orig := run
	var rc runContext
	sp, err := s.snapshotSpec(run, &rc)
	if err != nil {
		code := ExitFailed
		run.Status, run.ExitCode, run.FinishedAt, run.Error = wire.SweepRunFailed, &code, now, err.Error()
		return s.save(ctx, orig, run, nil, now)
	}
	dirty := make([]bool, len(targets))
	s.mu.Lock()
	for i := range targets {
		t := &targets[i]
		if t.State == wire.CheckDispatched || t.State == wire.CheckRunning {
			dirty[i] = applyResult(t, s.resultFor(t.AgentID, run.ID), now)
		}
	}
	s.mu.Unlock()
	for i := range targets {
		t := &targets[i]
		if wire.CheckFinal(t.State) {
			continue
		}
		a, ok := agents[t.AgentID]
		reason := ""
		switch {
		case !ok:
			reason = "agent no longer enrolled"
		case a.RevokedAt != nil:
			reason = "agent revoked"
		case a.Status == wire.StatusOffline:
			reason = "agent offline before answering"
		}
		if reason != "" {
			t.State, t.Error, t.FinishedAt, dirty[i] = wire.CheckMissing, reason, now, true
		}
	}
	if !now.Before(run.Deadline) {
		for i := range targets {
			t := &targets[i]
			switch t.State {
			case wire.CheckPending:
				t.Error = "not reached: the budget ran out first"
			case wire.CheckDispatched, wire.CheckRunning:
				t.Error = "no answer within the budget"
			default:
				continue
			}
			t.State, t.FinishedAt, dirty[i] = wire.CheckBudget, now, true
		}
	}
	inflight := 0
	for _, t := range targets {
		if t.State == wire.CheckDispatched || t.State == wire.CheckRunning {
			inflight++
		}
	}
	for i := range targets {
		t := &targets[i]
		if t.State == wire.CheckPending && (sp.Concurrency == 0 || inflight < sp.Concurrency) {
			t.State, t.DispatchedAt, dirty[i] = wire.CheckDispatched, now, true
			inflight++
		}
	}
	final := true
	for _, t := range targets {
		switch t.State {
		case wire.CheckDispatched, wire.CheckRunning:
			timeout := min(sp.CheckTimeout(), run.Deadline.Sub(t.DispatchedAt))
			requests[t.AgentID] = append(requests[t.AgentID], wire.SweepCheckRequest{Sweep: run.Sweep, RunID: run.ID,
				Command: sp.Check.Command, TimeoutMS: max(timeout, time.Second).Milliseconds()})
			final = false
		case wire.CheckPending:
			final = false
		}
	}
	count(&run, targets)
	if final {
		s.finalize(ctx, &run, sp, now)
	}
	var changed []wire.SweepRunAgent
	for i, d := range dirty {
		if d {
			changed = append(changed, targets[i])
		}
	}
	return s.save(ctx, orig, run, changed, now)
}

// save writes a run that changed, fenced, and reports its progress.
func (s *Service) save(ctx context.Context, orig, run wire.SweepRun, changed []wire.SweepRunAgent, now time.Time) error {
	if len(changed) == 0 && reflect.DeepEqual(orig, run) {
		return nil
	}
	run.UpdatedAt = now
	if err := s.cfg.Store.SaveRun(ctx, s.fence(), run, changed); err != nil {
		if errors.Is(err, fault.ErrConflict) {
			return nil // it ended meanwhile (another leader): nothing left to do
		}
		return err
	}
	if run.Final() {
		s.metrics.finished(run)
		s.log.Info("sweep run finished", "sweep", run.Sweep, "run", run.ID, "status", run.Status, "drifted", run.Drifted,
			"clean", run.SkippedClean, "missing", run.SkippedMissing, "budget", run.SkippedBudget, "errors", run.Errors)
	}
	for _, t := range changed {
		if wire.CheckFinal(t.State) {
			s.metrics.agents.WithLabelValues(run.Sweep, t.State).Inc()
		}
	}
	s.progressEvent(ctx, run, run.Final())
	return nil
}

// snapshotSpec reads the spec a run was started with from its context.
func (s *Service) snapshotSpec(run wire.SweepRun, rc *runContext) (*Spec, error) {
	if err := json.Unmarshal(run.Context, rc); err != nil {
		return nil, fmt.Errorf("run context does not decode: %w", err)
	}
	return s.parseStored(rc.Spec, rc.SpecHash)
}

// resultFor returns an agent's answer for a run, if it gave one. s.mu is held.
func (s *Service) resultFor(agentID, runID string) *wire.SweepCheckResult {
	doc, ok := s.results[agentID]
	if !ok {
		return nil
	}
	for i := range doc.Results {
		if doc.Results[i].RunID == runID {
			r := doc.Results[i]
			return &r
		}
	}
	return nil
}

// applyResult takes an agent's answer into its row; it reports whether the row changed.
func applyResult(t *wire.SweepRunAgent, r *wire.SweepCheckResult, now time.Time) bool {
	if r == nil {
		return false
	}
	switch r.State {
	case wire.CheckRunning:
		if t.State == wire.CheckDispatched {
			t.State = wire.CheckRunning
			return true
		}
	case wire.CheckClean, wire.CheckDrifted, wire.CheckError:
		t.State, t.ExitCode, t.Error, t.DurationMS, t.FinishedAt = r.State, r.ExitCode, r.Error, r.DurationMS, now
		t.OutputTail = r.OutputTail
		if len(t.OutputTail) > maxOutputTail {
			t.OutputTail = "…" + t.OutputTail[len(t.OutputTail)-maxOutputTail:]
		}
		return true
	}
	return false
}

// count sets a run's counts from its agents' states.
func count(run *wire.SweepRun, targets []wire.SweepRunAgent) {
	run.Matched = len(targets)
	run.Processed, run.SkippedClean, run.SkippedMissing, run.SkippedBudget, run.Drifted, run.Errors = 0, 0, 0, 0, 0, 0
	run.DriftedAgents = []wire.SweepAgentRef{}
	for _, t := range targets {
		switch t.State {
		case wire.CheckClean:
			run.SkippedClean++
		case wire.CheckDrifted:
			run.Drifted++
			run.DriftedAgents = append(run.DriftedAgents, wire.SweepAgentRef{ID: t.AgentID, Name: t.AgentName})
		case wire.CheckError:
			run.Errors++
		case wire.CheckMissing:
			run.SkippedMissing++
		case wire.CheckBudget:
			run.SkippedBudget++
		}
	}
	run.Processed = run.Drifted + run.Errors
}

// finalize ends a run whose agents have all settled; a remediating sweep starts its migration
// for the drifted agents first.
func (s *Service) finalize(ctx context.Context, run *wire.SweepRun, sp *Spec, now time.Time) {
	code := ExitCompleted
	run.Status, run.FinishedAt = wire.SweepRunCompleted, now
	if sp.Action == ActionRemediate && run.Drifted > 0 {
		ids := make([]string, len(run.DriftedAgents))
		for i, a := range run.DriftedAgents {
			ids[i] = a.ID
		}
		name, err := s.remediate(ctx, *run, sp, ids)
		if err != nil {
			code = ExitRemediationFailed
			run.Status, run.Error = wire.SweepRunFailed, "remediation: "+err.Error()
			s.log.Error("sweep remediation failed", "sweep", run.Sweep, "run", run.ID, "err", err)
		} else {
			run.Remediation = name
		}
	}
	run.ExitCode = &code
}

// writeRequests puts each agent's request document into the sweep bucket when it differs from
// what this leader last wrote; an agent with nothing left to check gets an empty document.
// Documents carry the leader's epoch.
func (s *Service) writeRequests(ctx context.Context, requests map[string][]wire.SweepCheckRequest) error {
	s.mu.Lock()
	epoch := s.epoch
	agents := make([]string, 0, len(requests)+len(s.written))
	for id := range requests {
		agents = append(agents, id)
	}
	for id := range s.written {
		if _, ok := requests[id]; !ok {
			agents = append(agents, id)
		}
	}
	s.mu.Unlock()
	sort.Strings(agents)
	var errs []error
	for _, id := range agents {
		checks := requests[id]
		if checks == nil {
			checks = []wire.SweepCheckRequest{}
		}
		sort.Slice(checks, func(i, j int) bool { return checks[i].RunID < checks[j].RunID })
		doc, err := json.Marshal(wire.SweepRequests{AgentID: id, Epoch: epoch, Checks: checks})
		if err != nil {
			return err
		}
		s.mu.Lock()
		same := s.written[id] == string(doc)
		s.mu.Unlock()
		if same {
			continue
		}
		if _, err := s.cfg.Requests.Put(ctx, id, doc); err != nil {
			errs = append(errs, fmt.Errorf("sweep requests of %s: %w", id, err))
			continue
		}
		s.mu.Lock()
		if len(checks) == 0 {
			delete(s.written, id)
		} else {
			s.written[id] = string(doc)
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// progressEvent publishes a sweep.progress event carrying the run record (its context left
// out, its drifted agents capped), at most every ProgressEvery per run unless force.
func (s *Service) progressEvent(ctx context.Context, run wire.SweepRun, force bool) {
	now := s.clock.Now()
	s.mu.Lock()
	last, seen := s.progress[run.ID]
	if !force && seen && now.Sub(last) < s.cfg.ProgressEvery {
		s.mu.Unlock()
		return
	}
	if run.Final() {
		delete(s.progress, run.ID)
	} else {
		s.progress[run.ID] = now
	}
	s.mu.Unlock()

	const maxListed = 100
	rec := run
	rec.Context = nil
	extra := struct {
		wire.SweepRun
		DriftedTruncated bool `json:"drifted_agents_truncated,omitempty"`
	}{SweepRun: rec}
	if len(rec.DriftedAgents) > maxListed {
		extra.DriftedAgents, extra.DriftedTruncated = rec.DriftedAgents[:maxListed], true
	}
	b, _ := json.Marshal(extra)
	sev := wire.SeverityInfo
	switch {
	case run.Status == wire.SweepRunFailed:
		sev = wire.SeverityError
	case run.LockSkipped, run.Status == wire.SweepRunMissed, run.Drifted > 0, run.Errors > 0:
		sev = wire.SeverityWarning
	}
	s.publish(ctx, s.hubEvent(wire.EventSweepProgress, sev, "sweep/"+run.Sweep+"/run/"+run.ID,
		wire.EventData{Migration: run.Remediation, Message: progressMessage(run), Extra: b}))
}

func progressMessage(r wire.SweepRun) string {
	switch {
	case r.LockSkipped:
		return fmt.Sprintf("sweep %s: %s firing lock-skipped: %s", r.Sweep, r.Trigger, r.Error)
	case r.Status == wire.SweepRunMissed:
		return fmt.Sprintf("sweep %s: %s", r.Sweep, r.Error)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "sweep %s run %s (%s) %s: %d agents, %d drifted, %d clean, %d missing, %d over budget, %d errors",
		r.Sweep, r.ID, r.Trigger, r.Status, r.Matched, r.Drifted, r.SkippedClean, r.SkippedMissing, r.SkippedBudget, r.Errors)
	if r.Remediation != "" {
		fmt.Fprintf(&b, "; remediation migration %s started", r.Remediation)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "; %s", r.Error)
	}
	return b.String()
}
