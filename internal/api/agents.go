package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/google/uuid"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

func (s *Server) enroll(r *http.Request) (any, error) {
	client := s.access.Client(r)
	if err := s.access.Allow(client, viaEnroll); err != nil {
		return nil, err
	}
	// Everything in the body comes from a node: the whole of it is bounded, then each field.
	r.Body = http.MaxBytesReader(nil, r.Body, wire.MaxEnrollBodyBytes)
	var req wire.EnrollRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.Token == "" {
		s.access.Failed(client, viaEnroll)
		return nil, fmt.Errorf("token is required: %w", fault.ErrUnauthenticated)
	}
	// An agent sends the secret alone; the token as printed (with its CA fingerprint) is taken
	// too. A token of the wrong shape is simply not a valid token.
	secret, _, err := credential.ParseEnrollToken(req.Token)
	if err != nil || len(req.Token) > wire.MaxEnrollTokenLength {
		s.access.Failed(client, viaEnroll)
		return nil, fmt.Errorf("invalid enrollment token: %w", fault.ErrUnauthenticated)
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	password := credential.New(credential.PrefixAgent)
	now := s.now().UTC()
	a := wire.Agent{
		ID: id.String(), Name: req.Name, Labels: req.Labels, Version: req.Version,
		System: req.System, EnrolledAt: now, Status: wire.StatusUnknown,
	}
	// Never the hub's own credentials: whatever the configured URLs hold, agents get none of it.
	urls := make([]string, 0, len(s.cfg.Bus.AgentURLs()))
	for _, u := range s.cfg.Bus.AgentURLs() {
		clean, err := credential.StripUserinfo(u)
		if err != nil {
			return nil, err
		}
		urls = append(urls, clean)
	}
	setTarget(r, "agent %s (%s)", a.ID, a.Name)
	if err := s.cfg.Store.Enroll(r.Context(), credential.Hash(secret), now, a, credential.Hash(password)); err != nil {
		if errors.Is(err, fault.ErrUnauthenticated) || errors.Is(err, fault.ErrForbidden) {
			s.access.Failed(client, viaEnroll)
		}
		return nil, err
	}
	s.log.Info("agent enrolled", "agent", a.ID, "name", a.Name, "remote", client)
	return wire.EnrollResponse{
		AgentID: a.ID, Name: a.Name, NATSURLs: urls,
		NATSUser: a.ID, NATSPassword: password, NATSCA: string(s.cfg.NATSCA),
		HeartbeatInterval: s.cfg.HeartbeatInterval.String(),
	}, nil
}

// agentSelf lets an agent, authenticated with its own NATS credentials (HTTP Basic), learn
// whether it is still enrolled. An agent whose NATS login is refused asks here to tell
// "revoked" (403: stop) from "the hub could not check right now" (5xx: keep retrying).
func (s *Server) agentSelf(r *http.Request) (any, error) {
	client := s.access.Client(r)
	if err := s.access.Allow(client, viaAgent); err != nil {
		return nil, err
	}
	id, password, ok := r.BasicAuth()
	if !ok {
		s.access.Failed(client, viaAgent)
		return nil, fmt.Errorf("agent credentials required (HTTP Basic): %w", fault.ErrUnauthenticated)
	}
	hash, revoked, err := s.cfg.Store.AgentCredential(r.Context(), id)
	if errors.Is(err, fault.ErrNotFound) || (err == nil && !credential.Matches(password, hash)) {
		s.access.Failed(client, viaAgent)
		return nil, fmt.Errorf("unknown agent or wrong password: %w", fault.ErrUnauthenticated)
	}
	if err != nil {
		return nil, err
	}
	if revoked {
		return nil, fmt.Errorf("agent %s is revoked: %w", id, fault.ErrForbidden)
	}
	return map[string]string{"id": id, "status": "enrolled"}, nil
}

// Pages of GET /api/v1/agents: by name then id, keyset-paged, so a fleet of 10,000 is read in
// pages rather than in one 3.6 MB answer.
const (
	defaultAgentLimit = 500
	maxAgentLimit     = 1000
)

func (s *Server) listAgents(r *http.Request) (any, error) {
	q := r.URL.Query()
	for k := range q {
		if k != "limit" && k != "cursor" {
			return nil, fault.Invalid(k, "unknown parameter (use limit, cursor)")
		}
	}
	limit := defaultAgentLimit
	if v := q.Get("limit"); v != "" {
		var err error
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxAgentLimit {
			return nil, fault.Invalid("limit", "must be a number from 1 to %d, not %q", maxAgentLimit, v)
		}
	}
	agents, next, err := s.cfg.Store.PageAgents(r.Context(), store.AgentQuery{Limit: limit, Cursor: q.Get("cursor")})
	if err != nil {
		return nil, err
	}
	if agents == nil {
		agents = []wire.Agent{}
	}
	return wire.List[wire.Agent]{Items: agents, NextCursor: next}, nil
}

func (s *Server) getAgent(r *http.Request) (any, error) {
	return s.cfg.Store.GetAgent(r.Context(), r.PathValue("id"))
}

func (s *Server) revokeAgent(r *http.Request) (any, error) {
	id := r.PathValue("id")
	if err := s.cfg.Store.RevokeAgent(r.Context(), id, s.now().UTC()); err != nil {
		return nil, err
	}
	// The revocation is committed: a reconnect is refused whatever happens next. Closing the live
	// connections is best effort; a failure is logged, and the agent is refused on its next
	// connection attempt.
	n, err := s.cfg.Bus.DisconnectAgent(r.Context(), id)
	if err != nil {
		s.log.Warn("agent revoked; closing its live connections failed", "agent", id, "connections_closed", n, "err", err)
	} else {
		s.log.Info("agent revoked", "agent", id, "connections_closed", n)
	}
	return s.cfg.Store.GetAgent(r.Context(), id)
}

func (s *Server) createToken(r *http.Request) (any, error) {
	var req wire.CreateTokenRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.Uses < 1 || req.Uses > 1_000_000 {
		return nil, fault.Invalid("uses", "must be between 1 and 1000000 (got %d)", req.Uses)
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
	t := wire.EnrollToken{ID: id.String(), Description: req.Description, MaxUses: req.Uses, ExpiresAt: now.Add(ttl), CreatedAt: now}
	secret := credential.New(credential.PrefixEnroll)
	if err := s.cfg.Store.CreateEnrollToken(r.Context(), t, credential.Hash(secret)); err != nil {
		return nil, err
	}
	setTarget(r, "enrollment token %s", t.ID)
	return wire.CreateTokenResponse{EnrollToken: t, Token: credential.WithPin(secret, s.cfg.CAFingerprint)}, nil
}

func (s *Server) listTokens(r *http.Request) (any, error) {
	ts, err := s.cfg.Store.ListEnrollTokens(r.Context())
	if err != nil {
		return nil, err
	}
	return wire.List[wire.EnrollToken]{Items: ts}, nil
}

func (s *Server) deleteToken(r *http.Request) (any, error) {
	if err := s.cfg.Store.DeleteEnrollToken(r.Context(), r.PathValue("id")); err != nil {
		return nil, err
	}
	return map[string]string{"deleted": r.PathValue("id")}, nil
}
