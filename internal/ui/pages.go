package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/controller"
	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/migration/state"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Page sizes. Every listing is a keyset page of the store (or of the dead-letter stream).
const (
	agentsPerPage      = 50
	eventsPerPage      = 50
	migrationsPerPage  = 50
	deadLettersPerPage = 50
	gridPerPage        = 400
	dashboardErrors    = 10
	migrationEvents    = 15
	groupAgentsShown   = 20
)

// ---- dashboard ----

type stateCount struct {
	State string
	Count int
}

type dashboardData struct {
	Agents      map[string]int
	AgentsTotal int
	Migrations  []stateCount // every state that occurs, in lifecycle order
	Running     int
	Paused      int
	Failed      int
	Errors      []store.StoredEvent
	Names       map[string]string
	Ingest      *wire.IngestStatus
	IngestError string
}

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	ctx := r.Context()
	mark, err := s.mark(ctx, topicDashboard)
	if err != nil {
		return nil, err
	}
	d := dashboardData{}
	if d.Agents, err = s.cfg.Store.CountAgentsByStatus(ctx); err != nil {
		return nil, err
	}
	for _, n := range d.Agents {
		d.AgentsTotal += n
	}
	ms, err := s.cfg.Store.CountMigrationsByState(ctx)
	if err != nil {
		return nil, err
	}
	for _, st := range state.MigrationStates() {
		if n := ms[string(st)]; n > 0 {
			d.Migrations = append(d.Migrations, stateCount{string(st), n})
		}
	}
	d.Running, d.Paused, d.Failed = ms[string(state.MigrationRunning)],
		ms[string(state.MigrationPaused)], ms[string(state.MigrationFailed)]
	if d.Errors, _, err = s.cfg.Store.QueryEvents(ctx, store.EventQuery{Severities: []string{wire.SeverityError}, Limit: dashboardErrors}); err != nil {
		return nil, err
	}
	if d.Names, err = s.names(ctx, d.Errors); err != nil {
		return nil, err
	}
	d.Ingest, d.IngestError = s.ingestStatus(ctx)
	return &view{Template: "dashboard", Title: "Dashboard", Nav: "dashboard", Live: topicDashboard, Mark: mark, Data: d}, nil
}

func (s *Server) ingestStatus(ctx context.Context) (*wire.IngestStatus, string) {
	if s.cfg.Pipeline == nil {
		return nil, "the event pipeline is not running on this hub"
	}
	st, err := s.cfg.Pipeline.Status(ctx)
	if err != nil {
		return nil, err.Error()
	}
	return &st, ""
}

// names maps the agents of events to their names.
func (s *Server) names(ctx context.Context, events []store.StoredEvent) (map[string]string, error) {
	var ids []string
	seen := map[string]bool{}
	for _, e := range events {
		if id := e.Data.AgentID; id != "" && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return s.cfg.Store.AgentNames(ctx, ids)
}

// ---- agents ----

type agentsData struct {
	Status, Label, Search string
	Counts                map[string]int
	Agents                []wire.Agent
	Cursor, Next          string
}

// parseLabels reads "k=v, k2=v2".
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fault.Invalid("label", "%q is not key=value", part)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

func (s *Server) agents(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	ctx := r.Context()
	q := r.URL.Query()
	d := agentsData{Status: q.Get("status"), Label: q.Get("label"), Search: strings.TrimSpace(q.Get("q")), Cursor: q.Get("cursor")}
	v := &view{Template: "agents", Title: "Agents", Nav: "agents", Live: topicAgents, Data: &d}
	var err error
	if v.Mark, err = s.mark(ctx, topicAgents); err != nil {
		return nil, err
	}
	if d.Counts, err = s.cfg.Store.CountAgentsByStatus(ctx); err != nil {
		return nil, err
	}
	labels, err := parseLabels(d.Label)
	if err != nil {
		v.Error = message(err)
		return v, nil
	}
	d.Agents, d.Next, err = s.cfg.Store.PageAgents(ctx, store.AgentQuery{Status: d.Status, Labels: labels, Search: d.Search,
		Limit: agentsPerPage, Cursor: d.Cursor})
	if err != nil {
		if statusOf(err) == http.StatusBadRequest {
			v.Error = message(err)
			return v, nil
		}
		return nil, err
	}
	return v, nil
}

// ---- event history (agent page and fleet-wide) ----

type historyData struct {
	Path             string // where the filter form and pages go
	Agent            string // fixed agent (agent page) or the filter (fleet page)
	FixedAgent       bool
	Type, Migration  string
	Since, Until     string
	Severities       map[string]bool
	Events           []store.StoredEvent
	Names            map[string]string
	Cursor, Next     string
	Error            string
	TypeOptions      []string
	MigrationOptions []string
	SeverityList     []string
}

// typeOptions are the type filter's choices: groups by prefix, then every known type.
func typeOptions() []string {
	out := []string{"migration.*", "migration.detection.*", "migration.execution.*", "migration.verification.*",
		"migration.rollback.*", "migration.step.*", "agent.*", "operator.*", "sweep.*", "failover.*"}
	var known []string
	for t := range wire.KnownEventTypes {
		known = append(known, t)
	}
	sort.Strings(known)
	return append(out, known...)
}

var localTimeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02 15:04:05", "2006-01-02"}

// normalizeInstant accepts what people type besides RFC 3339 and durations: a date and time
// without zone (taken as UTC).
func normalizeInstant(s string) string {
	s = strings.TrimSpace(s)
	for _, l := range localTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC().Format(time.RFC3339)
		}
	}
	return s
}

// history reads one page of events with the filters of the request (agent fixed when agentID is
// not empty).
func (s *Server) history(ctx context.Context, r *http.Request, path, agentID string) (*historyData, error) {
	q := r.URL.Query()
	h := &historyData{Path: path, Agent: agentID, FixedAgent: agentID != "", Type: strings.TrimSpace(q.Get("type")),
		Migration: strings.TrimSpace(q.Get("migration")), Since: strings.TrimSpace(q.Get("since")), Until: strings.TrimSpace(q.Get("until")),
		Cursor: q.Get("cursor"), Severities: map[string]bool{}, TypeOptions: typeOptions(),
		SeverityList: []string{wire.SeverityError, wire.SeverityWarning, wire.SeverityInfo}}
	if !h.FixedAgent {
		h.Agent = strings.TrimSpace(q.Get("agent"))
	}
	var sevs []string
	for _, sv := range q["severity"] {
		for _, p := range strings.Split(sv, ",") {
			if p = strings.TrimSpace(p); p != "" && !h.Severities[p] {
				h.Severities[p] = true
				sevs = append(sevs, p)
			}
		}
	}
	params := url.Values{}
	set := func(k, v string) {
		if v != "" {
			params.Set(k, v)
		}
	}
	set("agent", h.Agent)
	set("migration", h.Migration)
	set("type", h.Type)
	set("severity", strings.Join(sevs, ","))
	set("since", normalizeInstant(h.Since))
	set("until", normalizeInstant(h.Until))
	set("cursor", h.Cursor)
	params.Set("limit", strconv.Itoa(eventsPerPage))
	eq, err := api.ParseEventQuery(params, s.now())
	if err != nil {
		h.Error = message(err)
		return h, nil
	}
	h.Events, h.Next, err = s.cfg.Store.QueryEvents(ctx, eq)
	if err != nil {
		if statusOf(err) == http.StatusBadRequest {
			h.Error = message(err)
			return h, nil
		}
		return nil, err
	}
	if h.Names, err = s.names(ctx, h.Events); err != nil {
		return nil, err
	}
	return h, nil
}

type agentData struct {
	Agent       wire.Agent
	Assignments []store.Assignment
	History     *historyData
}

func (s *Server) agent(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	ctx := r.Context()
	id := r.PathValue("id")
	topic := topicAgent + id
	mark, err := s.mark(ctx, topic)
	if err != nil {
		return nil, err
	}
	a, err := s.cfg.Store.GetAgent(ctx, id)
	if err != nil {
		return nil, err
	}
	d := agentData{Agent: a}
	if d.Assignments, err = s.cfg.Store.AgentAssignments(ctx, id, 100); err != nil {
		return nil, err
	}
	if d.History, err = s.history(ctx, r, "/ui/agents/"+url.PathEscape(id), id); err != nil {
		return nil, err
	}
	for _, as := range d.Assignments {
		d.History.MigrationOptions = append(d.History.MigrationOptions, as.Migration)
	}
	slices.Sort(d.History.MigrationOptions)
	return &view{Template: "agent", Title: a.Name, Nav: "agents", Live: topic, Mark: mark, Data: d}, nil
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	ctx := r.Context()
	mark, err := s.mark(ctx, topicEvents)
	if err != nil {
		return nil, err
	}
	h, err := s.history(ctx, r, "/ui/events", "")
	if err != nil {
		return nil, err
	}
	return &view{Template: "events", Title: "Events", Nav: "events", Live: topicEvents, Mark: mark, Data: h}, nil
}

// ---- migrations ----

type migrationsData struct {
	State        string
	States       []string
	Counts       map[string]int
	Migrations   []store.Migration
	Cursor, Next string
}

func (s *Server) migrations(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	ctx := r.Context()
	q := r.URL.Query()
	d := migrationsData{State: q.Get("state"), Cursor: q.Get("cursor")}
	for _, st := range state.MigrationStates() {
		d.States = append(d.States, string(st))
	}
	v := &view{Template: "migrations", Title: "Migrations", Nav: "migrations", Live: topicMigrations, Data: &d}
	var err error
	if v.Mark, err = s.mark(ctx, topicMigrations); err != nil {
		return nil, err
	}
	if d.State != "" && !state.MigrationState(d.State).Valid() {
		v.Error = message(fault.Invalid("state", "%q is not a migration state", d.State))
		return v, nil
	}
	if d.Counts, err = s.cfg.Store.CountMigrationsByState(ctx); err != nil {
		return nil, err
	}
	d.Migrations, d.Next, err = s.cfg.Store.PageMigrations(ctx, store.MigrationQuery{State: d.State, Limit: migrationsPerPage, Cursor: d.Cursor})
	if err != nil {
		if statusOf(err) == http.StatusBadRequest {
			v.Error = message(err)
			return v, nil
		}
		return nil, err
	}
	return v, nil
}

// segment is one coloured part of a batch's progress bar.
type segment struct {
	Class, Label string
	Count        int
	X, W         float64 // percent
}

type batchView struct {
	Number   int // from 1
	Canary   bool
	Total    int
	Current  bool
	Segments []segment
}

type gridCell struct {
	AgentID, Name, State string
	Attempt, Batch       int
	Step, Error          string
}

type agentRef struct{ ID, Name string }

type failureView struct {
	controller.FailureGroup
	Shown []agentRef
	More  int
}

type actionButton struct {
	Action, Label, Question, Detail string
	Danger                          bool
}

type migrationData struct {
	D           controller.Description
	Batches     []batchView
	Grid        []gridCell
	GridState   string
	GridStates  []stateCount
	GridPage    int
	GridPages   int
	GridTotal   int
	Failures    []failureView
	Actions     []actionButton
	Events      []store.StoredEvent
	Names       map[string]string
	Unavailable bool
}

// Progress bar groups of assignment states, in bar order.
var segmentOrder = []struct {
	class, label string
	states       []string
}{
	{"ok", "done", []string{"succeeded", "not_needed"}},
	{"error", "failed", []string{"failed", "timed_out", "rollback_failed"}},
	{"rolledback", "rolled back", []string{"rolled_back"}},
	{"active", "in progress", []string{"detecting", "applying", "verifying", "rolling_back", "agent_unreachable"}},
	{"muted", "not started", []string{"pending", "superseded"}},
}

func batchBar(b controller.BatchProgress) []segment {
	var out []segment
	x := 0.0
	for _, g := range segmentOrder {
		n := 0
		for _, st := range g.states {
			n += b.States[st]
		}
		if n == 0 {
			continue
		}
		w := pct(n, b.Total)
		out = append(out, segment{Class: g.class, Label: g.label, Count: n, X: x, W: w})
		x += w
	}
	return out
}

// migrationActions lists the actions that make sense in the migration's state; the controller
// checks again when one is taken.
func migrationActions(d controller.Description, manualApproval bool) []actionButton {
	m := d.Migration
	from := state.MigrationState(m.State)
	can := func(to state.MigrationState) bool { return to != from && state.CheckMigration(from, to) == nil }
	failures := len(d.Failures) > 0
	var out []actionButton
	if can(state.MigrationPaused) {
		out = append(out, actionButton{string(controller.Pause), "Pause", "Pause migration " + m.Name + "?",
			"No new agent starts; steps already running finish.", false})
	}
	if from == state.MigrationPaused {
		out = append(out, actionButton{string(controller.Resume), "Resume", "Resume migration " + m.Name + "?",
			"The rollout continues where it stopped.", false})
	}
	if manualApproval && (from == state.MigrationRunning || from == state.MigrationPaused) && m.CurrentBatch+1 < m.Batches && m.ApprovedBatch <= m.CurrentBatch {
		out = append(out, actionButton{string(controller.Approve), fmt.Sprintf("Approve batch %d", m.CurrentBatch+2),
			fmt.Sprintf("Approve batch %d of %s?", m.CurrentBatch+2, m.Name), "The next batch of agents starts.", false})
	}
	if failures && from.Final() && can(state.MigrationRunning) {
		out = append(out, actionButton{string(controller.RetryFailed), "Retry failed", "Retry the failed agents of " + m.Name + "?",
			"Each failed agent gets a new attempt; the migration runs again.", false})
	}
	if can(state.MigrationRollingBack) || from == state.MigrationFailed {
		out = append(out, actionButton{string(controller.Rollback), "Roll back", "Roll back migration " + m.Name + "?",
			"Every agent that changed runs its rollback commands, last step first.", true})
	}
	if can(state.MigrationCancelled) {
		out = append(out, actionButton{string(controller.Abort), "Abort", "Abort migration " + m.Name + "?",
			"Agents not started are superseded and running steps are cancelled. Applied steps stay until you roll back.", true})
	}
	return out
}

// latestAttempts points at the latest attempt of every agent, in first-seen order.
func latestAttempts(as []store.Assignment) []*store.Assignment {
	at := make(map[string]int, len(as))
	out := make([]*store.Assignment, 0, len(as))
	for i := range as {
		a := &as[i]
		if j, ok := at[a.AgentID]; ok {
			if a.Attempt > out[j].Attempt {
				out[j] = a
			}
			continue
		}
		at[a.AgentID] = len(out)
		out = append(out, a)
	}
	return out
}

func (s *Server) migrationView(ctx context.Context, r *http.Request, name string) (*view, error) {
	topic := topicMigration + name
	mark, err := s.mark(ctx, topic)
	if err != nil {
		return nil, err
	}
	d := &migrationData{}
	v := &view{Template: "migration", Title: name, Nav: "migrations", Live: topic, Mark: mark, Data: d}
	if s.cfg.Migrations == nil {
		m, err := s.cfg.Store.GetMigration(ctx, name)
		if err != nil {
			return nil, err
		}
		d.D.Migration, d.Unavailable = m, true
		return v, nil
	}
	if d.D, err = s.cfg.Migrations.Describe(ctx, name); err != nil {
		return nil, err
	}
	m := d.D.Migration
	sp, _ := spec.Parse([]byte(m.Spec)) // stored specs were valid when applied; nil only if not
	canary := sp != nil && sp.Spec.Rollout.Canary > 0
	for _, b := range d.D.Batches {
		d.Batches = append(d.Batches, batchView{Number: b.Batch + 1, Canary: canary && b.Batch == 0,
			Total: b.Total, Current: b.Batch == m.CurrentBatch, Segments: batchBar(b)})
	}
	d.Actions = migrationActions(d.D, sp != nil && sp.Spec.Rollout.Approval == spec.ApprovalManual)

	// The per-agent grid: latest attempts, by batch then agent, one page at a time.
	q := r.URL.Query()
	d.GridState = q.Get("grid")
	latest := latestAttempts(d.D.Assignments)
	counts := map[string]int{}
	cells := make([]*store.Assignment, 0, len(latest))
	for _, a := range latest {
		counts[a.State]++
		if d.GridState == "" || a.State == d.GridState {
			cells = append(cells, a)
		}
	}
	for _, st := range state.AssignmentStates() {
		if n := counts[string(st)]; n > 0 {
			d.GridStates = append(d.GridStates, stateCount{string(st), n})
		}
	}
	d.GridTotal = len(cells)
	d.GridPages = max(1, (len(cells)+gridPerPage-1)/gridPerPage)
	d.GridPage, _ = strconv.Atoi(q.Get("page"))
	d.GridPage = min(max(d.GridPage, 1), d.GridPages)
	cells = cells[min((d.GridPage-1)*gridPerPage, len(cells)):min(d.GridPage*gridPerPage, len(cells))]

	// Names only for what the page shows: this grid page and the first agents of each group.
	ids := make([]string, 0, len(cells))
	for _, a := range cells {
		ids = append(ids, a.AgentID)
	}
	for _, f := range d.D.Failures {
		ids = append(ids, f.Agents[:min(len(f.Agents), groupAgentsShown)]...)
	}
	if d.Events, _, err = s.cfg.Store.QueryEvents(ctx, store.EventQuery{Migration: name, Limit: migrationEvents}); err != nil {
		return nil, err
	}
	for _, e := range d.Events {
		if e.Data.AgentID != "" {
			ids = append(ids, e.Data.AgentID)
		}
	}
	if d.Names, err = s.cfg.Store.AgentNames(ctx, ids); err != nil {
		return nil, err
	}
	for _, a := range cells {
		d.Grid = append(d.Grid, gridCell{AgentID: a.AgentID, Name: nameOr(d.Names, a.AgentID), State: a.State, Attempt: a.Attempt,
			Batch: a.Batch + 1, Step: a.StepName, Error: firstLine(firstNonEmpty(a.Error, a.Failure))})
	}
	sort.SliceStable(d.Grid, func(i, j int) bool {
		if d.Grid[i].Batch != d.Grid[j].Batch {
			return d.Grid[i].Batch < d.Grid[j].Batch
		}
		return d.Grid[i].Name < d.Grid[j].Name
	})
	for _, f := range d.D.Failures {
		fv := failureView{FailureGroup: f, More: max(0, len(f.Agents)-groupAgentsShown)}
		for _, id := range f.Agents[:min(len(f.Agents), groupAgentsShown)] {
			fv.Shown = append(fv.Shown, agentRef{id, nameOr(d.Names, id)})
		}
		d.Failures = append(d.Failures, fv)
	}
	return v, nil
}

func nameOr(names map[string]string, id string) string {
	if n := names[id]; n != "" {
		return n
	}
	return id
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

var doneMessages = map[string]string{
	"pause":    "Paused: no new agent starts; steps already running finish.",
	"resume":   "Resumed.",
	"approve":  "Next batch approved.",
	"abort":    "Aborted.",
	"rollback": "Rollback started.",
	"retry":    "Failed agents are being retried.",
}

func (s *Server) migration(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	v, err := s.migrationView(r.Context(), r, r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	v.Flash = doneMessages[r.URL.Query().Get("done")]
	return v, nil
}

// confirmData is a confirmation page: the form repeats the request with confirm=yes.
type confirmData struct {
	Question, Detail string
	Action, Button   string
	Cancel           string
	Danger           bool
	// Hidden are form fields the confirmed post carries again (besides csrf and confirm).
	Hidden []hiddenField
}

type hiddenField struct{ Name, Value string }

func (s *Server) confirm(w http.ResponseWriter, r *http.Request, c *current, d confirmData) {
	s.render(w, r, c, http.StatusOK, "", &view{Template: "confirm", Title: "Confirm", Data: d})
}

func (s *Server) actOnMigration(w http.ResponseWriter, r *http.Request, c *current) error {
	name := r.PathValue("name")
	act := controller.Action(r.PathValue("action"))
	var button *actionButton
	for _, b := range []actionButton{
		{Action: "pause", Label: "Pause"}, {Action: "resume", Label: "Resume"}, {Action: "approve", Label: "Approve next batch"},
		{Action: "abort", Label: "Abort", Danger: true}, {Action: "rollback", Label: "Roll back", Danger: true},
		{Action: "retry", Label: "Retry failed"},
	} {
		if b.Action == string(act) {
			button = &b
		}
	}
	if button == nil {
		return fault.Invalid("action", "%q is not one of pause, resume, approve, abort, rollback, retry", act)
	}
	if s.cfg.Migrations == nil {
		return fmt.Errorf("the migration controller is not running on this hub: %w", fault.ErrUnavailable)
	}
	back := "/ui/migrations/" + url.PathEscape(name)
	if r.PostForm.Get("confirm") != "yes" {
		s.confirm(w, r, c, confirmData{Question: fmt.Sprintf("%s migration %s?", button.Label, name),
			Detail: "This is recorded as an operator action by " + c.Actor() + ".", Action: r.URL.Path, Button: button.Label,
			Cancel: back, Danger: button.Danger})
		return nil
	}
	if _, err := s.cfg.Migrations.Act(r.Context(), name, act, c.Actor()); err != nil {
		code := statusOf(err)
		if code >= 500 {
			return err
		}
		// Show the page as it is now, with why the action was refused.
		v, verr := s.migrationView(r.Context(), r, name)
		if verr != nil {
			return err
		}
		v.Error = message(err)
		s.render(w, r, c, code, "", v)
		return nil
	}
	s.log.Info("ui: operator action", "migration", name, "action", act, "actor", c.Actor())
	http.Redirect(w, r, back+"?done="+url.QueryEscape(string(act)), http.StatusSeeOther)
	return nil
}

// ---- dead letters ----

type deadLettersData struct {
	Items       []wire.DeadLetter
	After, Next uint64
	Ingest      *wire.IngestStatus
	IngestError string
}

func (s *Server) pipeline() (api.Pipeline, error) {
	if s.cfg.Pipeline == nil {
		return nil, fmt.Errorf("the event pipeline is not running on this hub: %w", fault.ErrUnavailable)
	}
	return s.cfg.Pipeline, nil
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	ctx := r.Context()
	p, err := s.pipeline()
	if err != nil {
		return nil, err
	}
	mark, err := s.mark(ctx, topicDeadLetters)
	if err != nil {
		return nil, err
	}
	d := deadLettersData{}
	v := &view{Template: "deadletters", Title: "Dead letters", Nav: "dlq", Live: topicDeadLetters, Mark: mark, Data: &d}
	if a := r.URL.Query().Get("after"); a != "" {
		if d.After, err = strconv.ParseUint(a, 10, 64); err != nil {
			v.Error = message(fault.Invalid("after", "%q is not a sequence number", a))
			return v, nil
		}
	}
	if d.Items, err = p.DeadLetters(ctx, d.After, deadLettersPerPage); err != nil {
		return nil, err
	}
	if len(d.Items) == deadLettersPerPage {
		d.Next = d.Items[len(d.Items)-1].Seq
	}
	d.Ingest, d.IngestError = s.ingestStatus(ctx)
	switch q := r.URL.Query(); q.Get("done") {
	case "replayed":
		v.Flash = "Dead letter " + q.Get("seq") + " replayed: it is back in the event stream."
	case "purged":
		v.Flash = "Purged " + q.Get("n") + " dead letter(s)."
	}
	return v, nil
}

func seqOf(r *http.Request) (uint64, error) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		return 0, fault.Invalid("seq", "%q is not a dead-letter sequence number", r.PathValue("seq"))
	}
	return seq, nil
}

func (s *Server) deadLetter(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	p, err := s.pipeline()
	if err != nil {
		return nil, err
	}
	seq, err := seqOf(r)
	if err != nil {
		return nil, err
	}
	dl, err := p.DeadLetter(r.Context(), seq)
	if err != nil {
		return nil, err
	}
	return &view{Template: "deadletter", Title: fmt.Sprintf("Dead letter %d", seq), Nav: "dlq", Data: dl}, nil
}

func (s *Server) actOnDeadLetter(w http.ResponseWriter, r *http.Request, c *current) error {
	p, err := s.pipeline()
	if err != nil {
		return err
	}
	seq, err := seqOf(r)
	if err != nil {
		return err
	}
	action := r.PathValue("action")
	if action != "replay" && action != "purge" {
		return fault.Invalid("action", "%q is not replay or purge", action)
	}
	if r.PostForm.Get("confirm") != "yes" {
		d := confirmData{Question: fmt.Sprintf("Replay dead letter %d?", seq),
			Detail: "It is published again to the event stream with its original id; the ingest stores it once.",
			Action: r.URL.Path, Button: "Replay", Cancel: fmt.Sprintf("/ui/dead-letters/%d", seq)}
		if action == "purge" {
			d.Question, d.Detail, d.Button, d.Danger = fmt.Sprintf("Purge dead letter %d?", seq), "Its payload is deleted for good.", "Purge", true
		}
		s.confirm(w, r, c, d)
		return nil
	}
	if action == "replay" {
		if err := p.Replay(r.Context(), seq); err != nil {
			return err
		}
		s.log.Info("ui: dead letter replayed", "seq", seq, "actor", c.Actor())
		http.Redirect(w, r, fmt.Sprintf("/ui/dead-letters?done=replayed&seq=%d", seq), http.StatusSeeOther)
		return nil
	}
	n, err := p.Purge(r.Context(), seq)
	if err != nil {
		return err
	}
	s.log.Info("ui: dead letter purged", "seq", seq, "actor", c.Actor())
	http.Redirect(w, r, fmt.Sprintf("/ui/dead-letters?done=purged&n=%d", n), http.StatusSeeOther)
	return nil
}

func (s *Server) purgeDeadLetters(w http.ResponseWriter, r *http.Request, c *current) error {
	p, err := s.pipeline()
	if err != nil {
		return err
	}
	if r.PostForm.Get("confirm") != "yes" {
		s.confirm(w, r, c, confirmData{Question: "Purge every dead letter?", Detail: "Every payload now in the dead-letter stream is deleted for good.",
			Action: r.URL.Path, Button: "Purge all", Cancel: "/ui/dead-letters", Danger: true})
		return nil
	}
	n, err := p.Purge(r.Context(), 0)
	if err != nil {
		return err
	}
	s.log.Info("ui: dead letters purged", "count", n, "actor", c.Actor())
	http.Redirect(w, r, fmt.Sprintf("/ui/dead-letters?done=purged&n=%d", n), http.StatusSeeOther)
	return nil
}
