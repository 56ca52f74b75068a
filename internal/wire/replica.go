package wire

import "time"

// Roles of a hub replica.
const (
	RoleLeader   = "leader"
	RoleFollower = "follower"
)

// HubReplica is one replica of the hub as the status shows it.
type HubReplica struct {
	ID string `json:"id"`
	// Address is the replica's API address.
	Address string `json:"address"`
	// NATS identifies the NATS cluster the replica is connected to (docs/ha.md).
	NATS string `json:"nats"`
	// Role is leader or follower, as the replica last wrote it.
	Role string `json:"role"`
	// Epoch is the lease epoch the replica leads under, or the one it last read as a follower.
	Epoch int64 `json:"epoch"`
	// Since is when the replica's current role began (its own clock).
	Since     time.Time `json:"since"`
	StartedAt time.Time `json:"started_at"`
	// LastSeen is when the replica last wrote its row (its own clock; for display).
	LastSeen time.Time `json:"last_seen"`
}

// HubLeadership is the leadership part of GET /api/v1/status, as the answering replica sees it.
type HubLeadership struct {
	// Replica is the replica that answered.
	Replica string `json:"replica"`
	// Leader is the holder in the lease record (empty when nobody holds it).
	Leader string `json:"leader"`
	Epoch  int64  `json:"epoch"`
	// Since is when the answering replica began to lead (zero when it follows).
	Since time.Time `json:"since,omitzero"`
	// Degraded is true while the answering replica's lease calls are failing.
	Degraded bool `json:"degraded"`
	// Waiting says what a follower waits for (a NATS peer that does not answer, for one).
	Waiting string `json:"waiting,omitempty"`
	// State is LeadershipWaiting while the answering replica waits for its JetStream cluster
	// (it serves what the database alone backs, and neither runs the ingest nor contends for
	// the lease); absent once it has joined.
	State string `json:"state,omitempty"`
	// WaitingFor are the NATS peers (route addresses) the answering replica waits for, while
	// State is LeadershipWaiting.
	WaitingFor []string `json:"waiting_for,omitempty"`
}

// LeadershipWaiting is the HubLeadership.State of a replica that waits for its JetStream
// cluster to have a quorum (docs/ha.md).
const LeadershipWaiting = "waiting"
