// Package ui serves the hub's web UI under /ui/: the fleet at a glance, agents with their event
// history, migrations with progress and operator actions, sweeps with their runs, and the dead
// letters.
//
// Pages are rendered on the server with html/template from embedded files; the one script
// (static/app.js, hand-written, no build step) only adds confirmation dialogs, in-place form
// posts and live updates, so every page and action works without JavaScript. Live updates come
// over server-sent events (/ui/live): the hub polls the store for a cheap mark of what a page
// shows and tells the page when it changed; the page then fetches itself again and swaps the
// regions marked data-live.
//
// Security: every page and action needs a session made by logging in with the admin token. The
// session id is in an HttpOnly, SameSite=Lax cookie; the store keeps only its hash, with the
// session's CSRF token and expiry (so sessions survive restarts and work on every replica).
// Every POST carries the CSRF token and is refused cross-origin. html/template escapes all
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
	Logger *slog.Logger
	Now    func() time.Time
	// SessionTTL is how long a login lasts (default 12h).
	SessionTTL time.Duration
	// LiveInterval is how often live pages' marks are polled (default 1s).
	LiveInterval time.Duration
	// SecureCookies sets the Secure attribute on cookies even when the request did not arrive
	// over TLS (a TLS-terminating proxy in front of the hub). Requests over TLS always get it.
	SecureCookies bool
	// Version is shown in the footer.
	Version string
}

// Server is the UI's HTTP handler.
type Server struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	mux   *http.ServeMux
	pages map[string]*page
	live  *watcher

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
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, mux: http.NewServeMux(), pages: parsePages(),
		closed: make(chan struct{})}
	s.live = newWatcher(cfg.LiveInterval, s.mark, s.log)
	s.routes()
	return s
}

func (s *Server) routes() {
	static, _ := fs.Sub(staticFS, "static")
	s.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticHandler(static)))
	s.mux.HandleFunc("GET /ui/login", s.loginPage)
	s.mux.HandleFunc("POST /ui/login", s.login)
	s.mux.Handle("POST /ui/logout", s.action(s.logout))

	s.mux.Handle("GET /ui/{$}", s.view(s.dashboard))
	s.mux.Handle("GET /ui/agents", s.view(s.agents))
	s.mux.Handle("GET /ui/agents/{id}", s.view(s.agent))
	s.mux.Handle("GET /ui/events", s.view(s.events))
	s.mux.Handle("GET /ui/migrations", s.view(s.migrations))
	s.mux.Handle("GET /ui/migrations/{name}", s.view(s.migration))
	s.mux.Handle("POST /ui/migrations/{name}/{action}", s.action(s.actOnMigration))
	s.mux.Handle("GET /ui/sweeps", s.view(s.sweeps))
	s.mux.Handle("GET /ui/sweeps/{name}", s.view(s.sweep))
	s.mux.Handle("POST /ui/sweeps/{name}/run", s.action(s.runSweep))
	s.mux.Handle("GET /ui/dead-letters", s.view(s.deadLetters))
	s.mux.Handle("GET /ui/dead-letters/{seq}", s.view(s.deadLetter))
	s.mux.Handle("POST /ui/dead-letters/{seq}/{action}", s.action(s.actOnDeadLetter))
	s.mux.Handle("POST /ui/dead-letters/purge", s.action(s.purgeDeadLetters))
	s.mux.Handle("GET /ui/live", s.authenticated(http.HandlerFunc(s.liveStream)))
}

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
