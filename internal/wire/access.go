package wire

import "time"

// Role is what an API token (and a web UI session made with it) may do. Roles are ordered:
// every route needs one role, and a higher role may do everything a lower one may
// (docs/security.md has the table of routes).
type Role string

// Roles, lowest first.
const (
	// RoleViewer reads: agents, migrations, sweeps, events, dead letters, status.
	RoleViewer Role = "viewer"
	// RoleOperator also changes the fleet's work: applies migrations and sweeps, acts on them,
	// replays dead letters.
	RoleOperator Role = "operator"
	// RoleAdmin also manages credentials (tokens, agents' revocation), reads the audit log and
	// purges dead letters. The hub's own admin token (gwa_…) is an admin.
	RoleAdmin Role = "admin"
)

// Roles lists the roles, lowest first.
var Roles = []Role{RoleViewer, RoleOperator, RoleAdmin}

// Rank orders roles: 1 viewer, 2 operator, 3 admin; 0 for anything else.
func (r Role) Rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool { return r.Rank() > 0 }

// Allows reports whether a holder of r may do what needs the role need. An invalid role allows
// nothing, and nothing is allowed by a need that is not a role.
func (r Role) Allows(need Role) bool { return r.Valid() && need.Valid() && r.Rank() >= need.Rank() }

// AdminTokenID names the hub's own admin token (gwa_…, made at the first start) where API tokens
// are named by their id: in audit records and web UI sessions.
const AdminTokenID = "admin"

// APIToken is an API token's record (never the secret itself). Its role, expiry and
// revocation are checked on every request.
type APIToken struct {
	ID          string     `json:"id"`
	Role        Role       `json:"role"`
	Description string     `json:"description,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	// CreatedBy names the token that created this one (an API token id, or AdminTokenID).
	CreatedBy string `json:"created_by,omitempty"`
}

// Usable reports whether the token may be used at now: not revoked, not expired.
func (t APIToken) Usable(now time.Time) bool { return t.RevokedAt == nil && now.Before(t.ExpiresAt) }

// CreateAPITokenRequest is the body of POST /api/v1/api-tokens.
type CreateAPITokenRequest struct {
	Role        Role   `json:"role"`
	TTL         string `json:"ttl"`
	Description string `json:"description,omitempty"`
}

// CreateAPITokenResponse returns the token's secret, once.
type CreateAPITokenResponse struct {
	APIToken
	Token string `json:"token"`
}

// Where an audited call came in.
const (
	ViaAPI = "api"
	ViaUI  = "ui"
)

// AuditEntry is one audited call: every call of a method other than GET, through the API or the
// web UI, whatever its outcome (calls refused by the rate limit excepted).
type AuditEntry struct {
	// Seq orders entries by when they were written.
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	// TokenID is the API token's id, AdminTokenID for the hub's admin token, empty when the
	// caller presented no valid token.
	TokenID string `json:"token_id,omitempty"`
	// Actor describes the caller: the token's description, or who the web UI session is.
	Actor string `json:"actor,omitempty"`
	// Role is the caller's role; empty when unauthenticated.
	Role   Role   `json:"role,omitempty"`
	Method string `json:"method"`
	// Path is the request's path (the target's names in it); Route the pattern it matched.
	Path  string `json:"path"`
	Route string `json:"route"`
	// Target is what the call acted on when the path does not say it (an applied migration's
	// name, a created token's id, an enrolled agent).
	Target string `json:"target,omitempty"`
	// Status is the HTTP status the call was answered with.
	Status int `json:"status"`
	// Remote is the client's address: the connection's, or the X-Forwarded-For client when the
	// connection came from a trusted proxy.
	Remote string `json:"remote"`
	// Via is ViaAPI or ViaUI.
	Via string `json:"via"`
}
