package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Bounds of a token's lifetime: API tokens always expire, at most a year and a day after they
// are made.
const (
	minTokenTTL = time.Minute
	maxTokenTTL = 366 * 24 * time.Hour
	// maxDescription bounds a token's description, which becomes its actor in events and the
	// audit log.
	maxDescription = 256
)

func (s *Server) accessRoutes() {
	s.route("POST /api/v1/api-tokens", http.StatusCreated, s.createAPIToken)
	s.route("GET /api/v1/api-tokens", http.StatusOK, s.listAPITokens)
	s.route("POST /api/v1/api-tokens/{id}/revoke", http.StatusOK, s.revokeAPIToken)
	s.route("GET /api/v1/audit", http.StatusOK, s.listAudit)
}

// parseTTL reads a token's lifetime ("720h").
func parseTTL(v string) (time.Duration, error) {
	ttl, err := time.ParseDuration(v)
	if err != nil {
		return 0, fault.Invalid("ttl", "%q is not a duration (use e.g. 30m, 24h)", v)
	}
	if ttl < minTokenTTL || ttl > maxTokenTTL {
		return 0, fault.Invalid("ttl", "must be between 1m and 8784h (got %s)", ttl)
	}
	return ttl, nil
}

func (s *Server) createAPIToken(r *http.Request) (any, error) {
	var req wire.CreateAPITokenRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if !req.Role.Valid() {
		return nil, fault.Invalid("role", "%q is not viewer, operator or admin", req.Role)
	}
	if req.TTL == "" {
		return nil, fault.Invalid("ttl", "is required: an API token always expires (e.g. 720h)")
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		return nil, err
	}
	if err := wire.CheckText("description", req.Description, maxDescription); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	t := wire.APIToken{ID: id.String(), Role: req.Role, Description: req.Description, CreatedAt: now, ExpiresAt: now.Add(ttl),
		CreatedBy: principal(r).TokenID}
	secret := credential.New(credential.PrefixAPI)
	if err := s.cfg.Store.CreateAPIToken(r.Context(), t, credential.Hash(secret)); err != nil {
		return nil, err
	}
	setTarget(r, "api token %s (%s)", t.ID, t.Role)
	s.log.Info("api token created", "token", t.ID, "role", t.Role, "expires", t.ExpiresAt, "by", principal(r).TokenID)
	return wire.CreateAPITokenResponse{APIToken: t, Token: secret}, nil
}

func (s *Server) listAPITokens(r *http.Request) (any, error) {
	ts, err := s.cfg.Store.ListAPITokens(r.Context())
	if err != nil {
		return nil, err
	}
	return wire.List[wire.APIToken]{Items: ts}, nil
}

func (s *Server) revokeAPIToken(r *http.Request) (any, error) {
	t, err := s.cfg.Store.RevokeAPIToken(r.Context(), r.PathValue("id"), s.now().UTC())
	if err != nil {
		return nil, err
	}
	s.log.Info("api token revoked", "token", t.ID, "role", t.Role, "by", principal(r).TokenID)
	return t, nil
}

// ParseAuditQuery turns URL parameters into a store query; every bad value is a 400 that names
// its parameter. now anchors a relative since ("24h").
func ParseAuditQuery(v map[string][]string, now time.Time) (store.AuditQuery, error) {
	known := map[string]bool{"since": true, "actor": true, "action": true, "limit": true, "cursor": true}
	for k := range v {
		if !known[k] {
			return store.AuditQuery{}, fault.Invalid(k, "unknown parameter (use since, actor, action, limit, cursor)")
		}
	}
	get := func(k string) string {
		if vs := v[k]; len(vs) > 0 {
			return vs[0]
		}
		return ""
	}
	q := store.AuditQuery{Actor: get("actor"), Action: get("action"), Cursor: get("cursor"), Limit: 100}
	var err error
	if q.Since, err = parseInstant(get("since"), now); err != nil {
		return q, fault.Invalid("since", "%v", err)
	}
	if l := get("limit"); l != "" {
		if q.Limit, err = parseLimit(l); err != nil {
			return q, err
		}
	}
	return q, nil
}

func (s *Server) listAudit(r *http.Request) (any, error) {
	q, err := ParseAuditQuery(r.URL.Query(), s.now())
	if err != nil {
		return nil, err
	}
	page, next, err := s.cfg.Store.QueryAudit(r.Context(), q)
	if err != nil {
		return nil, err
	}
	return wire.List[wire.AuditEntry]{Items: page, NextCursor: next}, nil
}

// parseLimit reads a page size of 1 to 1000.
func parseLimit(l string) (int, error) {
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > 1000 {
		return 0, fault.Invalid("limit", "%q must be an integer from 1 to 1000", l)
	}
	return n, nil
}
