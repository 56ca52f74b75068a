// Package api serves the hub's REST API under /api/v1, plus /healthz, /readyz and /metrics.
//
// Handlers return (any, error); one wrapper writes the JSON or maps the error to a status code in
// exactly one function (StatusOf), so every error body has the same shape and no stack trace
// ever reaches a client.
//
// Every route but enrollment and an agent's self-check needs a bearer token: the hub's admin
// token or an API token with a role. The least role a route needs is in one table (routeRoles);
// a caller whose role does not reach it gets 403. Every call of a method other than GET is
// written to the audit log with who, what, the outcome and from where; an address that fails to
// authenticate too often gets 429 for a while (Access).
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Bus is what the API needs of the message bus.
type Bus interface {
	// Ready reports whether the bus is connected and JetStream answers.
	Ready(ctx context.Context) error
	// AgentURLs are the NATS URLs handed to agents at enrollment.
	AgentURLs() []string
	// DisconnectAgent cuts an agent's live connections (after revocation) and returns how many.
	DisconnectAgent(ctx context.Context, agentID string) (int, error)
}

// Config wires the API.
type Config struct {
	Store      store.Store
	Bus        Bus
	Pipeline   Pipeline   // nil until the event pipeline runs
	Migrations Migrations // nil until the migration controller runs
	Sweeps     Sweeps     // nil until the sweep service runs
	Failover   Failover   // nil until the failover group service runs
	// Leadership tells the status which replica leads, as this replica sees it; nil: not shown.
	Leadership func() *wire.HubLeadership
	// Pending, when set, says why the parts left nil above are not running yet (a hub replica
	// that waits for its NATS peers); the 503 of a route that needs one of them carries it.
	Pending           func() string
	Logger            *slog.Logger
	Registry          *prometheus.Registry
	Now               func() time.Time
	MaxBodyBytes      int64
	HeartbeatInterval time.Duration
	// CAFingerprint is the fingerprint of the CA agents pin (credential.Fingerprint); enrollment
	// tokens carry it. Empty when the hub serves no TLS of its own CA.
	CAFingerprint string
	// NATSCA is the PEM CA an external NATS cluster's TLS is verified with, handed to agents.
	NATSCA []byte
	// Access checks tokens, limits failed attempts and writes the audit log; shared with the
	// web UI. Nil makes one on Store without a rate limit.
	Access *Access
}

// Server is the HTTP handler of the hub.
type Server struct {
	cfg     Config
	mux     *http.ServeMux
	log     *slog.Logger
	now     func() time.Time
	reqs    *prometheus.CounterVec
	latency *prometheus.HistogramVec
	access  *Access
	// patterns lists every API route registered, for the OpenAPI test.
	patterns []string
}

// New builds the handler and registers its metrics.
func New(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Access == nil {
		cfg.Access = NewAccess(AccessConfig{Store: cfg.Store, Logger: cfg.Logger, Registry: cfg.Registry, Now: cfg.Now})
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger, now: cfg.Now, access: cfg.Access}
	s.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "godwit_http_requests_total", Help: "HTTP requests by route and status code.",
	}, []string{"route", "code"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "godwit_http_request_duration_seconds", Help: "HTTP request latency by route.",
		Buckets: prometheus.DefBuckets,
	}, []string{"route"})
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.reqs, s.latency)
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	}
	s.routes()
	return s
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /api/v1/openapi.yaml", serveOpenAPI)

	s.route("POST /api/v1/enroll", http.StatusCreated, s.enroll)
	s.route("GET /api/v1/agents/self", http.StatusOK, s.agentSelf)
	s.route("GET /api/v1/agents", http.StatusOK, s.listAgents)
	s.route("GET /api/v1/agents/{id}", http.StatusOK, s.getAgent)
	s.route("POST /api/v1/agents/{id}/revoke", http.StatusOK, s.revokeAgent)
	s.route("POST /api/v1/tokens", http.StatusCreated, s.createToken)
	s.route("GET /api/v1/tokens", http.StatusOK, s.listTokens)
	s.route("DELETE /api/v1/tokens/{id}", http.StatusOK, s.deleteToken)
	s.route("GET /api/v1/version", http.StatusOK, s.version)
	s.accessRoutes()
	s.eventRoutes()
	s.migrationRoutes()
	s.sweepRoutes()
	s.failoverRoutes()
}

// Handle registers an extra route; later components (events, migrations) add theirs. Its role
// comes from routeRoles, like every route's.
func (s *Server) Handle(pattern string, okStatus int, fn HandlerFunc) { s.route(pattern, okStatus, fn) }

// HandlerFunc is the shape of every API handler.
type HandlerFunc func(r *http.Request) (any, error)

// route registers an API route. Unless it is public, a caller needs a valid token whose role
// reaches the route's in routeRoles (admin for a route missing there).
func (s *Server) route(pattern string, okStatus int, fn HandlerFunc) {
	s.patterns = append(s.patterns, pattern)
	need, public := RoleFor(pattern)
	params := pathParams(pattern)
	// The request's text is checked after authentication: a caller without a token learns
	// nothing from a 400.
	checked := func(r *http.Request) (any, error) {
		if err := checkRequestText(r, params); err != nil {
			return nil, err
		}
		return fn(r)
	}
	if public {
		s.mux.Handle(pattern, s.wrap(pattern, okStatus, checked))
		return
	}
	s.mux.Handle(pattern, s.wrap(pattern, okStatus, func(r *http.Request) (any, error) {
		p, err := s.access.Authenticate(r.Context(), s.access.Client(r), viaAPI, r.Header.Get("Authorization"))
		if err != nil {
			return nil, err
		}
		callOf(r).who = p
		if !p.Role.Allows(need) {
			return nil, Forbidden(p, need, "call "+pattern)
		}
		return checked(r)
	}))
}

// pathParams names the wildcards of a route pattern ("{name}", "{path...}").
func pathParams(pattern string) []string {
	var names []string
	for _, seg := range strings.Split(pattern, "/") {
		if name, ok := strings.CutPrefix(seg, "{"); ok {
			names = append(names, strings.TrimSuffix(strings.TrimSuffix(name, "}"), "..."))
		}
	}
	return names
}

// checkRequestText refuses a path segment (params: the route's wildcards) or query parameter
// that is not valid UTF-8 or holds a NUL byte, naming it: no store keeps or compares such a
// string (PostgreSQL refuses it outright), so it names nothing that exists and filters nothing.
func checkRequestText(r *http.Request, params []string) error {
	for _, name := range params {
		if err := storableText(name, r.PathValue(name)); err != nil {
			return err
		}
	}
	for k, vs := range r.URL.Query() {
		if err := storableText("query", k); err != nil {
			return err
		}
		for _, v := range vs {
			if err := storableText(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

func storableText(field, v string) error {
	switch {
	case !utf8.ValidString(v):
		return fault.Invalid(field, "%q is not valid UTF-8", v)
	case strings.IndexByte(v, 0) >= 0:
		return fault.Invalid(field, "%q contains a NUL byte", v)
	}
	return nil
}

// call is what the wrapper learns of a request while its handler runs, for the audit log.
type call struct {
	who    Principal
	target string
}

type callKey struct{}

// callOf returns the request's call record (a throwaway one outside wrap).
func callOf(r *http.Request) *call {
	if c, ok := r.Context().Value(callKey{}).(*call); ok {
		return c
	}
	return &call{}
}

// principal is the authenticated caller of a request.
func principal(r *http.Request) Principal { return callOf(r).who }

// setTarget names what a call acted on when its path does not (an applied migration, a
// created token, an enrolled agent).
func setTarget(r *http.Request, format string, args ...any) {
	callOf(r).target = fmt.Sprintf(format, args...)
}

func (s *Server) wrap(route string, okStatus int, fn HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		c := &call{}
		r = r.WithContext(context.WithValue(r.Context(), callKey{}, c))
		v, err := fn(r)
		code := okStatus
		if err != nil {
			code = StatusOf(err)
			if code >= 500 {
				s.log.Error("api request failed", "route", route, "err", err)
			}
		}
		// Written before the answer, so a client that has its answer finds the call audited.
		// Calls refused by the rate limit are counted, not audited: they would let one address
		// write without bound.
		if Audited(r.Method) && code != http.StatusTooManyRequests {
			s.access.Audit(r.Context(), wire.AuditEntry{TokenID: c.who.TokenID, Actor: c.who.Actor, Role: c.who.Role,
				Method: r.Method, Path: r.URL.Path, Route: route, Target: c.target, Status: code,
				Remote: s.access.Client(r).String(), Via: wire.ViaAPI})
		}
		if err != nil {
			writeError(w, code, err)
		} else {
			writeJSON(w, code, v)
		}
		s.reqs.WithLabelValues(route, strconv.Itoa(code)).Inc()
		s.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// ServeHTTP implements http.Handler. Unknown routes and methods get JSON errors too.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			r2 := r.Clone(r.Context())
			r2.Method = m
			if _, p := s.mux.Handler(r2); p != "" {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed on %s", r.Method, r.URL.Path))
			return
		}
		writeError(w, http.StatusNotFound, fmt.Errorf("no such endpoint: %s %s: %w", r.Method, r.URL.Path, fault.ErrNotFound))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// StatusClientClosedRequest is the status a call gets when its client went away before it was
// answered (the request's context cancelled): nobody reads the answer, but the audit log and the
// request metrics say what happened, and it is not logged as the hub's failure. The code is the
// one proxies use for it.
const StatusClientClosedRequest = 499

// StatusOf is the one place domain errors become HTTP status codes (the API and the UI use it).
func StatusOf(err error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe), errors.Is(err, fault.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, fault.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, fault.ErrUnauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, fault.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, fault.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, fault.ErrConflict), errors.Is(err, fault.ErrFenced):
		return http.StatusConflict
	case errors.Is(err, fault.ErrRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, fault.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled):
		return StatusClientClosedRequest
	default:
		return http.StatusInternalServerError
	}
}

func writeError(w http.ResponseWriter, code int, err error) {
	msg := err.Error()
	c := fault.Code(err)
	switch code {
	case http.StatusInternalServerError:
		msg = "internal error; see the hub log"
	case http.StatusRequestEntityTooLarge:
		c = fault.ErrTooLarge.Error()
	case http.StatusMethodNotAllowed:
		c = "method_not_allowed"
	case http.StatusTooManyRequests:
		if rl := (*fault.RateLimited)(nil); errors.As(err, &rl) {
			w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds(rl.RetryAfter)))
		}
	}
	// Strip the trailing ": <code>" that wrapping a sentinel leaves; the code field carries it.
	msg = strings.TrimSuffix(msg, ": "+c)
	writeJSON(w, code, wire.ErrorBody{Error: wire.ErrorDetail{Code: c, Message: msg}})
}

// RetryAfterSeconds is a Retry-After value: whole seconds, rounded up, at least 1.
func RetryAfterSeconds(d time.Duration) int { return max(1, int((d+time.Second-1)/time.Second)) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

// decode reads one JSON object into v, strictly: unknown fields, trailing data and oversized
// bodies are errors that say what is wrong.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return fmt.Errorf("request body larger than %d bytes: %w", mbe.Limit, fault.ErrTooLarge)
		case errors.Is(err, io.EOF):
			return fmt.Errorf("request body is empty; expected a JSON object: %w", fault.ErrInvalid)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("request body is not valid JSON (truncated): %w", fault.ErrInvalid)
		case errors.As(err, &se):
			return fmt.Errorf("request body is not valid JSON (at byte %d): %w", se.Offset, fault.ErrInvalid)
		case errors.As(err, &te):
			return fault.Invalid(te.Field, "must be a JSON %s", te.Type)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return fault.Invalid(strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`), "unknown field")
		default:
			return fmt.Errorf("request body: %v: %w", err, fault.ErrInvalid)
		}
	}
	if dec.More() {
		return fmt.Errorf("request body has data after the JSON object: %w", fault.ErrInvalid)
	}
	return nil
}

// notRunning is the 503 of a route whose part (what) is nil: it says why when the hub knows.
func (s *Server) notRunning(what string) error {
	if s.cfg.Pending != nil {
		if why := s.cfg.Pending(); why != "" {
			return fmt.Errorf("%s not running yet: %s: %w", what, why, fault.ErrUnavailable)
		}
	}
	return fmt.Errorf("%s not running: %w", what, fault.ErrUnavailable)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"store": "ok", "bus": "ok"}
	ready := true
	if err := s.cfg.Store.Ping(ctx); err != nil {
		checks["store"], ready = err.Error(), false
	}
	if s.cfg.Bus == nil {
		checks["bus"], ready = "not started", false
	} else if err := s.cfg.Bus.Ready(ctx); err != nil {
		checks["bus"], ready = err.Error(), false
	}
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"ready": ready, "checks": checks})
}
