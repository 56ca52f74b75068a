package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/manifest"
	"godwit.dev/godwit/internal/migration/controller"
	"godwit.dev/godwit/internal/migration/plan"
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
	// Attention lists agents whose rollback failed (first attentionShown), AttentionTotal all.
	Attention      []attentionAgent
	AttentionTotal int
	AttentionMore  int
	// Drift lists the sweeps whose latest finished run found drift, errors or missing agents.
	Drift      []wire.SweepSummary
	SweepError string
	Chart      *errorChart
	Leadership *wire.HubLeadership
	Replicas   []wire.HubReplica
}

type attentionAgent struct {
	ID, Name   string
	Migrations []string
}

const attentionShown = 10

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
	if d.Replicas, err = s.cfg.Store.ListReplicas(ctx); err != nil {
		return nil, err
	}
	if s.cfg.Leadership != nil {
		d.Leadership = s.cfg.Leadership()
	}
	if d.Chart, err = s.errorsChart(ctx, r, "/ui/", ""); err != nil {
		return nil, err
	}
	broken, err := s.cfg.Store.RollbackFailures(ctx, nil)
	if err != nil {
		return nil, err
	}
	d.AttentionTotal = len(broken)
	d.AttentionMore = max(0, len(broken)-attentionShown)
	ids := make([]string, 0, len(broken))
	for id := range broken {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ids = ids[:min(len(ids), attentionShown)]
	states, err := s.agentStates(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		d.Attention = append(d.Attention, attentionAgent{ID: id, Name: nameOr(map[string]string{id: states[id].Name}, id), Migrations: broken[id]})
	}
	if s.cfg.Sweeps == nil {
		d.SweepError = "the sweep service is not running on this hub"
	} else if sweeps, err := s.cfg.Sweeps.List(ctx); err != nil {
		d.SweepError = message(err)
	} else {
		for _, sw := range sweeps {
			r, err := s.lastCheck(ctx, sw)
			if err != nil {
				return nil, err
			}
			if r != nil && (r.Drifted > 0 || r.Errors > 0 || r.SkippedMissing > 0 || r.Status == wire.SweepRunFailed) {
				sw.LastRun = r
				d.Drift = append(d.Drift, sw)
			}
		}
	}
	return &view{Template: "dashboard", Title: "Dashboard", Nav: "dashboard", Live: topicDashboard, Mark: mark, Data: d}, nil
}

func (s *Server) ingestStatus(ctx context.Context) (*wire.IngestStatus, string) {
	if s.cfg.Pipeline == nil {
		return nil, "the event pipeline is not running on this hub"
	}
	st, err := api.IngestStatus(ctx, s.cfg.Pipeline)
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
	// Attention maps the listed agents whose rollback failed to those migrations.
	Attention map[string][]string
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
	ids := make([]string, len(d.Agents))
	for i, a := range d.Agents {
		ids[i] = a.ID
	}
	if d.Attention, err = s.cfg.Store.RollbackFailures(ctx, ids); err != nil {
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
	// AgentOptions are the fleet's agent names the agent filter suggests (the first
	// agentOptionsMax by name); AgentName the name of the filtered agent.
	AgentOptions []string
	AgentName    string
}

// agentOptionsMax bounds the agent names a filter suggests (a datalist of the whole of a large
// fleet would weigh more than the page).
const agentOptionsMax = 1000

// migrationOptionsMax bounds the migrations a filter lists (the newest).
const migrationOptionsMax = 200

// resolveAgent reads the agent filter: an agent's id, or its name (names are unique). An
// unknown value is kept as it is: it matches no event.
func (s *Server) resolveAgent(ctx context.Context, v string) (id, name string, err error) {
	if v == "" {
		return "", "", nil
	}
	if a, err := s.cfg.Store.GetAgent(ctx, v); err == nil {
		return a.ID, a.Name, nil
	} else if statusOf(err) != http.StatusNotFound {
		return "", "", err
	}
	as, _, err := s.cfg.Store.PageAgents(ctx, store.AgentQuery{Search: v, Limit: 100})
	if err != nil {
		return "", "", err
	}
	for _, a := range as {
		if a.Name == v {
			return a.ID, a.Name, nil
		}
	}
	return v, "", nil
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
	filterID := h.Agent
	if !h.FixedAgent {
		var err error
		if filterID, h.AgentName, err = s.resolveAgent(ctx, h.Agent); err != nil {
			return nil, err
		}
		if h.AgentName == "" && h.Agent != "" {
			h.Error = message(fault.Invalid("agent", "no agent is named %q or has that id", h.Agent))
		}
		names, _, err := s.cfg.Store.PageAgents(ctx, store.AgentQuery{Limit: agentOptionsMax})
		if err != nil {
			return nil, err
		}
		for _, a := range names {
			h.AgentOptions = append(h.AgentOptions, a.Name)
		}
		ms, _, err := s.cfg.Store.PageMigrations(ctx, store.MigrationQuery{Limit: migrationOptionsMax})
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			h.MigrationOptions = append(h.MigrationOptions, m.Name)
		}
		slices.Sort(h.MigrationOptions)
	}
	set("agent", filterID)
	set("migration", h.Migration)
	set("type", h.Type)
	set("severity", strings.Join(sevs, ","))
	set("since", normalizeInstant(h.Since))
	set("until", normalizeInstant(h.Until))
	set("cursor", h.Cursor)
	params.Set("limit", strconv.Itoa(eventsPerPage))
	if h.Error != "" {
		return h, nil
	}
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
	Assignments []wire.Assignment
	History     *historyData
	// Attention lists the migrations whose rollback failed on the agent.
	Attention []string
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
	for _, as := range d.Assignments {
		if as.State == "rollback_failed" {
			d.Attention = append(d.Attention, as.Migration)
		}
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
	Migrations   []wire.Migration
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
	if n := q.Get("deleted"); validName(n) {
		v.Flash = "Migration " + n + " deleted; its events are kept."
	}
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
	// Failed: the attempt failed before it was rolled back (its cell says so, not only
	// "rolled back"); Attention: its rollback failed.
	Failed, Attention bool
	Liveness          badge
}

type agentRef struct{ ID, Name string }

type failureView struct {
	wire.FailureGroup
	Shown []agentRef
	More  int
	// Headline is the causal line of the example (with its agent's output), Output the last
	// lines of that output.
	Headline string
	Output   []string
}

type actionButton struct {
	Action, Label, Question, Detail string
	Danger                          bool
	// Warnings are what is wrong before the action is taken (shown beside the button and in
	// its confirmation).
	Warnings []string
}

type migrationData struct {
	D           wire.MigrationDescription
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
	// Outcome is why the migration did what it did last; Decisions its state changes and
	// operator actions, newest first; Failed the agents whose attempt failed (kept after a
	// rollback); Problems its newest errors and warnings.
	Outcome    *outcome
	Decisions  []decision
	Failed     []failedAgent
	FailedMore int
	Attention  int
	Problems   []store.StoredEvent
	Chart      *errorChart
}

// Progress bar groups of assignment states, in bar order.
var segmentOrder = []struct {
	class, label string
	states       []string
}{
	{"ok", "done", []string{"succeeded", "not_needed"}},
	{"error", "failed", []string{"failed", "timed_out", "rollback_failed"}},
	{"failrb", "failed, rolled back", []string{failedRolledBack}},
	{"rolledback", "rolled back", []string{"rolled_back"}},
	{"active", "in progress", []string{"detecting", "applying", "verifying", "rolling_back", "agent_unreachable"}},
	{"muted", "not started", []string{"pending", "superseded"}},
}

// failedRolledBack counts, in a batch bar, the agents that failed and were then rolled back
// (their state alone, rolled_back, would hide that they failed).
const failedRolledBack = "failed+rolled_back"

// batchProgress counts the latest attempts of each batch by state, the failed-then-rolled-back
// apart.
func batchBar(b wire.BatchProgress) []segment {
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
func migrationActions(d wire.MigrationDescription, manualApproval bool) []actionButton {
	m := d.Migration
	from := state.MigrationState(m.State)
	can := func(to state.MigrationState) bool { return to != from && state.CheckMigration(from, to) == nil }
	failures := len(d.Failures) > 0
	var out []actionButton
	if can(state.MigrationPaused) {
		out = append(out, actionButton{string(wire.MigrationPause), "Pause", "Pause migration " + m.Name + "?",
			"No new agent starts; steps already running finish.", false, nil})
	}
	if from == state.MigrationPaused {
		out = append(out, actionButton{string(wire.MigrationResume), "Resume", "Resume migration " + m.Name + "?",
			"The rollout continues where it stopped.", false, nil})
	}
	if manualApproval && (from == state.MigrationRunning || from == state.MigrationPaused) && m.CurrentBatch+1 < m.Batches && m.ApprovedBatch <= m.CurrentBatch {
		out = append(out, actionButton{string(wire.MigrationApprove), fmt.Sprintf("Approve batch %d", m.CurrentBatch+2),
			fmt.Sprintf("Approve batch %d of %s?", m.CurrentBatch+2, m.Name), "The next batch of agents starts.", false, nil})
	}
	if failures && from.Final() && can(state.MigrationRunning) {
		out = append(out, actionButton{string(wire.MigrationRetry), "Retry failed", "Retry the failed agents of " + m.Name + "?",
			"Each failed agent gets a new attempt; the migration runs again.", false, nil})
	}
	if can(state.MigrationRollingBack) || from == state.MigrationFailed {
		out = append(out, actionButton{string(wire.MigrationRollback), "Roll back", "Roll back migration " + m.Name + "?",
			"Every agent that changed runs its rollback commands, last step first.", true, nil})
	}
	if can(state.MigrationCancelled) {
		out = append(out, actionButton{string(wire.MigrationAbort), "Abort", "Abort migration " + m.Name + "?",
			"Agents not started are superseded and running steps are cancelled. Applied steps stay until you roll back.", true, nil})
	}
	if from.Final() {
		out = append(out, actionButton{actionDelete, "Delete", "Delete migration " + m.Name + "?", deleteDetail, true, nil})
	}
	return out
}

// validName reports whether s could be a migration's name, so that only such a name is echoed
// in the page's message.
func validName(s string) bool {
	if s == "" || len(s) > manifest.MaxNameLength {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

// actionDelete is the UI's delete button on a migration that has ended (the API's DELETE).
const actionDelete = "delete"

const deleteDetail = "The migration and its assignments are deleted; its events stay, and its name cannot be used again. " +
	"Refused while an agent has not confirmed that it stopped working on it, or while a sweep remediates with it."

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
	// Counted and filtered in SQL: a fleet-wide migration's page reads its counts, the failed
	// agents, one page of the grid and (when approving is offered) the next batch, not every
	// assignment.
	m, err := s.cfg.Store.GetMigration(ctx, name)
	if err != nil {
		return nil, err
	}
	counted, err := s.cfg.Store.CountLatestAssignments(ctx, name)
	if err != nil {
		return nil, err
	}
	failedAll, err := s.cfg.Store.LatestAssignments(ctx, store.LatestQuery{Migration: name, Failed: true})
	if err != nil {
		return nil, err
	}
	d.D = wire.MigrationDescription{Migration: m, Failures: controller.FailureGroups(failedAll)}
	sp, _ := spec.Parse([]byte(m.Spec)) // stored specs were valid when applied; nil only if not
	canary := sp != nil && sp.Spec.Rollout.Canary > 0
	matched, failedN := 0, 0
	counts := map[string]int{}
	bars := make([]wire.BatchProgress, m.Batches)
	for i := range bars {
		bars[i] = wire.BatchProgress{Batch: i, States: map[string]int{}}
	}
	for _, c := range counted {
		matched += c.N
		counts[c.State] += c.N
		if c.Failed || c.State == "failed" || c.State == "timed_out" || c.State == "rollback_failed" {
			failedN += c.N
		}
		if c.State == "rollback_failed" {
			d.Attention += c.N
		}
		if c.Batch < 0 || c.Batch >= m.Batches {
			continue
		}
		st := c.State
		if st == "rolled_back" && c.Failed {
			st = failedRolledBack
		}
		bars[c.Batch].Total += c.N
		bars[c.Batch].States[st] += c.N
	}
	if sp != nil {
		d.D.Budget = plan.Plan{Matched: matched}.FailureBudget(sp)
	}
	for _, b := range bars {
		d.Batches = append(d.Batches, batchView{Number: b.Batch + 1, Canary: canary && b.Batch == 0,
			Total: b.Total, Current: b.Batch == m.CurrentBatch, Segments: batchBar(b)})
	}
	manual := sp != nil && sp.Spec.Rollout.Approval == spec.ApprovalManual
	d.Actions = migrationActions(d.D, manual)

	// The per-agent grid: latest attempts, by batch then agent, one page at a time.
	q := r.URL.Query()
	d.GridState = q.Get("grid")
	for _, st := range state.AssignmentStates() {
		if n := counts[string(st)]; n > 0 {
			d.GridStates = append(d.GridStates, stateCount{string(st), n})
		}
	}
	switch d.GridState {
	case "":
		d.GridTotal = matched
	case "failed":
		d.GridTotal = failedN
	default:
		d.GridTotal = counts[d.GridState]
	}
	d.GridPages = max(1, (d.GridTotal+gridPerPage-1)/gridPerPage)
	d.GridPage, _ = strconv.Atoi(q.Get("page"))
	d.GridPage = min(max(d.GridPage, 1), d.GridPages)
	var cells []*wire.Assignment
	if d.GridState == "failed" {
		for i := min((d.GridPage-1)*gridPerPage, len(failedAll)); i < min(d.GridPage*gridPerPage, len(failedAll)); i++ {
			cells = append(cells, &failedAll[i])
		}
	} else {
		page, err := s.cfg.Store.LatestAssignments(ctx, store.LatestQuery{Migration: name, State: d.GridState,
			Offset: (d.GridPage - 1) * gridPerPage, Limit: gridPerPage})
		if err != nil {
			return nil, err
		}
		for i := range page {
			cells = append(cells, &page[i])
		}
	}
	failed := make([]*wire.Assignment, 0, len(failedAll))
	for i := range failedAll {
		failed = append(failed, &failedAll[i])
	}
	latest := slices.Clone(failed) // the attempts the approval warnings look at
	// Rollback failures first, then failures by batch: who needs attention leads.
	sort.SliceStable(failed, func(i, j int) bool {
		ai, aj := failed[i].State == "rollback_failed", failed[j].State == "rollback_failed"
		if ai != aj {
			return ai
		}
		return failed[i].Batch < failed[j].Batch
	})
	d.FailedMore = max(0, len(failed)-failedAgentsShown)
	failed = failed[:min(len(failed), failedAgentsShown)]

	// Agents (names and liveness) only for what the page shows: this grid page, the failed
	// agents, the first agents of each group, and the batch an approval would start.
	ids := make([]string, 0, len(cells))
	for _, a := range cells {
		ids = append(ids, a.AgentID)
	}
	for _, a := range failed {
		ids = append(ids, a.AgentID)
	}
	for _, f := range d.D.Failures {
		ids = append(ids, f.Agents[:min(len(f.Agents), groupAgentsShown)]...)
	}
	nextBatch := m.CurrentBatch + 1
	approvable := false
	for _, b := range d.Actions {
		approvable = approvable || b.Action == string(wire.MigrationApprove)
	}
	var fleetBroken map[string][]string
	var away []store.AgentState
	if approvable {
		if fleetBroken, err = s.cfg.Store.RollbackFailures(ctx, nil); err != nil {
			return nil, err
		}
		for id := range fleetBroken {
			ids = append(ids, id)
		}
		// The next batch's agents that are not online come from one query with their names and
		// liveness: not the batch (a quarter of a fleet-wide migration) read and looked up.
		if away, err = s.cfg.Store.NotOnlineInBatch(ctx, name, nextBatch); err != nil {
			return nil, err
		}
		for _, a := range latest {
			if a.State == "rollback_failed" || a.State == "failed" || a.State == "timed_out" {
				ids = append(ids, a.AgentID)
			}
		}
	}
	if d.Events, _, err = s.cfg.Store.QueryEvents(ctx, store.EventQuery{Migration: name, Limit: migrationEvents}); err != nil {
		return nil, err
	}
	if d.Problems, _, err = s.cfg.Store.QueryEvents(ctx, store.EventQuery{Migration: name,
		Severities: []string{wire.SeverityError, wire.SeverityWarning}, Limit: problemsShown}); err != nil {
		return nil, err
	}
	for _, e := range append(d.Events, d.Problems...) {
		if e.Data.AgentID != "" {
			ids = append(ids, e.Data.AgentID)
		}
	}
	states, err := s.agentStates(ctx, ids)
	if err != nil {
		return nil, err
	}
	d.Names = make(map[string]string, len(states))
	for id, st := range states {
		d.Names[id] = st.Name
	}
	live := func(id string) badge {
		st, ok := states[id]
		if !ok {
			return statusInfo("", false)
		}
		return statusInfo(st.Status, st.Revoked)
	}
	for _, a := range cells {
		d.Grid = append(d.Grid, gridCell{AgentID: a.AgentID, Name: nameOr(d.Names, a.AgentID), State: a.State, Attempt: a.Attempt,
			Batch: a.Batch + 1, Step: firstNonEmpty(a.FailedStep, a.StepName), Error: firstLine(firstNonEmpty(a.Error, a.Failure)),
			Failed: hadFailure(a), Attention: a.State == "rollback_failed", Liveness: live(a.AgentID)})
	}
	sort.SliceStable(d.Grid, func(i, j int) bool {
		if d.Grid[i].Batch != d.Grid[j].Batch {
			return d.Grid[i].Batch < d.Grid[j].Batch
		}
		return d.Grid[i].Name < d.Grid[j].Name
	})

	// Who failed, at which step and why: from the assignments (they keep the failure after a
	// rollback) and the failure events (their output).
	runEvs, rollbackEvs, err := s.failureEvents(ctx, name)
	if err != nil {
		return nil, err
	}
	event := func(m map[string]store.StoredEvent, a *wire.Assignment) *store.StoredEvent {
		e, ok := m[a.AgentID]
		if !ok || (e.Data.Attempt != 0 && e.Data.Attempt != a.Attempt) {
			return nil
		}
		return &e
	}
	byAgent := make(map[string]*wire.Assignment, len(failedAll))
	for _, a := range latest {
		byAgent[a.AgentID] = a
	}
	for _, a := range failed {
		fa := failedAgent{ID: a.AgentID, Name: nameOr(d.Names, a.AgentID), Liveness: live(a.AgentID), Attention: a.State == "rollback_failed",
			State: a.State, Batch: a.Batch + 1, Attempt: a.Attempt, Step: firstNonEmpty(a.FailedStep, a.StepName)}
		ev := event(runEvs, a)
		fa.Headline, fa.OutputTail = headlineOf(firstNonEmpty(a.Failure, a.Error), ev)
		if ev != nil {
			fa.EventID = ev.ID
		}
		if a.State == "rollback_failed" {
			fa.Rollback, _ = headlineOf(a.Error, event(rollbackEvs, a))
		}
		d.Failed = append(d.Failed, fa)
	}
	for _, f := range d.D.Failures {
		fv := failureView{FailureGroup: f, More: max(0, len(f.Agents)-groupAgentsShown)}
		for _, id := range f.Agents[:min(len(f.Agents), groupAgentsShown)] {
			fv.Shown = append(fv.Shown, agentRef{id, nameOr(d.Names, id)})
		}
		// The example's output: of a rollback when the group is of failed rollbacks.
		var ev *store.StoredEvent
		for _, id := range f.Agents {
			a := byAgent[id]
			if a == nil {
				continue
			}
			evs := runEvs
			if a.State == "rollback_failed" && a.Error == f.Example {
				evs = rollbackEvs
			}
			if ev = event(evs, a); ev != nil {
				break
			}
		}
		fv.Headline, fv.Output = headlineOf(f.Example, ev)
		d.Failures = append(d.Failures, fv)
	}
	d.Failures = regroup(d.Failures)

	if d.Decisions, err = s.decisions(ctx, name); err != nil {
		return nil, err
	}
	d.Outcome = outcomeOf(d.Decisions, m.Reason)
	if d.Chart, err = s.errorsChart(ctx, r, "/ui/migrations/"+url.PathEscape(name), name); err != nil {
		return nil, err
	}
	if approvable {
		if warn := approvalWarnings(latest, away, nextBatch, states, fleetBroken); len(warn) > 0 {
			for i := range d.Actions {
				if b := &d.Actions[i]; b.Action == string(wire.MigrationApprove) {
					b.Warnings = warn
					b.Detail = "Warning: " + strings.Join(warn, "; ") + ". " + b.Detail
				}
			}
		}
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
	act := wire.MigrationAction(r.PathValue("action"))
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
	if act == actionDelete {
		button = &actionButton{Action: actionDelete, Label: "Delete", Detail: deleteDetail + " ", Danger: true}
	}
	if button == nil {
		return fault.Invalid("action", "%q is not one of pause, resume, approve, abort, rollback, retry, delete", act)
	}
	if s.cfg.Migrations == nil {
		return fmt.Errorf("the migration controller is not running on this hub: %w", fault.ErrUnavailable)
	}
	back := "/ui/migrations/" + url.PathEscape(name)
	if r.PostForm.Get("confirm") != "yes" {
		s.confirm(w, r, c, confirmData{Question: fmt.Sprintf("%s migration %s?", button.Label, name),
			Detail: button.Detail + "This is recorded as an operator action by " + c.Actor() + ".", Action: r.URL.Path, Button: button.Label,
			Cancel: back, Danger: button.Danger})
		return nil
	}
	var err error
	if act == actionDelete {
		err = s.cfg.Migrations.Delete(r.Context(), name, c.Actor())
	} else {
		_, err = s.cfg.Migrations.Act(r.Context(), name, act, c.Actor())
	}
	if err != nil {
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
	if act == actionDelete {
		http.Redirect(w, r, "/ui/migrations?deleted="+url.QueryEscape(name), http.StatusSeeOther)
		return nil
	}
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
	action := path.Base(r.URL.Path)
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
