// Package store defines the hub's SQL store: the one place hub state lives (design principle 1).
//
// There is one interface and one implementation on database/sql (package sqlstore) driven by a
// dialect per engine: sqlite (the embedded default) and postgres (scale-out). Schema changes are
// numbered migrations per engine, applied at open under a lock; storetest runs one suite
// against both engines.
package store

import (
	"context"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// Store is the hub's persistent state. Methods return fault sentinels (wrapped) for domain
// failures: ErrNotFound, ErrConflict, ErrUnauthenticated, ErrForbidden.
type Store interface {
	// Engine names the SQL engine: "sqlite" or "postgres".
	Engine() string
	Ping(ctx context.Context) error
	Close() error
	// SchemaVersion is the highest applied migration number.
	SchemaVersion(ctx context.Context) (int, error)

	// InitAdminToken stores the admin token hash if none is stored yet. It reports whether this
	// call stored it, so exactly one of several hubs starting at once prints the new token.
	InitAdminToken(ctx context.Context, hash string, now time.Time) (created bool, err error)
	// CheckAdminToken returns nil if hash is the admin token hash, else ErrUnauthenticated.
	CheckAdminToken(ctx context.Context, hash string) error

	CreateEnrollToken(ctx context.Context, t wire.EnrollToken, hash string) error
	ListEnrollTokens(ctx context.Context) ([]wire.EnrollToken, error)
	DeleteEnrollToken(ctx context.Context, id string) error

	// Enroll consumes one use of the enrollment token with the given hash and creates the agent,
	// in one transaction. Unknown token: ErrUnauthenticated. Expired or used up: ErrForbidden.
	// On error nothing is created and no use is consumed.
	Enroll(ctx context.Context, tokenHash string, now time.Time, a wire.Agent, credHash string) error

	GetAgent(ctx context.Context, id string) (wire.Agent, error)
	ListAgents(ctx context.Context) ([]wire.Agent, error)
	// AgentCredential returns the hash of the agent's NATS password and whether it is revoked.
	AgentCredential(ctx context.Context, id string) (hash string, revoked bool, err error)
	RevokeAgent(ctx context.Context, id string, now time.Time) error
	// UpdateLiveness records heartbeat-derived state for many agents in one transaction.
	UpdateLiveness(ctx context.Context, updates []Liveness) error
}

// Liveness is one agent's heartbeat-derived state.
type Liveness struct {
	AgentID  string
	LastSeen time.Time // store timestamp of the latest heartbeat; zero keeps the stored value
	Status   string
	Version  string // empty keeps the stored value
	System   *wire.SystemInfo
}
