package ui

// Sweeps: the list of sweeps with their schedule and latest run, and a sweep's page with its spec,
// its runs newest first a page at a time, "Run now" and the suspend/resume toggle.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/sweep"
	"godwit.dev/godwit/internal/wire"
)

// Run listing: pages of sweepRunsDefault runs (limit up to sweepRunsMax, the store's limit),
// older pages by the store's keyset cursor. Listed runs carry no context snapshot.
const (
	sweepRunsDefault = 50
	sweepRunsMax     = 1000
	driftedShown     = 10
)

func (s *Server) sweepService() (api.Sweeps, error) {
	if s.cfg.Sweeps == nil {
		return nil, fmt.Errorf("the sweep service is not running on this hub: %w", fault.ErrUnavailable)
	}
	return s.cfg.Sweeps, nil
}

// ---- list ----

type sweepsData struct {
	Sweeps []wire.SweepSummary
	// Running is each sweep's running run, when it is not its latest record (lock-skipped
	// requests came after it).
	Running map[string]*wire.SweepRun
}

func (s *Server) sweeps(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	svc, err := s.sweepService()
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	mark, err := s.mark(ctx, topicSweeps)
	if err != nil {
		return nil, err
	}
	d := &sweepsData{Running: map[string]*wire.SweepRun{}}
	if d.Sweeps, err = svc.List(ctx); err != nil {
		return nil, err
	}
	running, err := s.cfg.Store.RunningRuns(ctx)
	if err != nil {
		return nil, err
	}
	for i, r := range running {
		d.Running[r.Sweep] = &running[i]
	}
	for _, sw := range d.Sweeps {
		if r := d.Running[sw.Name]; r != nil && sw.LastRun != nil && sw.LastRun.ID == r.ID {
			delete(d.Running, sw.Name)
		}
	}
	return &view{Template: "sweeps", Title: "Sweeps", Nav: "sweeps", Live: topicSweeps, Mark: mark, Data: d}, nil
}

// ---- one sweep ----

// runRow is a run as the runs table shows it: its first drifted agents, and how many more.
type runRow struct {
	wire.SweepRun
	Shown []wire.SweepAgentRef
	More  int
	// Holder is the run that held the lock when this one was lock-skipped.
	Holder string
	// Missing names the agents counted as missing (first missingShown), MissingMore the rest.
	Missing     []wire.SweepAgentRef
	MissingMore int
}

type sweepData struct {
	Name string
	S    wire.SweepSummary
	// Spec is the stored spec, parsed (nil if it does not parse, or the sweep was deleted).
	Spec *sweep.Spec
	// Deleted: the sweep is gone but its runs are still the audit trail.
	Deleted bool
	Runs    []runRow
	// Limit is the page size; Cursor the page shown ("" the newest), Next the older page's.
	Limit        int
	Cursor, Next string
	// MaxSeconds is what the run-now form was sent with (shown again after an error).
	MaxSeconds string
	// SuspendDetail and ResumeDetail are what the toggle's confirmation says will happen.
	SuspendDetail, ResumeDetail string
}

// lockHolderRE reads the run that held the lock out of a lock-skipped record's error (written
// by the store: "run <id> of sweep <name> was still running (overlap: skip)").
var lockHolderRE = regexp.MustCompile(`^run ([0-9a-fA-F-]{1,64}) of sweep `)

// lockHolder is the id of the run a lock-skipped run gave way to ("" when the record says none).
func lockHolder(r wire.SweepRun) string {
	if !r.LockSkipped {
		return ""
	}
	if m := lockHolderRE.FindStringSubmatch(r.Error); m != nil {
		return m[1]
	}
	return ""
}

const (
	missingShown    = 10 // missing agents named per run
	missingRunsRead = 10 // runs of a page whose missing agents are read
)

func runRows(runs []wire.SweepRun) []runRow {
	out := make([]runRow, 0, len(runs))
	for _, r := range runs {
		row := runRow{SweepRun: r, Shown: r.DriftedAgents[:min(len(r.DriftedAgents), driftedShown)], Holder: lockHolder(r)}
		row.More = max(r.Drifted, len(r.DriftedAgents)) - len(row.Shown)
		out = append(out, row)
	}
	return out
}

// nameMissing names the missing agents of the first runs of a page that have any (from the
// run's agent records: one indexed read per run).
func (s *Server) nameMissing(ctx context.Context, svc api.Sweeps, rows []runRow) error {
	read := 0
	for i := range rows {
		row := &rows[i]
		if row.SkippedMissing == 0 || read >= missingRunsRead {
			continue
		}
		read++
		d, err := svc.Run(ctx, row.Sweep, row.ID)
		if err != nil {
			return err
		}
		n := 0
		for _, a := range d.Agents {
			if a.State != wire.CheckMissing {
				continue
			}
			if n < missingShown {
				row.Missing = append(row.Missing, wire.SweepAgentRef{ID: a.AgentID, Name: a.AgentName})
			}
			n++
		}
		row.MissingMore = n - len(row.Missing)
	}
	return nil
}

// sweepView reads a sweep's page. A deleted sweep that has runs still has a page (its runs are
// the audit trail); one that never existed is not found.
func (s *Server) sweepView(ctx context.Context, r *http.Request, name string) (*view, error) {
	svc, err := s.sweepService()
	if err != nil {
		return nil, err
	}
	topic := topicSweep + name
	mark, err := s.mark(ctx, topic)
	if err != nil {
		return nil, err
	}
	d := &sweepData{Name: name, Limit: sweepRunsDefault, Cursor: r.URL.Query().Get("cursor")}
	v := &view{Template: "sweep", Title: name, Nav: "sweeps", Live: topic, Mark: mark, Data: d}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > sweepRunsMax {
			v.Error = message(fault.Invalid("limit", "must be a number from 1 to %d, not %q", sweepRunsMax, l))
		} else {
			d.Limit = n
		}
	}
	d.S, err = svc.Get(ctx, name)
	switch {
	case errors.Is(err, fault.ErrNotFound):
		d.Deleted = true
	case err != nil:
		return nil, err
	default:
		d.Spec, _ = sweep.Parse([]byte(d.S.Spec)) // stored specs were valid when applied
		d.SuspendDetail, d.ResumeDetail = suspendDetail(d.S), resumeDetail(d.S)
	}
	runs, next, err := svc.Runs(ctx, name, d.Limit, d.Cursor)
	if errors.Is(err, fault.ErrInvalid) && d.Cursor != "" {
		// A cursor from elsewhere: show the newest runs and say so.
		v.Error, d.Cursor = message(err), ""
		runs, next, err = svc.Runs(ctx, name, d.Limit, "")
	}
	if err != nil {
		return nil, err // a deleted sweep without runs, or one that never was: not found
	}
	d.Runs, d.Next = runRows(runs), next
	if err := s.nameMissing(ctx, svc, d.Runs); err != nil {
		return nil, err
	}
	return v, nil
}

// suspendDetail is what the suspend confirmation says.
func suspendDetail(s wire.SweepSummary) string {
	if s.Schedule == "" {
		return "This sweep has no schedule: suspending it changes nothing until it gets one. Run now still runs it."
	}
	return "No scheduled run fires, on any hub, until the sweep is resumed; Run now still runs it, and a run in progress goes on. " +
		"Applying a spec that sets spec.suspended overrides this."
}

// resumeDetail is what the resume confirmation says will happen to the firings held back.
func resumeDetail(s wire.SweepSummary) string {
	switch {
	case s.Schedule == "":
		return "This sweep has no schedule: it runs only when triggered."
	case s.HeldFirings == 0:
		return "No scheduled firing came due while it was suspended; the schedule goes on from its next firing."
	case s.ResumePolicy == sweep.ResumeMisfire && s.Misfire == sweep.MisfireRunOnce:
		return fmt.Sprintf("%s came due while it was suspended. resumePolicy: misfire with misfire: run_once: one catch-up run starts now.", firings(s.HeldFirings))
	case s.ResumePolicy == sweep.ResumeMisfire:
		return fmt.Sprintf("%s came due while it was suspended. resumePolicy: misfire with misfire: skip: they are recorded as missed, not run.", firings(s.HeldFirings))
	default:
		return fmt.Sprintf("%s came due while it was suspended. resumePolicy: skip: they are not run; the schedule goes on from now.", firings(s.HeldFirings))
	}
}

func firings(n int) string {
	switch {
	case n == 1:
		return "1 scheduled firing"
	case n >= wire.MaxHeldFiringsCounted:
		return fmt.Sprintf("At least %d scheduled firings", n)
	}
	return fmt.Sprintf("%d scheduled firings", n)
}

func (s *Server) sweep(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	name := r.PathValue("name")
	v, err := s.sweepView(r.Context(), r, name)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	run := q.Get("run")
	switch q.Get("done") {
	case "suspended":
		v.Flash = "Sweep " + name + " suspended: no scheduled run fires until it is resumed."
	case "already_suspended":
		v.Notice = "Sweep " + name + " was already suspended; nothing changed."
	case "resumed":
		v.Flash = "Sweep " + name + " resumed."
		if held, _ := strconv.Atoi(q.Get("held")); held > 0 {
			v.Flash += fmt.Sprintf(" %s came due while it was suspended", firings(held))
			if q.Get("policy") == sweep.ResumeMisfire {
				v.Flash += "; the misfire policy handled them (see the runs)."
			} else {
				v.Flash += "; not run (resumePolicy: skip)."
			}
		}
	case "not_suspended":
		v.Notice = "Sweep " + name + " was not suspended; nothing changed."
	case "started":
		v.Flash = "Run " + run + " started."
	case "lock_skipped":
		v.Notice = "Not started: a run of " + name + " is in progress and holds the sweep's lock. This request is recorded as run " +
			run + " with status skipped (lock skipped)."
		for _, rr := range v.Data.(*sweepData).Runs {
			if rr.ID == run && rr.Error != "" {
				v.Notice += " " + rr.Error
			}
		}
	}
	return v, nil
}

// parseMaxSeconds reads the run-now form's budget: empty is the sweep's own.
func parseMaxSeconds(v string) (*int, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > sweep.MaxMaxSeconds {
		return nil, fault.Invalid("max_seconds", "must be a whole number of seconds from 1 to %d, not %q", sweep.MaxMaxSeconds, v)
	}
	return &n, nil
}

// runSweep triggers a run now, through the sweep service (the same path and lock as the API and
// the CLI), recorded as triggered by the session's actor.
func (s *Server) runSweep(w http.ResponseWriter, r *http.Request, c *current) error {
	svc, err := s.sweepService()
	if err != nil {
		return err
	}
	ctx := r.Context()
	name := r.PathValue("name")
	back := "/ui/sweeps/" + url.PathEscape(name)
	raw := r.PostForm.Get("max_seconds")
	// refused shows the sweep's page as it is now, with why (as a refused migration action does).
	refused := func(err error) error {
		code := statusOf(err)
		if code >= 500 || code == http.StatusNotFound {
			return err
		}
		v, verr := s.sweepView(ctx, r, name)
		if verr != nil {
			return err
		}
		v.Error = message(err)
		v.Data.(*sweepData).MaxSeconds = raw
		s.render(w, r, c, code, "", v)
		return nil
	}
	maxSeconds, err := parseMaxSeconds(raw)
	if err != nil {
		return refused(err)
	}
	if r.PostForm.Get("confirm") != "yes" {
		sum, err := svc.Get(ctx, name)
		if err != nil {
			return err
		}
		budget := sum.MaxSeconds
		d := confirmData{Question: "Run sweep " + name + " now?", Action: r.URL.Path, Button: "Run now", Cancel: back}
		if maxSeconds != nil {
			budget = *maxSeconds
			d.Hidden = []hiddenField{{"max_seconds", strconv.Itoa(*maxSeconds)}}
		}
		d.Detail = fmt.Sprintf("Every agent the sweep selects runs its check, with a budget of %d s. "+
			"The run is recorded as triggered by %s. If a run is in progress, nothing starts and the request is recorded as lock skipped.",
			budget, c.Actor())
		s.confirm(w, r, c, d)
		return nil
	}
	run, err := svc.Trigger(ctx, name, wire.SweepTriggerRequest{MaxSeconds: maxSeconds, Trigger: wire.TriggerAPI, By: c.Actor()})
	if err != nil {
		return refused(err)
	}
	done := "started"
	if run.LockSkipped {
		done = "lock_skipped"
	}
	s.log.Info("ui: sweep triggered", "sweep", name, "run", run.ID, "lock_skipped", run.LockSkipped, "actor", c.Actor())
	http.Redirect(w, r, back+"?done="+done+"&run="+url.QueryEscape(run.ID), http.StatusSeeOther)
	return nil
}

// suspendSweep and resumeSweep are the toggle: asked to confirm, then through the sweep service
// (the same path as the API and the CLI), recorded as an operator action by the session's actor.
func (s *Server) suspendSweep(w http.ResponseWriter, r *http.Request, c *current) error {
	return s.toggleSweep(w, r, c, true)
}

func (s *Server) resumeSweep(w http.ResponseWriter, r *http.Request, c *current) error {
	return s.toggleSweep(w, r, c, false)
}

func (s *Server) toggleSweep(w http.ResponseWriter, r *http.Request, c *current, suspend bool) error {
	svc, err := s.sweepService()
	if err != nil {
		return err
	}
	ctx := r.Context()
	name := r.PathValue("name")
	back := "/ui/sweeps/" + url.PathEscape(name)
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	verb := "Resume"
	if suspend {
		verb = "Suspend"
	}
	if r.PostForm.Get("confirm") != "yes" {
		sum, err := svc.Get(ctx, name)
		if err != nil {
			return err
		}
		d := confirmData{Question: verb + " sweep " + name + "?", Action: r.URL.Path, Button: verb, Cancel: back}
		if suspend {
			d.Detail = suspendDetail(sum)
		} else {
			d.Detail = resumeDetail(sum)
		}
		d.Detail += " This is recorded as an operator action by " + c.Actor() + "."
		if reason != "" {
			d.Hidden = []hiddenField{{"reason", reason}}
		}
		s.confirm(w, r, c, d)
		return nil
	}
	req := wire.SweepSuspendRequest{Reason: reason, Via: wire.SuspendViaUI, By: c.Actor()}
	var res wire.SweepSuspendResult
	if suspend {
		res, err = svc.Suspend(ctx, name, req)
	} else {
		res, err = svc.Resume(ctx, name, req)
	}
	if err != nil {
		code := statusOf(err)
		if code >= 500 || code == http.StatusNotFound {
			return err
		}
		v, verr := s.sweepView(ctx, r, name)
		if verr != nil {
			return err
		}
		v.Error = message(err)
		s.render(w, r, c, code, "", v)
		return nil
	}
	s.log.Info("ui: operator action", "sweep", name, "action", strings.ToLower(verb), "outcome", res.Outcome, "actor", c.Actor())
	done := res.Outcome
	switch {
	case res.Outcome == "unchanged" && suspend:
		done = "already_suspended"
	case res.Outcome == "unchanged":
		done = "not_suspended"
	}
	target := query(back, "done", done, "held", res.HeldFirings, "policy", res.ResumePolicy)
	if suspend {
		target = query(back, "done", done)
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
	return nil
}

// ---- how runs are shown ----

// runBadge is a run's status at a glance: drift, errors and lock skips are worth seeing.
func runBadge(r wire.SweepRun) badge {
	switch {
	case r.LockSkipped:
		return badge{"muted", "icon-paused", "lock skipped"}
	case r.Status == wire.SweepRunRunning:
		return badge{"active", "icon-running", "running"}
	case r.Status == wire.SweepRunFailed:
		return badge{"error", "icon-error", "failed"}
	case r.Status == wire.SweepRunMissed:
		return badge{"warning", "icon-pending", "missed"}
	case r.Status == wire.SweepRunCompleted && r.Drifted > 0:
		return badge{"warning", "icon-warning", "completed: drift"}
	case r.Status == wire.SweepRunCompleted && r.Errors > 0:
		return badge{"warning", "icon-warning", "completed: errors"}
	case r.Status == wire.SweepRunCompleted:
		return badge{"ok", "icon-ok", "completed"}
	default:
		return badge{"muted", "icon-revoked", strings.ReplaceAll(r.Status, "_", " ")}
	}
}

// inFlight is how many of a run's agents have not answered yet.
func inFlight(r wire.SweepRun) int {
	return max(0, r.Matched-r.Processed-r.SkippedClean-r.SkippedMissing-r.SkippedBudget)
}

// until says how far ahead t is ("in 4m"), for next firings.
func until(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Until(t)
	switch {
	case d <= 0:
		return "due now"
	case d < time.Minute:
		return fmt.Sprintf("in %ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("in %dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("in %dh", int(d.Hours()))
	default:
		return fmt.Sprintf("in %dd", int(d.Hours()/24))
	}
}

// inZone is t as a wall-clock time in the sweep's time zone ("" for UTC or an unknown zone).
func inZone(t time.Time, zone string) string {
	if t.IsZero() || zone == "" || zone == "UTC" {
		return ""
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return ""
	}
	return t.In(loc).Format("2006-01-02 15:04 MST")
}

// ---- live marks ----

// runMark is what of a run the pages show: its status and counts (not its update time).
func runMark(r wire.SweepRun) string {
	return fmt.Sprintf("%s:%s:%d.%d.%d.%d.%d.%d", r.ID, r.Status, r.Matched, r.Processed, r.SkippedClean, r.SkippedMissing,
		r.SkippedBudget, r.Drifted)
}

// sweepsMark changes when the sweeps list changes: a sweep applied, changed, rescheduled or
// deleted, a new run of any sweep (also a lock-skipped or missed record), or a running run
// moving on or ending. name "" is the list; else one sweep's page.
func (s *Server) sweepsMark(ctx context.Context, name string) (string, error) {
	st := s.cfg.Store
	var parts []string
	if name == "" {
		sws, err := st.ListSweeps(ctx)
		if err != nil {
			return "", err
		}
		for _, sw := range sws {
			parts = append(parts, fmt.Sprintf("%s:%d:%d", sw.Name, sw.Version, sw.NextFireAt.Unix()))
		}
	} else {
		sw, err := st.GetSweep(ctx, name)
		if err != nil && !errors.Is(err, fault.ErrNotFound) {
			return "", err
		}
		parts = append(parts, fmt.Sprintf("%d:%d", sw.Version, sw.NextFireAt.Unix()))
	}
	latest, _, err := st.ListRuns(ctx, store.RunQuery{Sweep: name, Limit: 1})
	if err != nil {
		return "", err
	}
	for _, r := range latest {
		parts = append(parts, runMark(r))
	}
	// A sweep has at most one running run (its lock). When it is the latest run, it is in the
	// mark already; an older one (lock-skipped records came after it) is found here.
	if name != "" && len(latest) == 1 && latest[0].Status == wire.SweepRunRunning {
		return strings.Join(parts, "|"), nil
	}
	running, err := st.RunningRuns(ctx)
	if err != nil {
		return "", err
	}
	for _, r := range running {
		if name == "" || r.Sweep == name {
			parts = append(parts, runMark(r))
		}
	}
	return strings.Join(parts, "|"), nil
}

// ---- one run ----

type sweepRunData struct {
	Name   string
	Run    wire.SweepRunDetail
	Holder string
	// ByState lists the run's agents by what their check found, the states worth a look first.
	ByState []runAgents
	States  map[string]store.AgentState
}

type runAgents struct {
	State  string
	Agents []wire.SweepRunAgent
}

// runStateOrder is the order of a run's agent groups: what needs a look first.
var runStateOrder = []string{wire.CheckDrifted, wire.CheckError, wire.CheckMissing, wire.CheckBudget,
	wire.CheckRunning, wire.CheckDispatched, wire.CheckPending, wire.CheckClean}

func (s *Server) sweepRun(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	svc, err := s.sweepService()
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	name, id := r.PathValue("name"), r.PathValue("id")
	topic := topicSweep + name
	mark, err := s.mark(ctx, topic)
	if err != nil {
		return nil, err
	}
	run, err := svc.Run(ctx, name, id)
	if err != nil {
		return nil, err
	}
	d := &sweepRunData{Name: name, Run: run, Holder: lockHolder(run.SweepRun)}
	groups := map[string][]wire.SweepRunAgent{}
	ids := make([]string, 0, len(run.Agents))
	for _, a := range run.Agents {
		groups[a.State] = append(groups[a.State], a)
		ids = append(ids, a.AgentID)
	}
	for _, st := range runStateOrder {
		if len(groups[st]) > 0 {
			d.ByState = append(d.ByState, runAgents{st, groups[st]})
			delete(groups, st)
		}
	}
	for st, as := range groups {
		d.ByState = append(d.ByState, runAgents{st, as})
	}
	if d.States, err = s.agentStates(ctx, ids); err != nil {
		return nil, err
	}
	return &view{Template: "sweeprun", Title: "Run " + id, Nav: "sweeps", Live: topic, Mark: mark, Data: d}, nil
}

// lastCheck is a sweep's newest run that ended having checked agents: lock-skipped records,
// missed firings and a run in progress are passed over (a few runs are read at most).
func (s *Server) lastCheck(ctx context.Context, sw wire.SweepSummary) (*wire.SweepRun, error) {
	checked := func(r *wire.SweepRun) bool {
		return r.Final() && !r.LockSkipped && r.Status != wire.SweepRunMissed
	}
	if sw.LastRun == nil || checked(sw.LastRun) {
		return sw.LastRun, nil
	}
	runs, _, err := s.cfg.Sweeps.Runs(ctx, sw.Name, 10, "")
	if err != nil {
		return nil, err
	}
	for i := range runs {
		if checked(&runs[i]) {
			return &runs[i], nil
		}
	}
	return nil, nil
}
