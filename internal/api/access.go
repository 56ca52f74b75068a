package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/ratelimit"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// AccessConfig configures Access.
type AccessConfig struct {
	Store store.Store
	// Limiter limits failed attempts per client address; nil limits nothing.
	Limiter *ratelimit.Limiter
	// TrustedProxies are the addresses whose X-Forwarded-For is believed: a request from one of
	// them is taken to come from the address it names. Empty: the connection's address always.
	TrustedProxies []netip.Prefix
	Logger         *slog.Logger
	// Registry receives the metrics; nil keeps them unexported.
	Registry prometheus.Registerer
	Now      func() time.Time
}

// Access is the hub's one authority on who is calling and the record of what they did: it
// checks tokens (the hub's admin token, and API tokens with their role, expiry and
// revocation), limits failed attempts per client address, and writes the audit log. The API
// and the web UI share one.
type Access struct {
	cfg     AccessConfig
	log     *slog.Logger
	failed  *prometheus.CounterVec
	limited *prometheus.CounterVec
	audits  *prometheus.CounterVec
}

// NewAccess returns the access authority and registers its metrics.
func NewAccess(cfg AccessConfig) *Access {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Access{cfg: cfg, log: cfg.Logger}
	a.failed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "godwit_auth_failures_total",
		Help: "Failed authentications (unknown, malformed, expired or revoked tokens and credentials), by where they came in (api, ui, enroll, agent).",
	}, []string{"via"})
	a.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "godwit_auth_rate_limited_total",
		Help: "Requests refused with 429 because their address failed to authenticate too often, by where they came in.",
	}, []string{"via"})
	a.audits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "godwit_audit_entries_total",
		Help: "Audit log writes by result (ok, error).",
	}, []string{"result"})
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(a.failed, a.limited, a.audits)
		if l := cfg.Limiter; l != nil {
			cfg.Registry.MustRegister(
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "godwit_auth_limiter_addresses",
					Help: "Client addresses whose failed attempts the rate limiter remembers."}, func() float64 { return float64(l.Keys()) }),
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "godwit_auth_limiter_evictions_total",
					Help: "Addresses forgotten by the rate limiter while they still counted failures, because its table was full."},
					func() float64 { return float64(l.Evicted()) }),
			)
		}
	}
	return a
}

// Where an authentication came in, the label of the auth metrics.
const (
	viaAPI    = wire.ViaAPI
	viaEnroll = "enroll"
	viaAgent  = "agent"
)

// Principal is an authenticated caller.
type Principal struct {
	// TokenID is the API token's id, or wire.AdminTokenID for the hub's admin token.
	TokenID string
	// Actor names the caller where people read it (events, audit): "admin" for the hub's admin
	// token, an API token's description, or "token <id>" when it has none.
	Actor string
	Role  wire.Role
	// ExpiresAt is when the token stops working; zero for the admin token.
	ExpiresAt time.Time
}

// Allow refuses a client address that failed too often, with how long it has to wait.
func (a *Access) Allow(client netip.Addr, via string) error {
	if a.cfg.Limiter == nil {
		return nil
	}
	if ok, wait := a.cfg.Limiter.Allow(ratelimit.Key(client)); !ok {
		a.limited.WithLabelValues(via).Inc()
		return &fault.RateLimited{RetryAfter: wait}
	}
	return nil
}

// Failed counts a failed authentication from a client address.
func (a *Access) Failed(client netip.Addr, via string) {
	a.failed.WithLabelValues(via).Inc()
	if a.cfg.Limiter != nil {
		a.cfg.Limiter.Fail(ratelimit.Key(client))
	}
}

// Authenticate decides an Authorization header from a client address: the caller, or an error
// wrapping ErrRateLimited (the address failed too often; nothing else is checked),
// ErrUnauthenticated (counted as a failure of the address) or a store error.
func (a *Access) Authenticate(ctx context.Context, client netip.Addr, via, header string) (Principal, error) {
	if err := a.Allow(client, via); err != nil {
		return Principal{}, err
	}
	p, err := a.check(ctx, header)
	if errors.Is(err, fault.ErrUnauthenticated) {
		a.Failed(client, via)
	}
	return p, err
}

func (a *Access) check(ctx context.Context, header string) (Principal, error) {
	token, err := credential.ParseBearer(header)
	if err != nil {
		if header == "" {
			return Principal{}, fmt.Errorf("%v: %w", err, fault.ErrUnauthenticated)
		}
		return Principal{}, fmt.Errorf("invalid token: %v: %w", err, fault.ErrUnauthenticated)
	}
	hash := credential.Hash(token)
	if credential.IsAdminToken(token) {
		if err := a.cfg.Store.CheckAdminToken(ctx, hash); err != nil {
			if errors.Is(err, fault.ErrUnauthenticated) {
				return Principal{}, fmt.Errorf("invalid token: %w", fault.ErrUnauthenticated)
			}
			return Principal{}, err
		}
		return Principal{TokenID: wire.AdminTokenID, Actor: wire.AdminTokenID, Role: wire.RoleAdmin}, nil
	}
	t, err := a.cfg.Store.APITokenByHash(ctx, hash)
	if err != nil {
		if errors.Is(err, fault.ErrUnauthenticated) {
			return Principal{}, fmt.Errorf("invalid token: %w", fault.ErrUnauthenticated)
		}
		return Principal{}, err
	}
	now := a.cfg.Now()
	switch {
	case t.RevokedAt != nil:
		return Principal{}, fmt.Errorf("token %s was revoked at %s: %w", t.ID, t.RevokedAt.Format(time.RFC3339), fault.ErrUnauthenticated)
	case !now.Before(t.ExpiresAt):
		return Principal{}, fmt.Errorf("token %s expired at %s: %w", t.ID, t.ExpiresAt.Format(time.RFC3339), fault.ErrUnauthenticated)
	case !t.Role.Valid():
		return Principal{}, fmt.Errorf("token %s has no valid role (%q): %w", t.ID, t.Role, fault.ErrUnauthenticated)
	}
	actor := t.Description
	if actor == "" {
		actor = "token " + t.ID
	}
	return Principal{TokenID: t.ID, Actor: actor, Role: t.Role, ExpiresAt: t.ExpiresAt}, nil
}

// Forbidden is the error of a caller whose role does not reach what the route needs.
func Forbidden(p Principal, need wire.Role, what string) error {
	return fmt.Errorf("role %s may not %s (it needs %s): %w", p.Role, what, need, fault.ErrForbidden)
}

// Client is the address a request comes from: the connection's, or, when the connection comes
// from a trusted proxy, the right-most address of X-Forwarded-For that is not itself a trusted
// proxy (each proxy appends the address it was reached from, so only the entries that trusted
// proxies appended are believed).
func (a *Access) Client(r *http.Request) netip.Addr {
	addr := remoteAddr(r.RemoteAddr)
	if !a.trusted(addr) {
		return addr
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		h, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // what lies beyond a malformed entry was written by nobody we trust
		}
		addr = h.Unmap()
		if !a.trusted(addr) {
			break
		}
	}
	return addr
}

func (a *Access) trusted(addr netip.Addr) bool {
	for _, p := range a.cfg.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func remoteAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	addr, _ := netip.ParseAddr(s)
	return addr.Unmap()
}

// auditTimeout bounds one audit write; it is not cut short by a client that went away.
const auditTimeout = 5 * time.Second

// Audit appends e to the audit log, stamped with the time. A failed write is logged and
// counted (godwit_audit_entries_total{result="error"}); the call it records is not undone.
func (a *Access) Audit(ctx context.Context, e wire.AuditEntry) {
	e.Time = a.cfg.Now().UTC()
	// What a client sent (a path, a name taken from it) is kept as text every store accepts:
	// bytes that are not UTF-8, and NUL, become U+FFFD, so the row is written whatever was sent.
	for _, f := range []*string{&e.TokenID, &e.Actor, &e.Method, &e.Path, &e.Route, &e.Target, &e.Remote, &e.Via} {
		*f = strings.ReplaceAll(strings.ToValidUTF8(*f, "\uFFFD"), "\x00", "\uFFFD")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := a.cfg.Store.InsertAudit(ctx, e); err != nil {
		a.audits.WithLabelValues("error").Inc()
		a.log.Error("audit log write failed", "method", e.Method, "path", e.Path, "token", e.TokenID, "status", e.Status,
			"remote", e.Remote, "err", err)
		return
	}
	a.audits.WithLabelValues("ok").Inc()
}

// Audited reports whether a call of method is written to the audit log: every method but the
// ones that only read.
func Audited(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}
