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

	// InsertEvents stores events and upserts derived state in one transaction. Events whose id
	// is already stored are skipped (ON CONFLICT DO NOTHING); a state row only moves forward in
	// time. It returns how many events were new.
	InsertEvents(ctx context.Context, events []StoredEvent, states []EventState) (inserted int, err error)
	// QueryEvents returns events newest first, filtered, with keyset pagination.
	QueryEvents(ctx context.Context, q EventQuery) (page []StoredEvent, next string, err error)
	// AgentEventStates returns an agent's derived state rows (for rehydration).
	AgentEventStates(ctx context.Context, agentID string) ([]EventState, error)
	// CountEvents counts stored events (for operations and tests).
	CountEvents(ctx context.Context) (int64, error)

	// AcquireEpoch makes holder the holder of the named leadership and returns a new epoch,
	// higher than any before it. Writes fenced with an older epoch fail with ErrFenced.
	AcquireEpoch(ctx context.Context, name, holder string, now time.Time) (int64, error)
	// Leader returns the named leadership's holder, epoch and when the holder last reported
	// itself alive (TouchEpoch). ErrNotFound if nobody ever held it.
	Leader(ctx context.Context, name string) (holder string, epoch int64, seen time.Time, err error)
	// TouchEpoch records that the holder of fence is alive at now; ErrFenced if it no longer holds.
	TouchEpoch(ctx context.Context, fence Fence, now time.Time) error

	// CreateMigration stores a new migration with its planned assignments. A migration of the
	// same name: ErrConflict.
	CreateMigration(ctx context.Context, m Migration, as []Assignment) error
	GetMigration(ctx context.Context, name string) (Migration, error)
	ListMigrations(ctx context.Context) ([]Migration, error)
	// ListAssignments returns every attempt of every agent of a migration.
	ListAssignments(ctx context.Context, migration string) ([]Assignment, error)
	// SaveMigration writes m and upserts the given assignments in one transaction, only if the
	// stored version is still m.Version (else ErrConflict) and, when fence.Epoch is not zero,
	// the named leadership still has that epoch (else ErrFenced). The stored version becomes
	// m.Version+1.
	SaveMigration(ctx context.Context, fence Fence, m Migration, changed []Assignment) error

	SweepStore
	UIStore
}

// Fence carries a leader's epoch into a write. The zero Fence is an operator's write.
type Fence struct {
	Name  string
	Epoch int64
}

// Migration is the stored record of a migration.
type Migration struct {
	Name          string    `json:"name"`
	Spec          string    `json:"spec"` // the YAML as applied
	SpecHash      string    `json:"spec_hash"`
	State         string    `json:"state"`
	Reason        string    `json:"reason,omitempty"`
	Batches       int       `json:"batches"`
	CurrentBatch  int       `json:"current_batch"`  // highest batch dispatched; -1 before the first
	ApprovedBatch int       `json:"approved_batch"` // highest batch allowed to start
	ActiveMS      int64     `json:"active_ms"`      // deadline time counted so far
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	FinishedAt    time.Time `json:"finished_at,omitzero"`
	Version       int64     `json:"version"`
}

// Assignment is one (migration, agent, attempt).
type Assignment struct {
	Migration  string `json:"migration"`
	AgentID    string `json:"agent_id"`
	Attempt    int    `json:"attempt"`
	Batch      int    `json:"batch"`
	State      string `json:"state"`
	Generation int    `json:"generation"`
	Action     string `json:"action"`
	Step       int    `json:"step"`
	StepName   string `json:"step_name,omitempty"`
	Error      string `json:"error,omitempty"`
	// Failure keeps why the attempt failed, even after its agent was rolled back.
	Failure         string    `json:"failure,omitempty"`
	FailedStep      string    `json:"failed_step,omitempty"` // the step it failed at
	ExitCode        *int      `json:"exit_code,omitempty"`
	PreviousAttempt int       `json:"previous_attempt,omitempty"`
	Applied         int       `json:"applied"` // steps whose run started
	ActiveMS        int64     `json:"active_ms"`
	DispatchedAt    time.Time `json:"dispatched_at,omitzero"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
	FinishedAt      time.Time `json:"finished_at,omitzero"`
}

// StoredEvent is an event with what the hub adds on receipt.
type StoredEvent struct {
	wire.Event
	// Raw is the event exactly as received (JSON); stored as the body.
	Raw        []byte    `json:"-"`
	ReceivedAt time.Time `json:"received_at"`
}

// EventState is one derived-state row: an agent's latest event overall (Migration "") or for
// one migration.
type EventState struct {
	AgentID      string    `json:"agent_id"`
	Migration    string    `json:"migration"`
	LastEventID  string    `json:"last_event_id"`
	LastType     string    `json:"last_type"`
	LastSeverity string    `json:"last_severity"`
	LastTime     time.Time `json:"last_time"`
}

// EventQuery filters events. Empty fields do not filter.
type EventQuery struct {
	AgentID   string
	Migration string
	// Types match exactly, or by prefix when they end in "*" ("migration.rollback.*").
	Types      []string
	Severities []string
	Since      time.Time // inclusive
	Until      time.Time // exclusive
	Limit      int       // 1..1000
	Cursor     string    // from a previous page's next
}

// Liveness is one agent's heartbeat-derived state.
type Liveness struct {
	AgentID  string
	LastSeen time.Time // store timestamp of the latest heartbeat; zero keeps the stored value
	Status   string
	Version  string // empty keeps the stored value
	System   *wire.SystemInfo
}
