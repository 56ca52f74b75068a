package store

import (
	"context"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// AccessStore holds who may call the hub and what they did: API tokens with roles and the
// audit log. Only the hash of a token's secret is stored.
type AccessStore interface {
	// CreateAPIToken stores a new API token. A token with the same id or hash: ErrConflict.
	CreateAPIToken(ctx context.Context, t wire.APIToken, hash string) error
	// APITokenByHash returns the token whose secret hashes to hash, revoked or expired as it may
	// be (the caller judges, with its clock); ErrUnauthenticated when there is none.
	APITokenByHash(ctx context.Context, hash string) (wire.APIToken, error)
	// ListAPITokens lists every API token, oldest first.
	ListAPITokens(ctx context.Context) ([]wire.APIToken, error)
	// RevokeAPIToken marks the token revoked at now and ends the web UI sessions made with it,
	// in one transaction, and returns the token. Revoking twice keeps the first time. Unknown
	// id: ErrNotFound.
	RevokeAPIToken(ctx context.Context, id string, now time.Time) (wire.APIToken, error)

	// InsertAudit appends an entry to the audit log (its Seq is assigned by the store).
	InsertAudit(ctx context.Context, e wire.AuditEntry) error
	// QueryAudit lists audit entries, newest first, filtered, with keyset pagination.
	QueryAudit(ctx context.Context, q AuditQuery) (page []wire.AuditEntry, next string, err error)
}

// AuditQuery filters the audit log. Empty fields do not filter.
type AuditQuery struct {
	Since time.Time // inclusive
	// Actor matches a token id (wire.AdminTokenID for the hub's admin token) or an actor exactly.
	Actor string
	// Action matches "METHOD /path-prefix", "/path-prefix" or a method ("DELETE"): what was
	// called, e.g. "POST /api/v1/migrations/web-tls" for every call on that migration.
	Action string
	Limit  int    // 1..1000
	Cursor string // from a previous page's next
}
