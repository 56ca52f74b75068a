package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"godwit.dev/godwit/internal/buildinfo"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Pipeline is what the API needs of the event pipeline (the hub's ingester).
type Pipeline interface {
	Status(ctx context.Context) (wire.IngestStatus, error)
	DeadLetters(ctx context.Context, afterSeq uint64, limit int) ([]wire.DeadLetter, error)
	DeadLetter(ctx context.Context, seq uint64) (wire.DeadLetter, error)
	Replay(ctx context.Context, seq uint64) error
	// Purge removes one dead letter, or all when seq is 0, and says how many.
	Purge(ctx context.Context, seq uint64) (int, error)
	Rehydrate(agentID string)
}

func (s *Server) eventRoutes() {
	s.route("GET /api/v1/events", http.StatusOK, s.listEvents)
	s.route("GET /api/v1/status", http.StatusOK, s.status)
	s.route("POST /api/v1/agents/{id}/rehydrate", http.StatusOK, s.rehydrate)
	s.route("GET /api/v1/dlq", http.StatusOK, s.listDLQ)
	s.route("GET /api/v1/dlq/{seq}", http.StatusOK, s.getDLQ)
	s.route("POST /api/v1/dlq/{seq}/replay", http.StatusOK, s.replayDLQ)
	s.route("DELETE /api/v1/dlq/{seq}", http.StatusOK, s.purgeOneDLQ)
	s.route("POST /api/v1/dlq/purge", http.StatusOK, s.purgeAllDLQ)
}

// ParseEventQuery turns URL parameters into a store query; every bad value is a 400 that names
// its parameter. now anchors relative times ("since=2h" means the last two hours).
func ParseEventQuery(v url.Values, now time.Time) (store.EventQuery, error) {
	known := map[string]bool{"agent": true, "migration": true, "type": true, "severity": true, "since": true, "until": true, "limit": true, "cursor": true}
	for k := range v {
		if !known[k] {
			return store.EventQuery{}, fault.Invalid(k, "unknown parameter (use agent, migration, type, severity, since, until, limit, cursor)")
		}
	}
	q := store.EventQuery{AgentID: v.Get("agent"), Migration: v.Get("migration"), Limit: 100, Cursor: v.Get("cursor")}
	for _, t := range splitList(v.Get("type")) {
		if base, star := strings.CutSuffix(t, "*"); star {
			if base == "" || strings.Contains(base, "*") {
				return q, fault.Invalid("type", "%q: a wildcard may only end a prefix, as in migration.rollback.*", t)
			}
		} else if !wire.KnownEventTypes[t] {
			return q, fault.Invalid("type", "%q is not a known event type", t)
		}
		q.Types = append(q.Types, t)
	}
	for _, sv := range splitList(v.Get("severity")) {
		if wire.SeverityRank(sv) < 0 {
			return q, fault.Invalid("severity", "%q is not info, warning or error", sv)
		}
		q.Severities = append(q.Severities, sv)
	}
	var err error
	if q.Since, err = parseInstant(v.Get("since"), now); err != nil {
		return q, fault.Invalid("since", "%v", err)
	}
	if q.Until, err = parseInstant(v.Get("until"), now); err != nil {
		return q, fault.Invalid("until", "%v", err)
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
		return q, fault.Invalid("until", "must be after since")
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return q, fault.Invalid("limit", "%q must be an integer from 1 to 1000", l)
		}
		q.Limit = n
	}
	return q, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseInstant reads RFC 3339 ("2026-11-21T10:00:00Z") or a duration back from now ("90m").
func parseInstant(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a positive duration like 2h", s)
}

func (s *Server) listEvents(r *http.Request) (any, error) {
	q, err := ParseEventQuery(r.URL.Query(), s.now())
	if err != nil {
		return nil, err
	}
	page, next, err := s.cfg.Store.QueryEvents(r.Context(), q)
	if err != nil {
		return nil, err
	}
	items := make([]wire.EventRecord, len(page))
	for i, e := range page {
		items[i] = e.Record()
	}
	return wire.List[wire.EventRecord]{Items: items, NextCursor: next}, nil
}

// ingestStatusTimeout bounds how long a status (the API's, the dashboard's) waits for the
// ingest's JetStream figures.
var ingestStatusTimeout = 2 * time.Second

// IngestStatus is p.Status waited for at most ingestStatusTimeout: the figures come from
// JetStream, which answers nothing while a stream elects a new leader (seconds after a NATS
// server is lost), and a status page says they are not available rather than wait.
func IngestStatus(ctx context.Context, p Pipeline) (wire.IngestStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, ingestStatusTimeout)
	defer cancel()
	return p.Status(ctx)
}

func (s *Server) status(r *http.Request) (any, error) {
	// One grouped count, not a decode of every agent row: the status is polled, and fleets are large.
	counts, err := s.cfg.Store.CountAgentsByStatus(r.Context())
	if err != nil {
		return nil, err
	}
	st := wire.HubStatus{Version: buildinfo.String(), Store: s.cfg.Store.Engine(), Agents: counts}
	if st.Replicas, err = s.cfg.Store.ListReplicas(r.Context()); err != nil {
		return nil, err
	}
	if s.cfg.Leadership != nil {
		st.Leadership = s.cfg.Leadership()
	}
	if s.cfg.Pipeline == nil && s.cfg.Pending != nil {
		if why := s.cfg.Pending(); why != "" {
			st.IngestError = "event ingest not running yet: " + why
		}
	}
	if s.cfg.Pipeline != nil {
		is, err := IngestStatus(r.Context(), s.cfg.Pipeline)
		if err != nil {
			st.IngestError = "event ingest status not available: " + err.Error()
		} else {
			st.Ingest = &is
		}
	}
	return st, nil
}

func (s *Server) pipeline() (Pipeline, error) {
	if s.cfg.Pipeline == nil {
		return nil, s.notRunning("event pipeline")
	}
	return s.cfg.Pipeline, nil
}

func (s *Server) rehydrate(r *http.Request) (any, error) {
	p, err := s.pipeline()
	if err != nil {
		return nil, err
	}
	id := r.PathValue("id")
	if _, err := s.cfg.Store.GetAgent(r.Context(), id); err != nil {
		return nil, err
	}
	p.Rehydrate(id)
	return map[string]string{"agent": id, "rehydrate": "on its next event"}, nil
}

func seqParam(r *http.Request) (uint64, error) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		return 0, fault.Invalid("seq", "%q is not a dead-letter sequence number", r.PathValue("seq"))
	}
	return seq, nil
}

func (s *Server) listDLQ(r *http.Request) (any, error) {
	p, err := s.pipeline()
	if err != nil {
		return nil, err
	}
	after, limit := uint64(0), 100
	if a := r.URL.Query().Get("after"); a != "" {
		if after, err = strconv.ParseUint(a, 10, 64); err != nil {
			return nil, fault.Invalid("after", "%q is not a sequence number", a)
		}
	}
	if l := r.URL.Query().Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 1 || limit > 1000 {
			return nil, fault.Invalid("limit", "%q must be an integer from 1 to 1000", l)
		}
	}
	dls, err := p.DeadLetters(r.Context(), after, limit)
	if err != nil {
		return nil, err
	}
	if dls == nil {
		dls = []wire.DeadLetter{}
	}
	return wire.List[wire.DeadLetter]{Items: dls}, nil
}

func (s *Server) getDLQ(r *http.Request) (any, error) {
	p, err := s.pipeline()
	if err != nil {
		return nil, err
	}
	seq, err := seqParam(r)
	if err != nil {
		return nil, err
	}
	return p.DeadLetter(r.Context(), seq)
}

func (s *Server) replayDLQ(r *http.Request) (any, error) {
	p, err := s.pipeline()
	if err != nil {
		return nil, err
	}
	seq, err := seqParam(r)
	if err != nil {
		return nil, err
	}
	if err := p.Replay(r.Context(), seq); err != nil {
		return nil, err
	}
	s.log.Info("dead letter replayed", "seq", seq)
	return map[string]any{"replayed": seq}, nil
}

func (s *Server) purgeOneDLQ(r *http.Request) (any, error) {
	p, err := s.pipeline()
	if err != nil {
		return nil, err
	}
	seq, err := seqParam(r)
	if err != nil {
		return nil, err
	}
	n, err := p.Purge(r.Context(), seq)
	if err != nil {
		return nil, err
	}
	return map[string]any{"purged": n}, nil
}

func (s *Server) purgeAllDLQ(r *http.Request) (any, error) {
	p, err := s.pipeline()
	if err != nil {
		return nil, err
	}
	n, err := p.Purge(r.Context(), 0)
	if err != nil {
		return nil, err
	}
	s.log.Info("dead letters purged", "count", n)
	return map[string]any{"purged": n}, nil
}
