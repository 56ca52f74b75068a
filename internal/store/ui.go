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
	AgentAssignments(ctx context.Context, agentID string, limit int) ([]wire.Assignment, error)

	// PageMigrations lists migrations newest first, filtered, with keyset pagination.
	PageMigrations(ctx context.Context, q MigrationQuery) (page []wire.Migration, next string, err error)
	// CountMigrationsByState counts migrations by state (only states that occur).
	CountMigrationsByState(ctx context.Context) (map[string]int, error)
	// MigrationsMark changes whenever a migration is created or its state, reason or batches
	// change (not when only its counters, such as active time, move), so a watcher can poll it
	// cheaply instead of reading every migration.
	MigrationsMark(ctx context.Context) (string, error)
	// CountAssignments counts a migration's assignments (every attempt) by state.
	CountAssignments(ctx context.Context, migration string) (map[string]int, error)
	// CountLatestAssignments counts the latest attempt of each agent of a migration by batch,
	// state and whether the attempt keeps a failure (counted in SQL: a fleet-wide migration's
	// page does not read its 10,000 assignments).
	CountLatestAssignments(ctx context.Context, migration string) ([]AssignmentCount, error)
	// LatestAssignments lists latest attempts of a migration's agents, by batch then agent id,
	// filtered (see LatestQuery).
	LatestAssignments(ctx context.Context, q LatestQuery) ([]wire.Assignment, error)
}

// AssignmentCount is how many latest attempts of one batch are in one state; Failed tells
// whether they keep a failure (a failed agent that was rolled back since).
type AssignmentCount struct {
	Batch  int
	State  string
	Failed bool
	N      int
}

// LatestQuery filters LatestAssignments. Every set field must match.
type LatestQuery struct {
	Migration string
	// State is one assignment state; empty: any.
	State string
	// Failed keeps only attempts that failed: in a failed state (failed, timed_out,
	// rollback_failed) or keeping a failure after a rollback.
	Failed bool
	// Batch keeps only one batch (0-based) when not nil.
	Batch *int
	// Offset and Limit page the list; Limit 0 is no limit.
	Offset, Limit int
}

// Session is a web UI login. The session id itself is only in the browser's cookie.
type Session struct {
	IDHash string `json:"-"` // hex SHA-256 of the session id
	// CSRF is the token every state-changing form of this session must carry.
	CSRF      string    `json:"-"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// TokenID is the token the session was made with (wire.AdminTokenID for the hub's admin
	// token); revoking it ends the session. Role is that token's role, Actor who it describes.
	TokenID string    `json:"token_id"`
	Role    wire.Role `json:"role"`
	Actor   string    `json:"actor"`
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

// FleetStore holds the reads of the UI's fleet-wide pictures and warnings (the fleet map, an
// agent's liveness beside its migration state, agents that need attention, errors over time).
type FleetStore interface {
	// AgentStates returns the agents with these ids (unknown ids left out), or every agent when
	// ids is nil, ordered by name then id. Agents with the same labels may share one Labels map:
	// callers read it and do not change it.
	AgentStates(ctx context.Context, ids []string) ([]AgentState, error)
	// RollbackFailures maps agents to the migrations whose latest attempt on them is
	// rollback_failed: the agents with these ids, or every agent when ids is nil.
	RollbackFailures(ctx context.Context, ids []string) (map[string][]string, error)
	// NotOnlineInBatch returns the agents of one batch (0-based) of a migration, by their latest
	// attempts, that are not online or are revoked (without their labels): those whose attempt
	// failed or keeps a failure first, then by agent id.
	NotOnlineInBatch(ctx context.Context, migration string, batch int) ([]AgentState, error)
	// ProblemCounts counts the warning and error events in [Since, Until) by time bucket, type
	// and severity.
	ProblemCounts(ctx context.Context, q ProblemQuery) ([]ProblemCount, error)
}

// AgentState is an agent as the fleet map and the migration grid show it.
type AgentState struct {
	ID, Name, Status string
	Revoked          bool
	Labels           map[string]string
}

// ProblemQuery selects the events ProblemCounts counts.
type ProblemQuery struct {
	Since, Until time.Time
	// Buckets splits [Since, Until) into equal parts, 1..1000.
	Buckets int
	// Migration, when set, counts only that migration's events.
	Migration string
}

// ProblemCount is how many events of one type and severity a bucket holds.
type ProblemCount struct {
	Bucket   int
	Type     string
	Severity string
	Count    int
}
