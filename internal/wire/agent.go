package wire

import "time"

// Agent statuses as derived by the hub's liveness controller.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
	StatusUnknown = "unknown"
)

// SystemInfo describes the node an agent runs on. It travels with enrollment, heartbeats and
// every event, so a failure report says where it happened.
type SystemInfo struct {
	OS            string `json:"os,omitempty"`
	Arch          string `json:"arch,omitempty"`
	Kernel        string `json:"kernel,omitempty"`
	Hostname      string `json:"hostname,omitempty"`
	AgentVersion  string `json:"agent_version,omitempty"`
	FreeDiskBytes uint64 `json:"free_disk_bytes,omitempty"`
	// PolicyDigest is "sha256:…" of the agent policy the agent enforces (godwit agent --policy);
	// empty when it has none and runs whatever the hub asks.
	PolicyDigest string `json:"policy_digest,omitempty"`
}

// Agent is the hub's record of an enrolled agent.
type Agent struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Labels     map[string]string `json:"labels"`
	Version    string            `json:"version"`
	System     SystemInfo        `json:"system"`
	EnrolledAt time.Time         `json:"enrolled_at"`
	// LastSeen is the store (JetStream) timestamp of the agent's latest heartbeat; zero if none.
	LastSeen  time.Time  `json:"last_seen,omitzero"`
	Status    string     `json:"status"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Degraded is why the agent takes no new work, as its latest heartbeat said (its disk is
	// full, its outbox is full…); empty when it takes work.
	Degraded string `json:"degraded,omitempty"`
}

// EnrollRequest is what an agent sends, once, to POST /api/v1/enroll.
type EnrollRequest struct {
	Token   string            `json:"token"`
	Name    string            `json:"name"`
	Labels  map[string]string `json:"labels,omitempty"`
	Version string            `json:"version,omitempty"`
	System  SystemInfo        `json:"system"`
}

// EnrollResponse carries the agent's identity and its own NATS credentials. The password is
// shown only here; the hub keeps its hash. NATSURLs never carry credentials.
type EnrollResponse struct {
	AgentID      string   `json:"agent_id"`
	Name         string   `json:"name"`
	NATSURLs     []string `json:"nats_urls"`
	NATSUser     string   `json:"nats_user"`
	NATSPassword string   `json:"nats_password"`
	// NATSCA is the PEM CA of an external NATS cluster's TLS, when it is not the hub's own CA.
	NATSCA string `json:"nats_ca,omitempty"`
	// HeartbeatInterval tells the agent how often to heartbeat (Go duration string).
	HeartbeatInterval string `json:"heartbeat_interval"`
}

// Heartbeat is the value an agent puts under its own key in the heartbeat bucket. Liveness is
// judged from the entry's store timestamp, never from SentAt (the agent's clock).
type Heartbeat struct {
	AgentID string     `json:"agent_id"`
	Version string     `json:"version"`
	Seq     uint64     `json:"seq"`
	SentAt  time.Time  `json:"sent_at"`
	System  SystemInfo `json:"system"`
	// Degraded is why the agent takes no new work right now; empty when it takes work.
	Degraded string `json:"degraded,omitempty"`
}

// EnrollToken is an enrollment token's record (never the secret itself).
type EnrollToken struct {
	ID          string    `json:"id"`
	Description string    `json:"description,omitempty"`
	MaxUses     int       `json:"max_uses"`
	Uses        int       `json:"uses"`
	ExpiresAt   time.Time `json:"expires_at"`
	CreatedAt   time.Time `json:"created_at"`
}

// CreateTokenRequest is the body of POST /api/v1/tokens.
type CreateTokenRequest struct {
	Uses        int    `json:"uses"`
	TTL         string `json:"ttl"`
	Description string `json:"description,omitempty"`
}

// CreateTokenResponse returns the token secret, once. Token is the secret followed, when the hub
// serves TLS with its own CA, by ".sha256:" and the CA's fingerprint (credential.WithPin).
type CreateTokenResponse struct {
	EnrollToken
	Token string `json:"token"`
}

// ErrorBody is the JSON shape of every API error.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the code and human message of an API error.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// List wraps a page of results.
type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}
