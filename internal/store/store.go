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
	// EnsureSetting stores value under key unless a value is stored there already, and returns
	// the stored value: of several hubs starting at once on the same database, the first one's
	// value wins and every hub gets it (the auth-callout keys every replica must share).
	EnsureSetting(ctx context.Context, key, value string, now time.Time) (stored string, err error)

	CreateEnrollToken(ctx context.Context, t wire.EnrollToken, hash string) error
	ListEnrollTokens(ctx context.Context) ([]wire.EnrollToken, error)
	DeleteEnrollToken(ctx context.Context, id string) error

	// Enroll consumes one use of the enrollment token with the given hash and creates the agent,
	// in one transaction. Unknown token: ErrUnauthenticated. Expired or used up: ErrForbidden.
	// An unrevoked agent of the same name, in any case: ErrConflict. On error nothing is created
	// and no use is consumed.
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
	// AgentEventStates returns the derived state rows of every agent named (for rehydration),
	// ordered by agent, then migration (byte order); an agent without rows has none in the result.
	AgentEventStates(ctx context.Context, agentIDs []string) ([]EventState, error)
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
	// AdoptEpoch makes holder the holder of the named leadership under epoch, an epoch handed
	// out elsewhere (the hub's lease): only if no newer epoch was adopted (else ErrFenced).
	// Adopting the current epoch again is allowed (it refreshes holder and time).
	AdoptEpoch(ctx context.Context, name, holder string, epoch int64, now time.Time) error
	// AdoptNATS records identity as the NATS cluster of this database's hubs and drops every
	// leadership epoch (a new NATS cluster counts its lease epochs afresh), in one transaction.
	AdoptNATS(ctx context.Context, identity string, now time.Time) error

	// SaveReplica inserts or replaces a hub replica's row; ListReplicas returns them by id;
	// DeleteReplica removes one (unknown id: nothing happens).
	SaveReplica(ctx context.Context, r wire.HubReplica) error
	ListReplicas(ctx context.Context) ([]wire.HubReplica, error)
	DeleteReplica(ctx context.Context, id string) error

	// CreateMigration stores a new migration with its planned assignments. A migration of the
	// same name, or a deleted one's name: ErrConflict.
	CreateMigration(ctx context.Context, m wire.Migration, as []wire.Assignment) error
	// DeleteMigration deletes a migration and its assignments in one transaction, only if the
	// stored version is still version (else ErrConflict), and keeps its name as deleted at at:
	// CreateMigration refuses it from then on. Events stay. Unknown name: ErrNotFound.
	DeleteMigration(ctx context.Context, name string, version int64, at time.Time) error
	GetMigration(ctx context.Context, name string) (wire.Migration, error)
	ListMigrations(ctx context.Context) ([]wire.Migration, error)
	// ListAssignments returns every attempt of every agent of a migration.
	ListAssignments(ctx context.Context, migration string) ([]wire.Assignment, error)
	// SaveMigration writes m and upserts the given assignments in one transaction, only if the
	// stored version is still m.Version (else ErrConflict) and, when fence.Epoch is not zero,
	// the named leadership still has that epoch (else ErrFenced). The stored version becomes
	// m.Version+1.
	SaveMigration(ctx context.Context, fence Fence, m wire.Migration, changed []wire.Assignment) error
	// ReconcileFindings makes current the open findings of the consistency check, in one
	// transaction fenced like SaveMigration: it returns the findings that are new (stored with
	// now as when first seen) and the open ones no longer found (removed). Findings are the same
	// when their kind, migration, agent and attempt are.
	ReconcileFindings(ctx context.Context, fence Fence, current []wire.CheckFinding, now time.Time) (opened []wire.CheckFinding, resolved []OpenFinding, err error)

	SweepStore
	UIStore
	FleetStore
	AccessStore
	FailoverStore
}

// OpenFinding is a finding of the consistency check that has not been resolved, with when it
// was first found.
type OpenFinding struct {
	wire.CheckFinding
	FirstSeen time.Time
}

// Fence carries a leader's epoch into a write. The zero Fence is an operator's write.
type Fence struct {
	Name  string
	Epoch int64
}

// StoredEvent is an event as the store keeps it: with its body exactly as received and when the
// hub received it.
type StoredEvent struct {
	wire.Event
	// Raw is the event exactly as received (JSON); stored as the body.
	Raw        []byte    `json:"-"`
	ReceivedAt time.Time `json:"received_at"`
	// AgentTime is the time the agent gave the event when the ingest replaced it (Time) with the
	// receipt time because it was too far ahead; nil otherwise. The body keeps the agent's.
	AgentTime *time.Time `json:"agent_time,omitempty"`
}

// Record is the event as the API returns it.
func (e StoredEvent) Record() wire.EventRecord {
	return wire.EventRecord{Event: e.Event, ReceivedAt: e.ReceivedAt, AgentTime: e.AgentTime}
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
	// HubOnly keeps the hub's own events (no agent: state changes, operator actions).
	HubOnly bool
	Since   time.Time // inclusive
	Until   time.Time // exclusive
	Limit   int       // 1..1000
	Cursor  string    // from a previous page's next
}

// Liveness is one agent's heartbeat-derived state.
type Liveness struct {
	AgentID  string
	LastSeen time.Time // store timestamp of the latest heartbeat; zero keeps the stored value
	// Status is the agent's status; empty keeps the stored value. The status column is set only
	// where the stored status differs (a write of an unchanged status leaves the status's
	// indexes untouched).
	Status  string
	Version string // empty keeps the stored value
	System  *wire.SystemInfo
	// Degraded is the heartbeat's degraded reason ("" when the agent takes work); nil keeps the
	// stored value.
	Degraded *string
}
