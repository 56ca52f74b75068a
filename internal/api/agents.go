package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

func (s *Server) enroll(r *http.Request) (any, error) {
	var req wire.EnrollRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.Token == "" {
		return nil, fmt.Errorf("token is required: %w", fault.ErrUnauthenticated)
	}
	if err := validateEnroll(req); err != nil {
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
	if err := s.cfg.Store.Enroll(r.Context(), credential.Hash(req.Token), now, a, credential.Hash(password)); err != nil {
		return nil, err
	}
	s.log.Info("agent enrolled", "agent", a.ID, "name", a.Name)
	return wire.EnrollResponse{
		AgentID: a.ID, Name: a.Name, NATSURLs: s.cfg.Bus.AgentURLs(),
		NATSUser: a.ID, NATSPassword: password,
		HeartbeatInterval: s.cfg.HeartbeatInterval.String(),
	}, nil
}

func validateEnroll(req wire.EnrollRequest) error {
	if req.Name == "" || utf8.RuneCountInString(req.Name) > 128 || strings.ContainsAny(req.Name, "\x00\n\r\t") {
		return fault.Invalid("name", "must be 1 to 128 printable characters")
	}
	if len(req.Labels) > 64 {
		return fault.Invalid("labels", "at most 64 labels (got %d)", len(req.Labels))
	}
	for k, v := range req.Labels {
		if !labelKeyOK(k) {
			return fault.Invalid("labels", "key %q must be 1-63 letters, digits, '.', '-', '_' or '/'", k)
		}
		if len(v) > 253 {
			return fault.Invalid("labels."+k, "value longer than 253 bytes")
		}
	}
	return nil
}

func labelKeyOK(k string) bool {
	if k == "" || len(k) > 63 {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/", r)) {
			return false
		}
	}
	return true
}

// agentSelf lets an agent, authenticated with its own NATS credentials (HTTP Basic), learn
// whether it is still enrolled. An agent whose NATS login is refused asks here to tell
// "revoked" (403: stop) from "the hub could not check right now" (5xx: keep retrying).
func (s *Server) agentSelf(r *http.Request) (any, error) {
	id, password, ok := r.BasicAuth()
	if !ok {
		return nil, fmt.Errorf("agent credentials required (HTTP Basic): %w", fault.ErrUnauthenticated)
	}
	hash, revoked, err := s.cfg.Store.AgentCredential(r.Context(), id)
	if errors.Is(err, fault.ErrNotFound) || (err == nil && !credential.Matches(password, hash)) {
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

func (s *Server) listAgents(r *http.Request) (any, error) {
	agents, err := s.cfg.Store.ListAgents(r.Context())
	if err != nil {
		return nil, err
	}
	return wire.List[wire.Agent]{Items: agents}, nil
}

func (s *Server) getAgent(r *http.Request) (any, error) {
	return s.cfg.Store.GetAgent(r.Context(), r.PathValue("id"))
}

func (s *Server) revokeAgent(r *http.Request) (any, error) {
	id := r.PathValue("id")
	if err := s.cfg.Store.RevokeAgent(r.Context(), id, s.now().UTC()); err != nil {
		return nil, err
	}
	n := s.cfg.Bus.DisconnectAgent(id)
	s.log.Info("agent revoked", "agent", id, "connections_closed", n)
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
	ttl, err := time.ParseDuration(req.TTL)
	if err != nil {
		return nil, fault.Invalid("ttl", "%q is not a duration (use e.g. 30m, 24h)", req.TTL)
	}
	if ttl < time.Minute || ttl > 366*24*time.Hour {
		return nil, fault.Invalid("ttl", "must be between 1m and 8784h (got %s)", ttl)
	}
	if len(req.Description) > 256 {
		return nil, fault.Invalid("description", "longer than 256 bytes")
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
	return wire.CreateTokenResponse{EnrollToken: t, Token: secret}, nil
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
