package store

import (
	"context"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// UIStore holds what the web UI needs beyond the API's queries: sessions and paged, filtered
// listings that stay fast on large fleets.
//
// Sessions live in SQL, not in a replica's memory, so a login survives a hub restart and works on
// every replica behind a load balancer. Only the hash of a session id is stored.
type UIStore interface {
	// CreateSession stores a new web UI session. A session with the same id hash: ErrConflict.
	CreateSession(ctx context.Context, s Session) error
	// GetSession returns the session whose id hashes to idHash if it has not expired at now,
	// else ErrUnauthenticated.
	GetSession(ctx context.Context, idHash string, now time.Time) (Session, error)
	// DeleteSession removes a session (logout). Deleting an unknown session is not an error.
	DeleteSession(ctx context.Context, idHash string) error
	// DeleteExpiredSessions removes the sessions expired at now and says how many.
	DeleteExpiredSessions(ctx context.Context, now time.Time) (int, error)

	// PageAgents lists agents ordered by name, then id, filtered, with keyset pagination.
	PageAgents(ctx context.Context, q AgentQuery) (page []wire.Agent, next string, err error)
	// CountAgentsByStatus counts agents by status (online, offline, unknown); revoked agents
	// count under "revoked" only. Every key is present.
	CountAgentsByStatus(ctx context.Context) (map[string]int, error)
	// AgentNames maps agent ids to names; unknown ids are left out.
	AgentNames(ctx context.Context, ids []string) (map[string]string, error)
	// AgentAssignments returns the latest attempt of every migration agentID takes part in, the
	// most recently updated first, at most limit.
	AgentAssignments(ctx context.Context, agentID string, limit int) ([]Assignment, error)

	// PageMigrations lists migrations newest first, filtered, with keyset pagination.
	PageMigrations(ctx context.Context, q MigrationQuery) (page []Migration, next string, err error)
	// CountMigrationsByState counts migrations by state (only states that occur).
	CountMigrationsByState(ctx context.Context) (map[string]int, error)
	// MigrationsMark changes whenever a migration is created or its state, reason or batches
	// change (not when only its counters, such as active time, move), so a watcher can poll it
	// cheaply instead of reading every migration.
	MigrationsMark(ctx context.Context) (string, error)
	// CountAssignments counts a migration's assignments (every attempt) by state.
	CountAssignments(ctx context.Context, migration string) (map[string]int, error)
}

// Session is a web UI login. The session id itself is only in the browser's cookie.
type Session struct {
	IDHash string `json:"-"` // hex SHA-256 of the session id
	// CSRF is the token every state-changing form of this session must carry.
	CSRF      string    `json:"-"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AgentRevoked is the status filter (and CountAgentsByStatus key) of revoked agents.
const AgentRevoked = "revoked"

// AgentQuery filters agents. Empty fields do not filter.
type AgentQuery struct {
	// Status is online, offline or unknown (revoked agents excluded), or AgentRevoked.
	Status string
	// Labels must all match exactly.
	Labels map[string]string
	// Search matches a case-insensitive substring of the name, or a prefix of the id.
	Search string
	Limit  int    // 1..1000
	Cursor string // from a previous page's next
}

// MigrationQuery filters migrations. Empty fields do not filter.
type MigrationQuery struct {
	State  string
	Limit  int    // 1..1000
	Cursor string // from a previous page's next
}
