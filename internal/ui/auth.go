package ui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

const (
	// sessionCookie holds the session id (never stored by the hub, only its hash).
	sessionCookie = "godwit_session"
	// loginCookie holds the login form's CSRF token (double submit): there is no session yet.
	loginCookie = "godwit_login"
	cookiePath  = "/ui/"
	csrfField   = "csrf"
)

type ctxKey struct{}

// current is the logged-in session of a request.
type current struct {
	store.Session
}

// Actor names who did an operator action: the session, "ui:" and the first 8 hex digits of the
// session id's hash (the id itself is secret). The audit log and the hub's log tie it to the
// token the session was made with.
func (c *current) Actor() string { return "ui:" + c.IDHash[:8] }

// Who is the session as the audit log names it: the token's actor and the session.
func (c *current) Who() string { return c.Session.Actor + " (" + c.Actor() + ")" }

// May reports whether the session's role may do what a capability (see capabilities) needs;
// templates use it to leave out what the role cannot do.
func (c *current) May(capability string) bool {
	route, ok := capabilities[capability]
	if !ok {
		return false
	}
	need, public := api.RoleFor(route)
	return public || c.Role.Allows(need)
}

func sessionFrom(ctx context.Context) *current {
	c, _ := ctx.Value(ctxKey{}).(*current)
	return c
}

func randomToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("ui: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func sameSecret(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// session returns the request's valid session, or an error wrapping ErrUnauthenticated.
func (s *Server) session(r *http.Request) (*current, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, fmt.Errorf("not logged in: %w", fault.ErrUnauthenticated)
	}
	sess, err := s.cfg.Store.GetSession(r.Context(), credential.Hash(c.Value), s.now())
	if err != nil {
		return nil, err
	}
	return &current{Session: sess}, nil
}

// cookie makes one of the UI's cookies: HttpOnly, SameSite=Lax, for /ui/ only, and Secure when
// the browser reached the hub over TLS (directly, or through a proxy that says so). A browser
// never sends X-Forwarded-Proto itself, and a wrong "https" could only make it keep the cookie
// from plain HTTP.
func (s *Server) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	secure := s.cfg.SecureCookies || r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
	return &http.Cookie{Name: name, Value: value, Path: cookiePath, MaxAge: maxAge, HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: secure}
}

// toLogin sends a browser to the login page, remembering where it wanted to go.
func (s *Server) toLogin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.renderError(w, r, nil, http.StatusUnauthorized, "You are not logged in (or your session expired). Log in and try again.")
		return
	}
	http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
}

// authenticated lets a request through only with a valid session; it answers 401 (no redirect)
// otherwise. For endpoints that scripts call.
func (s *Server) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.session(r)
		if err != nil {
			if !errors.Is(err, fault.ErrUnauthenticated) {
				s.log.Error("ui: session lookup failed", "err", err)
				http.Error(w, "session store unavailable", http.StatusServiceUnavailable)
				return
			}
			http.Error(w, "not logged in", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, c)))
	})
}

// pageFunc builds a page's view; a nil view means the handler answered itself.
type pageFunc func(w http.ResponseWriter, r *http.Request, c *current) (*view, error)

// view serves a GET page to a logged-in operator; anyone else goes to the login page.
func (s *Server) view(fn pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.session(r)
		if err != nil {
			if !errors.Is(err, fault.ErrUnauthenticated) {
				s.renderError(w, r, nil, http.StatusServiceUnavailable, "The hub's store did not answer; try again.")
				s.log.Error("ui: session lookup failed", "err", err)
				return
			}
			s.toLogin(w, r)
			return
		}
		if capability, ok := routeCapabilities[r.Pattern]; ok && !c.May(capability) {
			route, need := s.need(r.Pattern)
			s.fail(w, r, c, api.Forbidden(api.Principal{Role: c.Role}, need, "see this page (the data of "+route+")"))
			return
		}
		v, err := fn(w, r, c)
		if err != nil {
			s.fail(w, r, c, err)
			return
		}
		if v != nil {
			s.render(w, r, c, http.StatusOK, "", v)
		}
	})
}

// actionFunc performs a state change and answers (normally with a redirect).
type actionFunc func(w http.ResponseWriter, r *http.Request, c *current) error

// action serves a POST: it needs a session, a same-origin request, the session's CSRF token and
// the role of the API route the action does the work of (actionRoutes). Every post is audited,
// whatever its outcome.
func (s *Server) action(fn actionFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := newRecorder()
		var c *current
		s.serveAction(rec, r, fn, &c)
		s.audit(r, c, rec.code)
		rec.replay(w)
	})
}

// audit writes the audit entry of a web UI post (c is nil when there was no session).
func (s *Server) audit(r *http.Request, c *current, code int) {
	if code == http.StatusTooManyRequests {
		return // counted, not audited: see api.Access
	}
	e := wire.AuditEntry{Method: r.Method, Path: r.URL.Path, Route: r.Pattern, Status: code,
		Remote: s.access.Client(r).String(), Via: wire.ViaUI}
	if c != nil {
		e.TokenID, e.Actor, e.Role = c.TokenID, c.Who(), c.Role
	}
	s.access.Audit(r.Context(), e)
}

func (s *Server) serveAction(w http.ResponseWriter, r *http.Request, fn actionFunc, cur **current) {
	if err := sameOrigin(r); err != nil {
		s.log.Warn("ui: cross-origin post refused", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
		s.renderError(w, r, nil, http.StatusForbidden, "This request came from another site and was refused.")
		return
	}
	c, err := s.session(r)
	if err != nil {
		if !errors.Is(err, fault.ErrUnauthenticated) {
			s.renderError(w, r, nil, http.StatusServiceUnavailable, "The hub's store did not answer; try again.")
			return
		}
		s.toLogin(w, r)
		return
	}
	*cur = c
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		s.renderError(w, r, c, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if !sameSecret(r.PostForm.Get(csrfField), c.CSRF) {
		s.log.Warn("ui: post without a valid csrf token refused", "path", r.URL.Path, "remote", r.RemoteAddr)
		s.renderError(w, r, c, http.StatusForbidden, "This form has expired or did not come from this page. Go back, reload the page and try again.")
		return
	}
	if route, need := s.need(r.Pattern); !c.Role.Allows(need) {
		s.log.Warn("ui: action refused to the session's role", "path", r.URL.Path, "session", c.Actor(), "role", c.Role, "needs", need)
		s.fail(w, r, c, api.Forbidden(api.Principal{Role: c.Role}, need, "do this (the work of "+route+")"))
		return
	}
	if err := fn(w, r, c); err != nil {
		s.fail(w, r, c, err)
	}
}

// sameOrigin refuses requests a browser marks as coming from another site. Browsers send
// Sec-Fetch-Site and Origin on POSTs; clients that send neither (curl) are not browsers, and the
// CSRF token still applies to them.
func sameOrigin(r *http.Request) error {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return fmt.Errorf("Sec-Fetch-Site: %s", r.Header.Get("Sec-Fetch-Site"))
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Errorf("origin %q is not %q", o, r.Host)
		}
	} else if o == "null" {
		return errors.New("origin null")
	}
	return nil
}

type loginData struct {
	Next  string
	CSRF  string
	Error string
}

// safeNext keeps a post-login redirect on this UI.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/"
	}
	return next
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, err := s.session(r); err == nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.renderLogin(w, r, http.StatusOK, "")
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, code int, msg string) {
	// One token per browser, kept while it is valid, so two open login tabs both work.
	token := ""
	if c, err := r.Cookie(loginCookie); err == nil && len(c.Value) == 43 {
		token = c.Value
	} else {
		token = randomToken()
	}
	http.SetCookie(w, s.cookie(r, loginCookie, token, 3600))
	s.render(w, r, nil, code, "login", loginData{Next: safeNext(r.FormValue("next")), CSRF: token, Error: msg})
}

// login checks a token and starts a session with its role. Every attempt is audited (those
// refused by the rate limit excepted).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	rec := newRecorder()
	var c *current
	s.serveLogin(rec, r, &c)
	s.audit(r, c, rec.code)
	rec.replay(w)
}

func (s *Server) serveLogin(w http.ResponseWriter, r *http.Request, cur **current) {
	if err := sameOrigin(r); err != nil {
		s.log.Warn("ui: cross-origin login refused", "remote", r.RemoteAddr, "err", err)
		s.renderError(w, r, nil, http.StatusForbidden, "This request came from another site and was refused.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		s.renderLogin(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	lc, err := r.Cookie(loginCookie)
	if err != nil || !sameSecret(r.PostForm.Get(csrfField), lc.Value) {
		s.renderLogin(w, r, http.StatusForbidden, "The login form expired; please try again.")
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	if token == "" {
		s.renderLogin(w, r, http.StatusUnauthorized, "Enter a token.")
		return
	}
	client := s.access.Client(r)
	p, err := s.access.Authenticate(r.Context(), client, wire.ViaUI, "Bearer "+token)
	if err != nil {
		var rl *fault.RateLimited
		switch {
		case errors.As(err, &rl):
			w.Header().Set("Retry-After", strconv.Itoa(api.RetryAfterSeconds(rl.RetryAfter)))
			s.renderLogin(w, r, http.StatusTooManyRequests, "Too many failed attempts from your address. Try again in "+
				rl.RetryAfter.Round(time.Second).String()+".")
		case errors.Is(err, fault.ErrUnauthenticated):
			s.log.Warn("ui: login refused", "remote", client, "err", err)
			s.renderLogin(w, r, http.StatusUnauthorized, "That is not a valid token (or it expired, or was revoked).")
		default:
			s.log.Error("ui: token check failed", "err", err)
			s.renderLogin(w, r, http.StatusServiceUnavailable, "The hub's store did not answer; try again.")
		}
		return
	}
	// A fresh id on every login (no session fixation); an older session of this browser ends.
	if old, err := r.Cookie(sessionCookie); err == nil && old.Value != "" {
		_ = s.cfg.Store.DeleteSession(r.Context(), credential.Hash(old.Value))
	}
	if n, err := s.cfg.Store.DeleteExpiredSessions(r.Context(), s.now()); err != nil {
		s.log.Warn("ui: could not delete expired sessions", "err", err)
	} else if n > 0 {
		s.log.Info("ui: expired sessions deleted", "count", n)
	}
	id := randomToken()
	now := s.now().UTC()
	expires := now.Add(s.cfg.SessionTTL)
	if !p.ExpiresAt.IsZero() && p.ExpiresAt.Before(expires) {
		expires = p.ExpiresAt // a session never outlives its token
	}
	sess := store.Session{IDHash: credential.Hash(id), CSRF: randomToken(), CreatedAt: now, ExpiresAt: expires,
		TokenID: p.TokenID, Role: p.Role, Actor: p.Actor}
	if err := s.cfg.Store.CreateSession(r.Context(), sess); err != nil {
		s.log.Error("ui: create session failed", "err", err)
		s.renderLogin(w, r, http.StatusServiceUnavailable, "The session could not be stored; try again.")
		return
	}
	c := &current{Session: sess}
	*cur = c
	s.log.Info("ui: logged in", "session", c.Actor(), "token", p.TokenID, "actor", p.Actor, "role", p.Role, "remote", client,
		"expires", sess.ExpiresAt)
	http.SetCookie(w, s.cookie(r, sessionCookie, id, int(expires.Sub(now).Seconds())))
	http.SetCookie(w, s.cookie(r, loginCookie, "", -1))
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, c *current) error {
	if err := s.cfg.Store.DeleteSession(r.Context(), c.IDHash); err != nil {
		return err
	}
	s.log.Info("ui: logged out", "session", c.Actor(), "remote", r.RemoteAddr)
	http.SetCookie(w, s.cookie(r, sessionCookie, "", -1))
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
	return nil
}
