// Package ui serves the hub's web UI under /ui/: the fleet at a glance, agents with their event
// history, migrations with progress and operator actions, sweeps with their runs, failover
// groups with their members and timeline, and the dead letters.
//
// Pages are rendered on the server with html/template from embedded files; the one script
// (static/app.js, hand-written, no build step) only adds confirmation dialogs, in-place form
// posts and live updates, so every page and action works without JavaScript. Live updates come
// over server-sent events (/ui/live): the hub polls the store for a cheap mark of what a page
// shows and tells the page when it changed; the page then fetches itself again and swaps the
// regions marked data-live.
//
// Security: every page and action needs a session made by logging in with a token — the hub's
// admin token or an API token — whose role the session keeps. The session id is in an HttpOnly,
// SameSite=Lax cookie; the store keeps only its hash, with the session's CSRF token, role and
// expiry (so sessions survive restarts and work on every replica; revoking the token ends them).
// What the role cannot do is not offered, and is refused with 403 if posted anyway: each action
// needs the role of the API route that does the same work (roles.go). Every POST carries the CSRF
// token, is refused cross-origin, and is written to the audit log. html/template escapes all
// output, and a strict Content-Security-Policy allows only the hub's own script and style.
package ui

import (
	"embed"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config wires the UI.
type Config struct {
	Store store.Store
	// Migrations is the migration controller; nil while it is not running (pages say so).
	Migrations api.Migrations
	// Pipeline is the event pipeline (ingest status, dead letters); nil while it is not running.
	Pipeline api.Pipeline
	// Sweeps is the sweep service; nil while it is not running (the sweep pages say so).
	Sweeps api.Sweeps
	// Failover is the failover group service; nil while it is not running (the pages say so).
	Failover api.Failover
	Logger   *slog.Logger
	Now      func() time.Time
	// SessionTTL is how long a login lasts (default 12h).
	SessionTTL time.Duration
	// LiveInterval is how often live pages' marks are polled (default 1s).
	LiveInterval time.Duration
	// SecureCookies sets the Secure attribute on cookies even when the request did not arrive
	// over TLS (a TLS-terminating proxy in front of the hub). Requests over TLS always get it.
	SecureCookies bool
	// Version is shown in the footer.
	Version string
	// Access checks login tokens, limits failed logins and writes the audit log; the API's.
	// Nil makes one on Store without a rate limit.
	Access *api.Access
	// Leadership says which hub replica leads, as this replica sees it; nil: not shown.
	Leadership func() *wire.HubLeadership
}

// Server is the UI's HTTP handler.
type Server struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	mux    *http.ServeMux
	pages  map[string]*page
	live   *watcher
	access *api.Access
	// patterns lists the routes registered.
	patterns []string

	closeOnce sync.Once
	closed    chan struct{}
}

// New builds the UI handler. Close ends its live streams (call it when the HTTP server shuts
// down, or Shutdown waits for them).
func New(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.LiveInterval <= 0 {
		cfg.LiveInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Access == nil {
		cfg.Access = api.NewAccess(api.AccessConfig{Store: cfg.Store, Logger: cfg.Logger, Now: cfg.Now})
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, mux: http.NewServeMux(), pages: parsePages(),
		closed: make(chan struct{}), access: cfg.Access}
	s.live = newWatcher(cfg.LiveInterval, s.mark, s.log)
	s.routes()
	return s
}

func (s *Server) routes() {
	static, _ := fs.Sub(staticFS, "static")
	s.handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticHandler(static)))
	s.handleFunc("GET /ui/login", s.loginPage)
	s.handleFunc("POST /ui/login", s.login)
	s.handle("POST /ui/logout", s.action(s.logout))

	s.handle("GET /ui/{$}", s.view(s.dashboard))
	s.handle("GET /ui/agents", s.view(s.agents))
	s.handle("GET /ui/agents/{id}", s.view(s.agent))
	s.handle("GET /ui/fleet", s.view(s.fleetMapPage))
	s.handle("GET /ui/events", s.view(s.events))
	s.handle("GET /ui/migrations", s.view(s.migrations))
	s.handle("GET /ui/migrations/{name}", s.view(s.migration))
	s.handle("POST /ui/migrations/{name}/{action}", s.action(s.actOnMigration))
	s.handle("GET /ui/sweeps", s.view(s.sweeps))
	s.handle("GET /ui/sweeps/{name}", s.view(s.sweep))
	s.handle("GET /ui/sweeps/{name}/runs/{id}", s.view(s.sweepRun))
	s.handle("POST /ui/sweeps/{name}/run", s.action(s.runSweep))
	s.handle("POST /ui/sweeps/{name}/suspend", s.action(s.suspendSweep))
	s.handle("POST /ui/sweeps/{name}/resume", s.action(s.resumeSweep))
	s.handle("GET /ui/failovergroups", s.view(s.failoverGroups))
	s.handle("GET /ui/failovergroups/{name}", s.view(s.failoverGroup))
	s.handle("POST /ui/failovergroups/{name}/pause", s.action(s.pauseFailoverGroup))
	s.handle("POST /ui/failovergroups/{name}/resume", s.action(s.resumeFailoverGroup))
	s.handle("POST /ui/failovergroups/{name}/switchover", s.action(s.switchoverFailoverGroup))
	s.handle("GET /ui/dead-letters", s.view(s.deadLetters))
	s.handle("GET /ui/dead-letters/{seq}", s.view(s.deadLetter))
	s.handle("POST /ui/dead-letters/{seq}/replay", s.action(s.actOnDeadLetter))
	s.handle("POST /ui/dead-letters/{seq}/purge", s.action(s.actOnDeadLetter))
	s.handle("POST /ui/dead-letters/purge", s.action(s.purgeDeadLetters))
	s.handle("GET /ui/audit", s.view(s.auditLog))
	s.handle("GET /ui/live", s.authenticated(http.HandlerFunc(s.liveStream)))
}

// handle registers a route and remembers its pattern (roles_internal_test.go checks every post
// has a role).
func (s *Server) handle(pattern string, h http.Handler) {
	s.patterns = append(s.patterns, pattern)
	s.mux.Handle(pattern, h)
}

func (s *Server) handleFunc(pattern string, h http.HandlerFunc) { s.handle(pattern, h) }

// ServeHTTP implements http.Handler: security headers on every answer, then the route.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if _, pattern := s.mux.Handler(r); pattern == "" {
		// Unknown path or method: a page only for a logged-in operator, so that the shape of
		// the UI is not mapped out by anonymous probing.
		if _, err := s.session(r); err != nil {
			s.toLogin(w, r)
			return
		}
		s.renderError(w, r, nil, http.StatusNotFound, "There is no such page.")
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Close ends the live streams and their pollers. Safe to call twice.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.live.close()
	})
}

func staticHandler(root fs.FS) http.Handler {
	files := http.FileServerFS(root)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		// The files change only with the binary; let browsers revalidate rather than guess.
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
