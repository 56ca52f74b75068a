package ui

// Failover groups: the list of groups with who is primary, the epoch and how many members are
// healthy, fenced or failed; a group's page with its members, its timing, the timeline of its
// members' transitions, and pause/resume and switchover for those whose role may.
//
// What the hub knows of a group's members is what they reported: their failover.transition
// events (the same timeline the API and `godwit describe failovergroup` show) and their agents'
// liveness. The witness record in the group's bucket is the members' own, not read here.

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"godwit.dev/godwit/internal/agent/failover/machine"
	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/failover"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// timelineShown bounds the transitions a group's page lists (the API reads at most 200).
const timelineShown = 100

func (s *Server) failoverService() (api.Failover, error) {
	if s.cfg.Failover == nil {
		return nil, fmt.Errorf("the failover group service is not running on this hub: %w", fault.ErrUnavailable)
	}
	return s.cfg.Failover, nil
}

// memberRow is one member as the pages show it.
type memberRow struct {
	ID, Name string
	// Gone: no agent has this id any more.
	Gone     bool
	Liveness badge
	Online   bool
	LastSeen time.Time
	// Role, State, Epoch, Since and Reason are from the member's latest transition ("" when it
	// reported none).
	Role, State string
	Epoch       uint64
	Since       time.Time
	Reason      string
	// Health is healthy, fenced, failed or other (starting, moving, not reported, agent offline).
	Health string
	Badge  badge
	// Priority and NoFailover are the spec's entry for it; Selector when that entry is a selector.
	Priority   int
	NoFailover bool
	Selector   bool
	Primary    bool
	// Warnings are what a switchover to this member should be told.
	Warnings []string
}

// groupSummary is a group with what its members reported.
type groupSummary struct {
	G       wire.FailoverGroup
	Spec    *failover.Canonical
	Members []memberRow
	// Primary is the member the latest reports name primary of the highest epoch (nil: none).
	Primary *memberRow
	// Epoch is the highest epoch reported; Since when Primary reported that epoch first (within
	// the timeline read).
	Epoch                          uint64
	Since                          time.Time
	Healthy, Fenced, Failed, Other int
	// Status is the group at a glance: its severity in a word and a symbol.
	Status badge
	// Timeline is newest first, at most timelineShown; Total how many the hub read.
	Timeline []timelineRow
	Total    int
}

type timelineRow struct {
	wire.FailoverTimelineEntry
	Name  string
	Badge badge
}

// memberHealth sorts a member's reported state into healthy, fenced, failed or other, with its
// badge. An offline agent's last report is not taken for health.
func memberHealth(role, state string, online bool) (string, badge) {
	label := strings.ReplaceAll(state, "_", " ")
	if role != "" {
		label = role + ": " + label
	}
	var health string
	var b badge
	switch machine.State(state) {
	case "":
		return "other", badge{"muted", "icon-unknown", "not reported"}
	case machine.Healthy, machine.Watching:
		health, b = "healthy", badge{"ok", "icon-ok", label}
	case machine.Fencing, machine.Fenced, machine.Yielding:
		health, b = "fenced", badge{"warning", "icon-paused", label}
	case machine.Failed, machine.FenceFailed:
		health, b = "failed", badge{"error", "icon-error", label}
	default: // initializing, activating, recovering, promoting
		health, b = "other", badge{"active", "icon-running", label}
	}
	if !online && health == "healthy" {
		return "other", badge{"muted", "icon-offline", label + " (last report; agent not online)"}
	}
	return health, b
}

// transitionBadge is a timeline entry's severity.
func transitionBadge(e wire.FailoverTimelineEntry) badge {
	if e.Hook != "" {
		if e.HookResult == "succeeded" {
			return badge{"ok", "icon-ok", e.Hook + " " + e.HookResult}
		}
		return badge{"error", "icon-error", e.Hook + " " + strings.ReplaceAll(e.HookResult, "_", " ")}
	}
	_, b := memberHealth("", e.To, true)
	b.Label = strings.ReplaceAll(e.To, "_", " ")
	return b
}

// summarize puts a group's record, spec, agents and timeline together.
func (s *Server) summarize(ctx context.Context, g wire.FailoverGroup, tl []wire.FailoverTimelineEntry) (*groupSummary, error) {
	sum := &groupSummary{G: g, Total: len(tl)}
	if sp, err := failover.SpecOf(g); err == nil {
		sum.Spec = &sp
	}
	latest, refused := failover.Latest(tl), failover.Refused(tl)
	names := map[string]string{}
	for _, id := range g.Members {
		row := memberRow{ID: id, Name: id}
		a, err := s.cfg.Store.GetAgent(ctx, id)
		switch {
		case statusOf(err) == http.StatusNotFound:
			row.Gone, row.Liveness = true, badge{"revoked", "icon-revoked", "gone"}
		case err != nil:
			return nil, err
		default:
			row.Name, row.LastSeen = a.Name, a.LastSeen
			row.Liveness = statusInfo(a.Status, a.RevokedAt != nil)
			row.Online = a.Status == wire.StatusOnline && a.RevokedAt == nil
		}
		names[id] = row.Name
		if e, ok := latest[id]; ok {
			row.Role, row.State, row.Epoch, row.Since, row.Reason = e.Role, e.To, e.Epoch, e.Time, e.Reason
		}
		row.Health, row.Badge = memberHealth(row.Role, row.State, row.Online)
		if r, ok := refused[id]; ok {
			// The agent's policy refused a hook: it runs no member of the group.
			row.Role, row.State, row.Epoch, row.Since, row.Reason = "", "", 0, r.Time, r.Reason
			row.Health, row.Badge = "failed", badge{"error", "icon-error", "refused: hook " + r.Hook + " (agent policy)"}
		}
		if sum.Spec != nil {
			s.specEntry(&row, *sum.Spec, a.Labels)
		}
		switch row.Health {
		case "healthy":
			sum.Healthy++
		case "fenced":
			sum.Fenced++
		case "failed":
			sum.Failed++
		default:
			sum.Other++
		}
		sum.Epoch = max(sum.Epoch, row.Epoch)
		sum.Members = append(sum.Members, row)
	}
	// The primary: of the members whose latest report is as primary, the one of the highest
	// epoch (the newest report on a tie).
	for i := range sum.Members {
		m := &sum.Members[i]
		if m.Role != string(machine.Primary) {
			continue
		}
		if p := sum.Primary; p == nil || m.Epoch > p.Epoch || (m.Epoch == p.Epoch && m.Since.After(p.Since)) {
			sum.Primary = m
		}
	}
	if p := sum.Primary; p != nil {
		p.Primary = true
		for _, e := range tl {
			if e.Member == p.ID && e.Role == p.Role && e.Epoch == p.Epoch {
				sum.Since = e.Time
			}
		}
	}
	for i := range sum.Members {
		sum.Members[i].Warnings = switchoverWarnings(sum.Members[i], sum.Primary)
	}
	sum.Status = groupStatus(sum)
	for _, e := range tl[:min(len(tl), timelineShown)] {
		sum.Timeline = append(sum.Timeline, timelineRow{FailoverTimelineEntry: e, Name: nameOr(names, e.Member), Badge: transitionBadge(e)})
	}
	return sum, nil
}

// specEntry fills a member's priority and noFailover: from the hub's resolution of the group
// (failover.Canonical.SettingsOf), or for a group stored without one from its spec entry — the
// one naming its id, else the first selector entry its agent's labels match.
func (s *Server) specEntry(row *memberRow, sp failover.Canonical, labels map[string]string) {
	// The hub's resolution when the group has one: the settings the member runs with.
	if sp.Resolved != nil {
		if st, ok := sp.SettingsOf(row.ID); ok {
			row.Priority, row.NoFailover = st.Priority, st.NoFailover
			row.Selector = st.Entry >= 0 && st.Entry < len(sp.Members) && sp.Members[st.Entry].Selector != nil
		}
		return
	}
	for _, m := range sp.Members {
		if m.Agent == row.ID {
			row.Priority, row.NoFailover = m.Priority, m.NoFailover
			return
		}
	}
	for _, m := range sp.Members {
		if m.Selector != nil && m.Selector.Matches(labels) {
			row.Priority, row.NoFailover, row.Selector = m.Priority, m.NoFailover, true
			return
		}
	}
}

// switchoverWarnings are what a switchover to m should make its operator stop and think about
// (the hub decides whether it is allowed).
func switchoverWarnings(m memberRow, primary *memberRow) []string {
	var w []string
	if m.NoFailover {
		w = append(w, fmt.Sprintf("%s is noFailover: it is never to become primary (the hub refuses this).", m.Name))
	}
	switch {
	case m.Gone:
		w = append(w, fmt.Sprintf("No agent %s exists any more.", m.ID))
	case !m.Online:
		w = append(w, fmt.Sprintf("The agent of %s is %s, not online: it may not see the request, and the primary fences all the same.", m.Name, m.Liveness.Label))
	}
	if m.State == "" {
		w = append(w, fmt.Sprintf("%s has reported no state yet.", m.Name))
	} else if m.Health != "healthy" {
		w = append(w, fmt.Sprintf("%s is not healthy: its latest report is %s.", m.Name, m.Badge.Label))
	}
	if primary == nil {
		w = append(w, "No member reports being primary: the hub refuses a switchover while the group has no primary.")
	}
	return w
}

// groupStatus is a group at a glance, the worst first.
func groupStatus(sum *groupSummary) badge {
	p := sum.Primary
	switch {
	case len(sum.Members) == 0:
		return badge{"muted", "icon-unknown", "no members"}
	case p == nil && sum.Other == len(sum.Members):
		return badge{"muted", "icon-unknown", "no primary reported"}
	case p == nil:
		return badge{"error", "icon-error", "no primary"}
	case p.Health != "healthy":
		return badge{"error", "icon-error", "primary " + p.Badge.Label}
	case sum.Failed > 0 || sum.Fenced > 0:
		return badge{"warning", "icon-warning", "degraded"}
	case sum.Healthy < len(sum.Members):
		return badge{"warning", "icon-warning", "not all members healthy"}
	}
	return badge{"ok", "icon-ok", "healthy"}
}

// ---- list ----

type failoverGroupsData struct {
	Groups []*groupSummary
}

func (s *Server) failoverGroups(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	svc, err := s.failoverService()
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	mark, err := s.mark(ctx, topicFailover)
	if err != nil {
		return nil, err
	}
	gs, err := svc.List(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(gs))
	for _, g := range gs {
		names = append(names, g.Name)
	}
	tls, err := api.FailoverTimelines(ctx, s.cfg.Store, names...)
	if err != nil {
		return nil, err
	}
	d := &failoverGroupsData{}
	for _, g := range gs {
		sum, err := s.summarize(ctx, g, tls[g.Name])
		if err != nil {
			return nil, err
		}
		d.Groups = append(d.Groups, sum)
	}
	return &view{Template: "failovergroups", Title: "Failover groups", Nav: "failover", Live: topicFailover, Mark: mark, Data: d}, nil
}

// ---- one group ----

type failoverGroupData struct {
	*groupSummary
	// FenceDeadline is heartbeatTimeout × failureThreshold.
	FenceDeadline time.Duration
	// PauseDetail and ResumeDetail are what the toggle's confirmation says.
	PauseDetail, ResumeDetail string
}

func ms(v int64) time.Duration { return time.Duration(v) * time.Millisecond }

// failoverGroupView reads a group's page; an unknown group is not found, naming it.
func (s *Server) failoverGroupView(ctx context.Context, name string) (*view, error) {
	svc, err := s.failoverService()
	if err != nil {
		return nil, err
	}
	mark, err := s.mark(ctx, topicFailover)
	if err != nil {
		return nil, err
	}
	g, err := svc.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	tls, err := api.FailoverTimelines(ctx, s.cfg.Store, g.Name)
	if err != nil {
		return nil, err
	}
	sum, err := s.summarize(ctx, g, tls[g.Name])
	if err != nil {
		return nil, err
	}
	d := &failoverGroupData{groupSummary: sum, PauseDetail: failoverPauseDetail, ResumeDetail: failoverResumeDetail}
	if sp := sum.Spec; sp != nil {
		d.FenceDeadline = ms(sp.HeartbeatTimeout) * time.Duration(sp.FailureThreshold)
	}
	return &view{Template: "failovergroup", Title: name, Nav: "failover", Live: topicFailover, Mark: mark, Data: d}, nil
}

func (s *Server) failoverGroup(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	name := r.PathValue("name")
	v, err := s.failoverGroupView(r.Context(), name)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	switch q.Get("done") {
	case "paused":
		v.Flash = "Failover group " + name + " paused: no member promotes on its own until it is resumed."
	case "resumed":
		v.Flash = "Failover group " + name + " resumed: members fail over on their own again."
	case "switchover":
		v.Flash = fmt.Sprintf("Switchover requested: %s (epoch %s) fences and hands over to %s. Watch the timeline.",
			q.Get("from"), q.Get("epoch"), q.Get("to"))
	}
	return v, nil
}

// refusedFailover shows the group's page as it is now with why an action was refused (as a
// refused sweep or migration action does); not found and server errors take the error page.
func (s *Server) refusedFailover(w http.ResponseWriter, r *http.Request, c *current, name string, err error) error {
	code := statusOf(err)
	if code >= 500 || code == http.StatusNotFound {
		return err
	}
	v, verr := s.failoverGroupView(r.Context(), name)
	if verr != nil {
		return err
	}
	v.Error = message(err)
	s.render(w, r, c, code, "", v)
	return nil
}

func (s *Server) pauseFailoverGroup(w http.ResponseWriter, r *http.Request, c *current) error {
	return s.toggleFailoverGroup(w, r, c, true)
}

func (s *Server) resumeFailoverGroup(w http.ResponseWriter, r *http.Request, c *current) error {
	return s.toggleFailoverGroup(w, r, c, false)
}

const (
	failoverPauseDetail  = "Maintenance mode: no member promotes on its own until the group is resumed. A primary still fences on its own failures, and a switchover still runs."
	failoverResumeDetail = "Members fail over on their own again: a replica promotes when the primary's record stays unchanged for the failover timeout."
)

// toggleFailoverGroup pauses or resumes a group: asked to confirm, then through the failover
// service (the same path as the API and the CLI).
func (s *Server) toggleFailoverGroup(w http.ResponseWriter, r *http.Request, c *current, pause bool) error {
	svc, err := s.failoverService()
	if err != nil {
		return err
	}
	ctx := r.Context()
	name := r.PathValue("name")
	back := "/ui/failovergroups/" + url.PathEscape(name)
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	verb, detail := "Resume", failoverResumeDetail
	if pause {
		verb, detail = "Pause", failoverPauseDetail
	}
	if len(reason) > 1024 {
		return s.refusedFailover(w, r, c, name, fault.Invalid("reason", "must be at most 1024 bytes, not %d", len(reason)))
	}
	if r.PostForm.Get("confirm") != "yes" {
		if _, err := svc.Get(ctx, name); err != nil {
			return err
		}
		d := confirmData{Question: verb + " failover group " + name + "?", Action: r.URL.Path, Button: verb, Cancel: back,
			Detail: detail + " This is recorded as an operator action by " + c.Actor() + "."}
		if reason != "" {
			d.Hidden = []hiddenField{{"reason", reason}}
		}
		s.confirm(w, r, c, d)
		return nil
	}
	if !pause {
		reason = ""
	}
	if _, err := svc.SetPaused(ctx, name, pause, reason); err != nil {
		return s.refusedFailover(w, r, c, name, err)
	}
	done := "resumed"
	if pause {
		done = "paused"
	}
	s.log.Info("ui: operator action", "failover_group", name, "action", strings.ToLower(verb), "actor", c.Actor())
	http.Redirect(w, r, query(back, "done", done), http.StatusSeeOther)
	return nil
}

// switchoverFailoverGroup asks the group's primary to hand over to the member chosen: asked to
// confirm (with what is worth a warning about that member), then through the failover service,
// whose rules decide (a non-member, a noFailover member or the primary itself are refused, and
// nothing is written).
func (s *Server) switchoverFailoverGroup(w http.ResponseWriter, r *http.Request, c *current) error {
	svc, err := s.failoverService()
	if err != nil {
		return err
	}
	ctx := r.Context()
	name := r.PathValue("name")
	back := "/ui/failovergroups/" + url.PathEscape(name)
	to := strings.TrimSpace(r.PostForm.Get("to"))
	if to == "" {
		return s.refusedFailover(w, r, c, name, fault.Invalid("to", "is required: the member agent id to promote"))
	}
	if r.PostForm.Get("confirm") != "yes" {
		v, err := s.failoverGroupView(ctx, name)
		if err != nil {
			return err
		}
		sum := v.Data.(*failoverGroupData)
		i := slices.IndexFunc(sum.Members, func(m memberRow) bool { return m.ID == to })
		if i < 0 {
			// Nothing to confirm (the hub refuses it too, if posted confirmed).
			return s.refusedFailover(w, r, c, name, fault.Invalid("to", "%q is not a member of failover group %s (members: %v)",
				to, name, sum.G.Members))
		}
		d := confirmData{Question: "Switch failover group " + name + " over to " + sum.Members[i].Name + "?", Action: r.URL.Path,
			Button: "Switch over", Cancel: back, Danger: true, Hidden: []hiddenField{{"to", to}}}
		d.Detail = switchoverDetail(sum.Members[i], sum.Primary, c.Actor())
		s.confirm(w, r, c, d)
		return nil
	}
	res, err := svc.Switchover(ctx, name, to)
	if err != nil {
		return s.refusedFailover(w, r, c, name, err)
	}
	s.log.Info("ui: operator action", "failover_group", name, "action", "switchover", "from", res.From, "to", res.To,
		"epoch", res.Epoch, "actor", c.Actor())
	http.Redirect(w, r, query(back, "done", "switchover", "from", res.From, "to", res.To, "epoch", strconv.FormatUint(res.Epoch, 10)),
		http.StatusSeeOther)
	return nil
}

// switchoverDetail is what the switchover confirmation says, warnings first.
func switchoverDetail(m memberRow, primary *memberRow, actor string) string {
	var b strings.Builder
	for _, w := range m.Warnings {
		b.WriteString("Warning: " + w + " ")
	}
	from := "The primary"
	if primary != nil {
		from = fmt.Sprintf("The primary %s (epoch %d)", primary.Name, primary.Epoch)
	}
	fmt.Fprintf(&b, "%s fences, then hands over to %s, which promotes at once: the workload is briefly served by no member. "+
		"This is recorded as an operator action by %s.", from, m.Name, actor)
	return b.String()
}

// ---- live mark ----

// failoverMark changes when a group is applied, changed, paused, resumed or deleted, a member
// reports a transition, or an agent's liveness changes.
func (s *Server) failoverMark(ctx context.Context) (string, error) {
	st := s.cfg.Store
	gs, err := st.ListFailoverGroups(ctx)
	if err != nil {
		return "", err
	}
	parts := make([]string, 0, len(gs)+2)
	for _, g := range gs {
		parts = append(parts, fmt.Sprintf("%s:%d", g.Name, g.Version))
	}
	ev, err := s.latestEvent(ctx, store.EventQuery{Types: []string{wire.EventFailoverTransition}})
	if err != nil {
		return "", err
	}
	counts, err := st.CountAgentsByStatus(ctx)
	if err != nil {
		return "", err
	}
	return strings.Join(append(parts, ev, countsMark(counts)), "|"), nil
}
