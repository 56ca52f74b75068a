package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/hubevent"
	"godwit.dev/godwit/internal/lease"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
	"godwit.dev/godwit/internal/worker"
)

// Clock tells the time. Firings, budgets and progress pacing all read it, so a test clock that
// jumps hours (or across a daylight-saving change) drives the whole scheduler.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// LeadershipName is the leadership the scheduler and run driver work under. It is not the
// migration controller's: acquiring one must not fence the other.
const LeadershipName = "sweeps"

// Leadership hands out the fencing epoch every scheduler write carries (see package lease).
type Leadership = lease.Leadership

// Defaults for Config.
const (
	DefaultInterval      = time.Second
	DefaultMisfireGrace  = time.Minute
	DefaultProgressEvery = 5 * time.Second
)

// Config wires a Service. Store is required. The API side (Apply, Trigger, Get, List, Runs,
// Run, Delete) needs only Store, Clock, Publish, HubID and Logger and works on every hub
// replica; Start, on the leader, also needs Requests, Results and Leader.
type Config struct {
	Store store.Store
	// Requests is the godwit-sweep bucket (bus.Buckets.Sweep): the leader writes each agent's
	// check requests there.
	Requests jetstream.KeyValue
	// Results is the godwit-sweep-results bucket (bus.Buckets.SweepResults): agents write
	// their answers there and the leader watches it.
	Results jetstream.KeyValue
	Leader  Leadership
	Logger  *slog.Logger
	Clock   Clock
	// Publish records a hub event (sweep.progress, operator.action); nil drops them. An event it
	// cannot record is kept and offered again (package hubevent).
	Publish func(ctx context.Context, e wire.Event) error
	// HubID names this hub in event sources and run snapshots.
	HubID string
	// Registry receives the sweep metrics; nil: not exported.
	Registry prometheus.Registerer
	// NudgeMigrations, if set, is called after a remediation created a migration, so that the
	// migration controller starts it without waiting for its next pass (controller.Nudge).
	NudgeMigrations func()
	// OnExit is told when the leader side stops by itself: deposed (fault.ErrFenced, another
	// hub holds a newer epoch) or panicked. See package worker.
	OnExit func(worker.Exit)
	// Interval between the leader's passes; Nudge runs one sooner. Default 1s.
	Interval time.Duration
	// MisfireGrace is how late a scheduled firing may be found and still run as on time; a
	// firing found later was missed (the hub was down) and the misfire policy decides. Default
	// 1m.
	MisfireGrace time.Duration
	// ProgressEvery is the least clock time between two sweep.progress events of a running
	// run; the first and the last are always sent. Default 5s.
	ProgressEvery time.Duration
}

// Service schedules and runs sweeps.
type Service struct {
	cfg     Config
	log     *slog.Logger
	clock   Clock
	metrics *metrics

	mu       sync.Mutex
	epoch    int64
	results  map[string]wire.SweepResults // agent → latest results document
	written  map[string]string            // agent → request document last written
	specs    map[string]*Spec             // spec hash → parsed, validated spec
	progress map[string]time.Time         // run → clock time of its last progress event

	// synced is closed once the results watch has delivered every stored document: until then
	// the leader fires schedules but does not judge runs, so answers agents gave while no hub
	// ran are never mistaken for silence.
	synced chan struct{}

	events *hubevent.Sender
	life   *worker.Lifecycle
}

// New returns a service. Start makes it lead.
func New(cfg Config) *Service {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MisfireGrace <= 0 {
		cfg.MisfireGrace = DefaultMisfireGrace
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = DefaultProgressEvery
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, metrics: newMetrics(cfg.Registry),
		results: map[string]wire.SweepResults{}, written: map[string]string{}, specs: map[string]*Spec{}, progress: map[string]time.Time{},
		synced: make(chan struct{}), events: hubevent.New(cfg.Publish, cfg.Logger).CountedIn(cfg.Registry, "sweeps"),
		life: worker.New(worker.Config{Name: "sweeps", Logger: cfg.Logger, OnExit: cfg.OnExit, Registry: cfg.Registry})}
}

// Start acquires leadership and runs the scheduler and the runs until Stop. Safe to call twice;
// Start after Stop leads again (package worker).
func (s *Service) Start(ctx context.Context) error {
	return s.life.Start(ctx, s.begin, s.run, s.watchResults)
}

// Stop ends the scheduler and waits for its pass to finish. Runs in progress stay running in
// the store; the next leader picks them up. Safe to call twice.
func (s *Service) Stop(ctx context.Context) error { return s.life.Stop(ctx) }

// begin sets a run up: nothing the last run learned carries over (another hub may have led in
// between), then it takes the lead.
func (s *Service) begin(ctx context.Context) error {
	if s.cfg.Store == nil || s.cfg.Requests == nil || s.cfg.Results == nil || s.cfg.Leader == nil {
		return fmt.Errorf("sweeps: Start needs Store, Requests, Results and Leader: %w", fault.ErrInvalid)
	}
	s.mu.Lock()
	s.results, s.written, s.progress = map[string]wire.SweepResults{}, map[string]string{}, map[string]time.Time{}
	s.synced = make(chan struct{})
	s.mu.Unlock()
	return s.lead(ctx)
}

// lead takes leadership and marks every request document left in the bucket for rewriting, so
// that checks a previous leader asked for and nobody wants any more are withdrawn.
func (s *Service) lead(ctx context.Context) error {
	epoch, err := s.cfg.Leader.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("sweeps: leadership: %w", err)
	}
	lister, err := s.cfg.Requests.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("sweeps: list request documents: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	s.mu.Lock()
	s.epoch = epoch
	for _, k := range keys {
		s.written[k] = "" // never equal to a document: rewritten on the first pass
	}
	s.mu.Unlock()
	s.log.Info("sweep scheduler leading", "epoch", epoch)
	return nil
}

// Nudge asks the leader for a pass as soon as possible.
func (s *Service) Nudge() { s.life.Nudge() }

// run is one run of the leader side, until Stop or until it is deposed; watchResults runs
// beside it.
func (s *Service) run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if err := s.Pass(ctx); err != nil {
			if errors.Is(err, fault.ErrFenced) {
				return fmt.Errorf("sweep scheduler deposed: another hub holds a newer epoch: %w", err)
			}
			if ctx.Err() == nil {
				s.log.Warn("sweep pass failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-s.life.Nudged():
		}
	}
}

// watchResults keeps every agent's latest results document, restarting the watch if it breaks.
// Its initial values give a restarted leader every answer agents gave while it was away.
func (s *Service) watchResults(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := s.cfg.Results.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err != nil {
			s.log.Warn("sweeps: watch results", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.cfg.Interval):
			}
			continue
		}
		for e := range w.Updates() {
			if e == nil {
				s.markSynced()
				s.Nudge()
				continue
			}
			var r wire.SweepResults
			// The key is the authenticated identity (agents may write only their own key).
			if err := json.Unmarshal(e.Value(), &r); err != nil || r.AgentID != e.Key() {
				s.log.Warn("sweeps: ignoring malformed results document", "agent", e.Key())
				continue
			}
			s.mu.Lock()
			s.results[e.Key()] = r
			s.mu.Unlock()
			s.Nudge()
		}
		_ = w.Stop()
	}
}

func (s *Service) markSynced() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.synced:
	default:
		close(s.synced)
	}
}

// isSynced reports whether the results watch has delivered every stored document.
func (s *Service) isSynced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.synced:
		return true
	default:
		return false
	}
}

func (s *Service) fence() store.Fence {
	s.mu.Lock()
	defer s.mu.Unlock()
	return store.Fence{Name: LeadershipName, Epoch: s.epoch}
}

func (s *Service) publish(ctx context.Context, e wire.Event) { s.events.Send(ctx, e) }

func (s *Service) hubEvent(typ, severity, subject string, data wire.EventData) wire.Event {
	e := wire.NewEvent(wire.HubSource(s.cfg.HubID), typ, severity, data)
	e.Time = s.clock.Now().UTC()
	e.Subject = subject
	return e
}

// parseStored returns the validated spec of a stored sweep, cached by its hash.
func (s *Service) parseStored(text, hash string) (*Spec, error) {
	s.mu.Lock()
	sp, ok := s.specs[hash]
	s.mu.Unlock()
	if ok && hash != "" {
		return sp, nil
	}
	sp, err := Parse([]byte(text))
	if err == nil {
		err = sp.Validate()
	}
	if err != nil {
		return nil, fmt.Errorf("stored sweep spec does not validate: %w", err)
	}
	s.mu.Lock()
	s.specs[sp.Hash()] = sp
	s.mu.Unlock()
	return sp, nil
}

// Apply stores a sweep from its YAML spec, or with dryRun only validates it. The same spec again
// changes nothing; a changed spec replaces the stored one (a changed schedule or time zone
// reschedules from now). A remediating sweep must name a migration that exists.
//
// spec.suspended follows kubectl's apply of a field that a command can also change (CronJob
// spec.suspend): a document that sets it wins, so applying it again undoes a suspend or resume
// command; a document that leaves it out keeps the sweep's state, unless the document applied
// before set it (then the field was removed, and the sweep is not suspended). See suspension.
func (s *Service) Apply(ctx context.Context, data []byte, dryRun bool) (wire.SweepApplyResult, error) {
	sp, err := Parse(data)
	if err != nil {
		return wire.SweepApplyResult{}, err
	}
	if err := sp.Validate(); err != nil {
		return wire.SweepApplyResult{}, err
	}
	if sp.Action == ActionRemediate {
		if _, err := s.cfg.Store.GetMigration(ctx, sp.Remediate.Migration); err != nil {
			if errors.Is(err, fault.ErrNotFound) {
				return wire.SweepApplyResult{}, &fault.FieldError{Field: "spec.remediate.migration", Line: sp.lines.Of("spec.remediate.migration"),
					Message: fmt.Sprintf("migration %q does not exist: apply it first (its spec is what remediation runs on the drifted agents)", sp.Remediate.Migration)}
			}
			return wire.SweepApplyResult{}, err
		}
	}
	agents, err := s.cfg.Store.ListAgents(ctx)
	if err != nil {
		return wire.SweepApplyResult{}, err
	}
	// A suspend or resume between reading the sweep and writing it makes the write lose
	// (versions); read it again and decide again.
	for attempt := 1; ; attempt++ {
		res, err := s.apply(ctx, data, sp, len(selectAgents(sp, agents)), dryRun)
		if !errors.Is(err, fault.ErrConflict) || attempt == 3 {
			return res, err
		}
	}
}

func (s *Service) apply(ctx context.Context, data []byte, sp *Spec, matched int, dryRun bool) (wire.SweepApplyResult, error) {
	now := s.clock.Now().UTC()
	res := wire.SweepApplyResult{Name: sp.Name, DryRun: dryRun, Matched: matched, Warnings: sp.Warnings(),
		NextFirings: nextFirings(sp.Cron(), now, 3)}
	existing, err := s.cfg.Store.GetSweep(ctx, sp.Name)
	found := err == nil
	if err != nil && !errors.Is(err, fault.ErrNotFound) {
		return res, err
	}
	var old *Spec
	if found {
		old, _ = Parse([]byte(existing.Spec)) // nil if it no longer parses: nothing to compare
	}
	suspended := appliedSuspension(sp, found, existing, old)
	res.Suspended = suspended
	switch wasSuspended := found && existing.Suspended; {
	case suspended && !wasSuspended:
		res.Suspension = "suspended"
	case !suspended && wasSuspended:
		res.Suspension = "resumed"
	}
	if suspended {
		res.NextFirings = nil
		w := "suspended: no scheduled run fires until it is resumed (godwit sweep resume " + sp.Name + ", or spec.suspended: false); godwit sweep run still runs it"
		if sp.Suspended == nil && found && existing.Suspension != nil {
			w = fmt.Sprintf("stays suspended (since %s, via %s): spec.suspended is not set, so applying keeps the sweep's state; %s",
				existing.Suspension.Since.UTC().Format(time.RFC3339), existing.Suspension.Via, w)
		}
		res.Warnings = append(res.Warnings, w)
	}
	switch {
	case found && existing.SpecHash == sp.Hash() && sameField(old, sp) && suspended == existing.Suspended:
		res.Outcome = "unchanged"
		return res, nil
	case dryRun:
		res.Outcome = "planned"
		return res, nil
	}
	sw := wire.Sweep{Name: sp.Name, Spec: string(data), SpecHash: sp.Hash(), NextFireAt: firstFiring(sp.Cron(), now), CreatedAt: now, UpdatedAt: now,
		Suspended: suspended}
	resuming := found && existing.Suspended && !suspended
	if !found {
		if suspended {
			sw.Suspension = &wire.SweepSuspension{Since: now, Via: wire.SuspendViaSpec}
		}
		if err := s.cfg.Store.CreateSweep(ctx, sw); err != nil {
			return res, err
		}
		res.Outcome = "created"
	} else {
		reschedule := old == nil || old.Schedule != sp.Schedule || old.Timezone != sp.Timezone
		sw.Version, sw.CreatedAt = existing.Version, existing.CreatedAt
		switch {
		case suspended && existing.Suspended:
			sw.Suspension = existing.Suspension
		case suspended:
			sw.Suspension = &wire.SweepSuspension{Since: now, Via: wire.SuspendViaSpec}
		case resuming && sp.ResumePolicy == ResumeSkip:
			reschedule = true // what came due while suspended is not run: continue from now
		case resuming && !reschedule:
			// resumePolicy: misfire with the same schedule: the spec is stored with the sweep
			// still suspended, and resume hands the held firings to the misfire policy below.
			sw.Suspended, sw.Suspension = true, existing.Suspension
		}
		if !reschedule {
			sw.NextFireAt = existing.NextFireAt
		}
		if err := s.cfg.Store.UpdateSweep(ctx, sw, reschedule); err != nil {
			return res, err
		}
		sw.Version++
		res.Outcome = "updated"
	}
	s.publish(ctx, s.hubEvent(wire.EventOperatorAction, wire.SeverityInfo, "sweep/"+sp.Name, wire.EventData{
		Message: fmt.Sprintf("sweep %s %s (schedule %q in %s, action %s)", sp.Name, res.Outcome, sp.Schedule, sp.Timezone, sp.Action)}))
	switch {
	case resuming:
		var catchUp []wire.SweepRun
		if sw.Suspended {
			if catchUp, err = s.resume(ctx, sw, sp, now); err != nil {
				return res, fmt.Errorf("sweep %s: the spec is stored, but resuming it failed: %w", sp.Name, err)
			}
		}
		res.NextFirings = s.resumed(ctx, existing, sp, catchUp, now, "", wire.SuspendViaSpec, "").NextFirings
	case res.Suspension != "":
		s.suspensionEvent(ctx, sp.Name, suspensionExtra("suspend", sp.Name, sw.Suspension),
			fmt.Sprintf("sweep %s suspended by applying spec.suspended: true", sp.Name))
	}
	s.Nudge()
	return res, nil
}

func firstFiring(c *Schedule, now time.Time) time.Time {
	if c == nil {
		return time.Time{}
	}
	return c.Next(now)
}

func nextFirings(c *Schedule, after time.Time, n int) []time.Time {
	if c == nil {
		return nil
	}
	var out []time.Time
	for t := c.Next(after); !t.IsZero() && len(out) < n; t = c.Next(t) {
		out = append(out, t.UTC())
	}
	return out
}

// selectAgents returns the agents a sweep checks: its selector's matches, revoked agents left
// out.
func selectAgents(sp *Spec, agents []wire.Agent) []wire.Agent {
	var out []wire.Agent
	for _, a := range agents {
		if a.RevokedAt == nil && sp.Selector.Matches(a.Labels) {
			out = append(out, a)
		}
	}
	return out
}

// Delete removes a sweep: it fires no more. Its runs stay as the audit trail; a run in progress
// finishes with the spec it started with.
func (s *Service) Delete(ctx context.Context, name string) error {
	if err := s.cfg.Store.DeleteSweep(ctx, name); err != nil {
		return err
	}
	s.publish(ctx, s.hubEvent(wire.EventOperatorAction, wire.SeverityInfo, "sweep/"+name, wire.EventData{Message: "sweep " + name + " deleted"}))
	return nil
}

// RemediatingWith names the sweeps that remediate drift with the given migration's spec ("sweep
// NAME"): deleting that migration would make their remediation fail.
func (s *Service) RemediatingWith(ctx context.Context, migration string) ([]string, error) {
	sws, err := s.cfg.Store.ListSweeps(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, sw := range sws {
		sp, err := s.parseStored(sw.Spec, sw.SpecHash)
		if err != nil {
			continue // a sweep that does not validate remediates nothing
		}
		if sp.Action == ActionRemediate && sp.Remediate.Migration == migration {
			out = append(out, "sweep "+sw.Name)
		}
	}
	return out, nil
}

// Get returns a sweep with its settings, next firings and latest run.
func (s *Service) Get(ctx context.Context, name string) (wire.SweepSummary, error) {
	sw, err := s.cfg.Store.GetSweep(ctx, name)
	if err != nil {
		return wire.SweepSummary{}, err
	}
	return s.summary(ctx, sw)
}

// List returns every sweep as Get does.
func (s *Service) List(ctx context.Context) ([]wire.SweepSummary, error) {
	sws, err := s.cfg.Store.ListSweeps(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]wire.SweepSummary, 0, len(sws))
	for _, sw := range sws {
		sum, err := s.summary(ctx, sw)
		if err != nil {
			return nil, err
		}
		out = append(out, sum)
	}
	return out, nil
}

func (s *Service) summary(ctx context.Context, sw wire.Sweep) (wire.SweepSummary, error) {
	sum := wire.SweepSummary{Sweep: sw}
	if sp, err := s.parseStored(sw.Spec, sw.SpecHash); err == nil {
		sum.Schedule, sum.Timezone, sum.Misfire, sum.ResumePolicy, sum.Action, sum.Remediate, sum.MaxSeconds =
			sp.Schedule, sp.Timezone, sp.Misfire, sp.ResumePolicy, sp.Action, sp.Remediate.Migration, sp.MaxSeconds
		switch {
		case sw.Suspended:
			// Nothing fires until it is resumed; what has been held back so far is counted.
			sum.HeldFirings = countDue(sp.Cron(), sw.NextFireAt, s.clock.Now())
		case !sw.NextFireAt.IsZero():
			sum.NextFirings = append([]time.Time{sw.NextFireAt}, nextFirings(sp.Cron(), sw.NextFireAt, 2)...)
		}
	}
	runs, _, err := s.cfg.Store.ListRuns(ctx, store.RunQuery{Sweep: sw.Name, Limit: 1})
	if err != nil {
		return sum, err
	}
	if len(runs) > 0 {
		sum.LastRun = &runs[0]
	}
	return sum, nil
}

// Runs returns a page of a sweep's runs, newest first, without their context snapshots (Run
// has it), and the cursor of the next page ("" after the last). A sweep that never existed is
// not found; a deleted one's runs are still listed.
func (s *Service) Runs(ctx context.Context, name string, limit int, cursor string) ([]wire.SweepRun, string, error) {
	runs, next, err := s.cfg.Store.ListRuns(ctx, store.RunQuery{Sweep: name, Limit: limit, Cursor: cursor})
	if err != nil {
		return nil, "", err
	}
	if len(runs) == 0 && cursor == "" {
		if _, err := s.cfg.Store.GetSweep(ctx, name); err != nil {
			return nil, "", err
		}
	}
	return runs, next, nil
}

// Run returns one run of a sweep with every agent's part.
func (s *Service) Run(ctx context.Context, name, id string) (wire.SweepRunDetail, error) {
	r, err := s.cfg.Store.GetRun(ctx, id)
	if err != nil {
		return wire.SweepRunDetail{}, err
	}
	if r.Sweep != name {
		return wire.SweepRunDetail{}, fmt.Errorf("sweep %s has no run %q: %w", name, id, fault.ErrNotFound)
	}
	agents, err := s.cfg.Store.ListRunAgents(ctx, id)
	if err != nil {
		return wire.SweepRunDetail{}, err
	}
	return wire.SweepRunDetail{SweepRun: r, Agents: agents}, nil
}

// Trigger starts a run of a sweep now, for the API or the CLI, under the same lock as the
// schedule: if a run of the sweep is in progress, the answer is a run record with
// lock_skipped: true. A suspended sweep runs too (the canary; its context records that it was
// suspended). It works on any hub replica; the leader drives the run.
func (s *Service) Trigger(ctx context.Context, name string, req wire.SweepTriggerRequest) (wire.SweepRun, error) {
	trig := firing{kind: wire.TriggerAPI, by: req.By}
	switch req.Trigger {
	case "", wire.TriggerAPI:
	case wire.TriggerCLI:
		trig.kind = wire.TriggerCLI
	default:
		return wire.SweepRun{}, fault.Invalid("trigger", "must be api or cli, not %q (schedule is the scheduler's)", req.Trigger)
	}
	if req.MaxSeconds != nil {
		if *req.MaxSeconds <= 0 || *req.MaxSeconds > MaxMaxSeconds {
			return wire.SweepRun{}, fault.Invalid("max_seconds", "must be a positive number of seconds up to %d, not %d", MaxMaxSeconds, *req.MaxSeconds)
		}
		trig.maxSeconds = *req.MaxSeconds
	}
	if err := wire.CheckText("by", trig.by, 200); err != nil {
		return wire.SweepRun{}, err
	}
	sw, err := s.cfg.Store.GetSweep(ctx, name)
	if err != nil {
		return wire.SweepRun{}, err
	}
	sp, err := s.parseStored(sw.Spec, sw.SpecHash)
	if err != nil {
		return wire.SweepRun{}, err
	}
	run, err := s.startRun(ctx, store.Fence{}, nil, sw, sp, trig)
	if err != nil {
		return run, err
	}
	s.Nudge()
	return run, nil
}

// firing describes what starts a run.
type firing struct {
	kind, by     string
	scheduledFor time.Time
	maxSeconds   int // 0: the spec's
	// missed counts scheduled firings that were due while no hub ran, from missedFirst to
	// missedLast. With onlyRecord the firing does not run: it is the record of those missed
	// firings (misfire: skip).
	missed                  int
	missedFirst, missedLast time.Time
	onlyRecord              bool
	// cause says why the firings were missed: causeNoHub or causeSuspended.
	cause string
}

// runContext is the snapshot a run is made with (the run's context field): everything needed to
// drive and to audit it even if the sweep changes or is deleted meanwhile.
type runContext struct {
	Spec         string     `json:"spec"` // the YAML as applied
	SpecHash     string     `json:"spec_hash"`
	Settings     canonical  `json:"settings"` // the spec with its defaults
	SweepVersion int64      `json:"sweep_version"`
	Hub          string     `json:"hub"`
	Trigger      string     `json:"trigger"`
	By           string     `json:"by,omitempty"`
	MaxSeconds   int        `json:"max_seconds"`
	Matched      []string   `json:"matched_agents"`
	Misfire      *misfireAt `json:"misfire,omitempty"`
	// Suspended: the sweep was suspended when this run was triggered (a canary run).
	Suspended bool `json:"suspended,omitempty"`
}

type misfireAt struct {
	Policy string    `json:"policy"`
	Missed int       `json:"missed"`
	First  time.Time `json:"first"`
	Last   time.Time `json:"last"`
	// Cause is "suspended" when the firings were held by a suspension (resumePolicy: misfire),
	// absent when no hub ran.
	Cause string `json:"cause,omitempty"`
}

// startRun records a run (or, under the lock, its lock-skipped record) with its agents: those
// the selector matches now, offline ones already missing and the others to be checked.
func (s *Service) startRun(ctx context.Context, fence store.Fence, claim *store.SweepFiring, sw wire.Sweep, sp *Spec, f firing) (wire.SweepRun, error) {
	agents, err := s.cfg.Store.ListAgents(ctx)
	if err != nil {
		return wire.SweepRun{}, err
	}
	now := s.clock.Now().UTC()
	maxSeconds := sp.MaxSeconds
	if f.maxSeconds > 0 {
		maxSeconds = f.maxSeconds
	}
	by := f.by
	if by == "" {
		by = f.kind
		if f.kind == wire.TriggerSchedule {
			by = "scheduler"
		}
	}
	run := wire.SweepRun{ID: uuid.Must(uuid.NewV7()).String(), Sweep: sw.Name, Trigger: f.kind, TriggeredBy: by,
		ScheduledFor: f.scheduledFor, FiredAt: now, Deadline: now.Add(time.Duration(maxSeconds) * time.Second), MaxSeconds: maxSeconds,
		Status: wire.SweepRunRunning, MissedFirings: f.missed, DriftedAgents: []wire.SweepAgentRef{}, UpdatedAt: now}
	rc := runContext{Spec: sw.Spec, SpecHash: sw.SpecHash, Settings: sp.canonical(), SweepVersion: sw.Version, Hub: s.cfg.HubID,
		Trigger: f.kind, By: by, MaxSeconds: maxSeconds, Matched: []string{}, Suspended: sw.Suspended}
	if f.missed > 0 {
		rc.Misfire = &misfireAt{Policy: sp.Misfire, Missed: f.missed, First: f.missedFirst, Last: f.missedLast}
		if f.cause == causeSuspended {
			rc.Misfire.Cause = causeSuspended
		}
	}
	var targets []wire.SweepRunAgent
	if f.onlyRecord {
		zero := 0
		why := "no hub was running"
		if f.cause == causeSuspended {
			why = "the sweep was suspended (resumePolicy: misfire)"
		}
		run.Status, run.ExitCode, run.FinishedAt, run.Deadline = wire.SweepRunMissed, &zero, now, now
		run.Error = fmt.Sprintf("%d scheduled firings (%s to %s) were due while %s; skipped (misfire: skip)",
			f.missed, f.missedFirst.UTC().Format(time.RFC3339), f.missedLast.UTC().Format(time.RFC3339), why)
	} else {
		for _, a := range selectAgents(sp, agents) {
			t := wire.SweepRunAgent{RunID: run.ID, AgentID: a.ID, AgentName: a.Name, State: wire.CheckPending}
			// Offline means its heartbeats stopped longer than the liveness grace. Unknown is not
			// missing: right after a hub restart every agent is unknown until its heartbeat is
			// seen again, and its answer may well come; the budget bounds the wait.
			if a.Status == wire.StatusOffline {
				t.State, t.Error, t.FinishedAt = wire.CheckMissing, "agent offline when the run fired", now
			}
			targets = append(targets, t)
			rc.Matched = append(rc.Matched, a.ID)
		}
		count(&run, targets)
	}
	run.Context, _ = json.Marshal(rc)
	stored, err := s.cfg.Store.StartRun(ctx, fence, claim, run, targets)
	if err != nil {
		return stored, err
	}
	switch {
	case stored.LockSkipped:
		s.metrics.finished(stored)
		s.log.Info("sweep run lock-skipped", "sweep", sw.Name, "run", stored.ID, "trigger", f.kind, "reason", stored.Error)
		s.progressEvent(ctx, stored, true)
	case stored.Status == wire.SweepRunMissed:
		s.metrics.finished(stored)
		s.metrics.missed.WithLabelValues(sw.Name, sp.Misfire).Add(float64(f.missed))
		s.log.Warn("sweep firings missed", "sweep", sw.Name, "missed", f.missed, "policy", sp.Misfire)
		s.progressEvent(ctx, stored, true)
	default:
		if f.missed > 0 {
			s.metrics.missed.WithLabelValues(sw.Name, sp.Misfire).Add(float64(f.missed))
		}
		s.log.Info("sweep run started", "sweep", sw.Name, "run", stored.ID, "trigger", f.kind, "agents", stored.Matched)
		s.progressEvent(ctx, stored, true)
	}
	return stored, nil
}
