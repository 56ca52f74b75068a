package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Failover is what the API needs of the failover group service (failover.Service).
type Failover interface {
	Apply(ctx context.Context, yamlSpec []byte, dryRun bool) (wire.FailoverApplyResult, error)
	Get(ctx context.Context, name string) (wire.FailoverGroup, error)
	List(ctx context.Context) ([]wire.FailoverGroup, error)
	Delete(ctx context.Context, name string) error
	SetPaused(ctx context.Context, name string, paused bool, reason string) (wire.FailoverGroup, error)
	Switchover(ctx context.Context, name, to string) (wire.FailoverSwitchoverResult, error)
}

// timelineLimit bounds the transitions a group's detail shows.
const timelineLimit = 200

func (s *Server) failoverRoutes() {
	s.route("POST /api/v1/failovergroups", http.StatusOK, s.applyFailoverGroup)
	s.route("GET /api/v1/failovergroups", http.StatusOK, s.listFailoverGroups)
	s.route("GET /api/v1/failovergroups/{name}", http.StatusOK, s.getFailoverGroup)
	s.route("DELETE /api/v1/failovergroups/{name}", http.StatusOK, s.deleteFailoverGroup)
	s.route("POST /api/v1/failovergroups/{name}/pause", http.StatusOK, s.pauseFailoverGroup)
	s.route("POST /api/v1/failovergroups/{name}/resume", http.StatusOK, s.resumeFailoverGroup)
	s.route("POST /api/v1/failovergroups/{name}/switchover", http.StatusOK, s.switchoverFailoverGroup)
}

// switchoverFailoverGroup writes a planned switchover to the group's control key.
func (s *Server) switchoverFailoverGroup(r *http.Request) (any, error) {
	f, err := s.failover()
	if err != nil {
		return nil, err
	}
	var req wire.FailoverSwitchoverRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.To == "" {
		return nil, fault.Invalid("to", "is required: the member agent id to promote")
	}
	name := r.PathValue("name")
	setTarget(r, "failover group %s", name)
	return f.Switchover(r.Context(), name, req.To)
}

func (s *Server) failover() (Failover, error) {
	if s.cfg.Failover == nil {
		return nil, s.notRunning("failover group service")
	}
	return s.cfg.Failover, nil
}

// applyFailoverGroup takes the YAML spec as the request body; ?dry_run=true only validates it.
func (s *Server) applyFailoverGroup(r *http.Request) (any, error) {
	f, err := s.failover()
	if err != nil {
		return nil, err
	}
	body, dry, err := specBody(r, "failover group")
	if err != nil {
		return nil, err
	}
	res, err := f.Apply(r.Context(), body, dry)
	if res.Name != "" {
		setTarget(r, "failover group %s (%s)", res.Name, res.Outcome)
	}
	return res, err
}

func (s *Server) listFailoverGroups(r *http.Request) (any, error) {
	f, err := s.failover()
	if err != nil {
		return nil, err
	}
	items, err := f.List(r.Context())
	if err != nil {
		return nil, err
	}
	return map[string]any{"items": items}, nil
}

// getFailoverGroup returns the group with the timeline of its members' transitions, from the
// failover.transition events the hub stored.
func (s *Server) getFailoverGroup(r *http.Request) (any, error) {
	f, err := s.failover()
	if err != nil {
		return nil, err
	}
	g, err := f.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	tl, err := FailoverTimelines(r.Context(), s.cfg.Store, g.Name)
	if err != nil {
		return nil, err
	}
	return wire.FailoverGroupDetail{FailoverGroup: g, Timeline: tl[g.Name]}, nil
}

// timelineEventsRead bounds the failover.transition events read for the timelines (of every
// group; the newest).
const timelineEventsRead = 1000

// FailoverTimelines returns the timelines of the groups named, from the failover.transition
// events the hub stored: each newest first, at most timelineLimit entries, never nil. The API's
// group detail and the web UI read them here.
func FailoverTimelines(ctx context.Context, st store.Store, groups ...string) (map[string][]wire.FailoverTimelineEntry, error) {
	out := make(map[string][]wire.FailoverTimelineEntry, len(groups))
	for _, g := range groups {
		out[g] = []wire.FailoverTimelineEntry{}
	}
	evs, _, err := st.QueryEvents(ctx, store.EventQuery{Types: []string{wire.EventFailoverTransition, wire.EventFailoverPolicyRefused},
		Limit: timelineEventsRead})
	if err != nil {
		return nil, err
	}
	full := 0
	for _, e := range evs {
		te, ok := timelineEntry(e.Event)
		if !ok {
			continue
		}
		tl, ok := out[te.Group]
		if !ok || len(tl) == timelineLimit {
			continue
		}
		out[te.Group] = append(tl, te)
		if len(tl)+1 == timelineLimit {
			if full++; full == len(out) {
				break
			}
		}
	}
	return out, nil
}

// timelineEntry is a stored failover.transition or failover.policy.refused event as a timeline
// entry; false when its data does not decode.
func timelineEntry(e wire.Event) (wire.FailoverTimelineEntry, bool) {
	if len(e.Data.Extra) == 0 {
		return wire.FailoverTimelineEntry{}, false
	}
	te := wire.FailoverTimelineEntry{Time: e.Time, Event: e.Type}
	switch e.Type {
	case wire.EventFailoverTransition:
		if json.Unmarshal(e.Data.Extra, &te.FailoverTransition) != nil {
			return te, false
		}
	case wire.EventFailoverPolicyRefused:
		var r struct{ Group, Hook, Rule, Policy string }
		if json.Unmarshal(e.Data.Extra, &r) != nil || r.Group == "" {
			return te, false
		}
		te.Group, te.Member, te.Hook, te.HookResult, te.Rule, te.Policy = r.Group, e.Data.AgentID, r.Hook, "refused", r.Rule, r.Policy
		te.Reason = "refused by agent policy " + r.Policy + ", rule " + r.Rule + ": this agent does not join the group"
	default:
		return te, false
	}
	return te, true
}

func (s *Server) deleteFailoverGroup(r *http.Request) (any, error) {
	f, err := s.failover()
	if err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	if err := f.Delete(r.Context(), name); err != nil {
		return nil, err
	}
	setTarget(r, "failover group %s", name)
	return map[string]string{"deleted": name}, nil
}

func (s *Server) pauseFailoverGroup(r *http.Request) (any, error) {
	return s.setFailoverPaused(r, true)
}
func (s *Server) resumeFailoverGroup(r *http.Request) (any, error) {
	return s.setFailoverPaused(r, false)
}

// setFailoverPaused sets or clears maintenance mode: while a group is paused no member
// promotes on its own (a switchover by an operator still does).
func (s *Server) setFailoverPaused(r *http.Request, paused bool) (any, error) {
	f, err := s.failover()
	if err != nil {
		return nil, err
	}
	var req wire.FailoverPauseRequest
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := decode(r, &req); err != nil {
			return nil, err
		}
	}
	if len(req.Reason) > 1024 {
		return nil, fault.Invalid("reason", "must be at most 1024 bytes, not %d", len(req.Reason))
	}
	name := r.PathValue("name")
	setTarget(r, "failover group %s", name)
	return f.SetPaused(r.Context(), name, paused, req.Reason)
}
