package wire

// NATS names shared by hub and agent. Agent IDs are UUIDs, so they are always a single, safe
// subject token.
const (
	BucketHeartbeats = "godwit-heartbeats"
	BucketDesired    = "godwit-desired"
	// BucketObserved holds each agent's observed state of its assignments (key: agent ID),
	// written by the agent: the level-triggered report the migration controller reconciles.
	BucketObserved = "godwit-observed"
	// BucketFailover holds each failover member's assignment (key: agent ID, value
	// FailoverAssignment), written by the hub.
	BucketFailover   = "godwit-failover"
	StreamEvents     = "GODWIT_EVENTS"
	StreamDeadLetter = "GODWIT_DLQ"

	// InboxRoot is the root of every agent's private reply inbox (see AgentInbox).
	InboxRoot = "_GODWIT_INBOX"
	// HubClockKey is the heartbeat-bucket key the hub writes to learn the store's "now".
	HubClockKey = "hub.clock"
)

// AgentInbox is the reply-subject prefix an agent must use; its permissions allow only this one.
func AgentInbox(agentID string) string { return InboxRoot + "." + agentID }

// KVSubject is the subject a KV put to bucket/key publishes on.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// KVDirectGetSubject is the JetStream direct-get subject for the latest value of bucket/key.
func KVDirectGetSubject(bucket, key string) string {
	return "$JS.API.DIRECT.GET.KV_" + bucket + "." + KVSubject(bucket, key)
}

// EventSubject is where an agent publishes its events.
func EventSubject(agentID string) string { return "godwit.events." + agentID }
