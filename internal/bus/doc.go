// Package bus is Godwit's NATS layer: the embedded server with its authentication, the JetStream
// buckets the hub sets up, and the few core-NATS calls an agent makes.
//
// # Permission model
//
// An agent is the least trusted party on the bus (design principle 9): it may publish only as itself
// and read only its own desired state. Subject permissions alone cannot promise that, because NATS
// never checks a message's reply subject against the publisher's permissions. A JetStream
// response (a publish acknowledgement, a direct-get reply) is sent by the server on the requester's
// behalf to whatever reply subject the requester named. With everything in one account, agent A
// could direct-get its own desired state with reply subject "$KV.godwit-desired.<B>" and the server
// would store A's desired state as B's, and the acknowledgement of A's own heartbeat, aimed at
// "$JS.API.STREAM.PURGE.KV_godwit-heartbeats", is read by the JetStream API as a purge request
// ({"seq": n}) and erases every other agent's heartbeat. Both were reproduced against
// nats-server 2.15.2 (TestAgentCannotActAsAnother fails if agents share the hub's account).
//
// The embedded server therefore has two accounts:
//
//   - [AccountHub] holds JetStream (streams and buckets) and the internal [HubUser], which has no
//     subject restrictions. Its password is generated at start, kept in memory only, and accepted
//     only on in-process connections ([Server.ConnectHub]).
//   - [AccountAgents] holds every agent. It has no JetStream of its own; it imports from the hub
//     account exactly these: the services "$KV.godwit-heartbeats.*" (heartbeat puts),
//     "$KV.godwit-observed.*" (observed-state puts), "$KV.godwit-sweep-results.*" (sweep check
//     results), "$JS.API.DIRECT.GET.KV_godwit-desired.$KV.godwit-desired.*" (desired-state reads),
//     "$JS.API.DIRECT.GET.KV_godwit-sweep.$KV.godwit-sweep.*" (sweep check requests) and
//     "godwit.events.*" (events), and the streams "$KV.godwit-desired.*" and "$KV.godwit-sweep.*"
//     (live puts of the two hub-written documents).
//
// A service import rewrites the reply subject to a private "_R_" subject in the hub account and
// routes the response back into the agents' account, so whatever reply subject an agent chooses,
// the response can only land in the agents' account, where no stream and no JetStream API exist.
//
// Within the agents' account each agent, authenticated by [Authenticator] as a user named by its
// agent ID, gets [AgentPermissions]: publish only on its own event subject, its own heartbeat,
// observed-state and sweep-result keys, and the direct-get subjects of its own desired-state and
// sweep-request keys; subscribe only on its own reply inbox (wire.AgentInbox) and its own
// desired-state and sweep-request keys. Everything else is denied, including the JetStream API
// and "_INBOX.>".
//
// What remains possible, and why it is harmless or handled:
//
//   - An agent can aim a response at a subject another agent subscribes to in the agents' account
//     (its desired-state key or its inbox). [WatchDesired] therefore treats every message as a
//     hint: it drops messages that carry JetStream response headers, never reports a revision, and
//     the agent must re-read with [GetDesired] (whose reply comes back on its own inbox).
//   - An agent can send headers with its heartbeat. The heartbeat bucket is created with rollups
//     disallowed, so "Nats-Rollup: all" cannot wipe other agents' heartbeats; values are bounded by
//     [BucketOptions.HeartbeatMaxValueSize].
//   - The heartbeat value is the agent's own claim: the hub must take the agent's identity from the
//     key, never from the JSON body.
//
// # External cluster
//
// On an external cluster (scale-out) the operator adds ClusterConfig to every server: the same two
// accounts, a system account, and an auth callout that sends every unknown user to the hub.
// [Callout] answers it with the same rule as the embedded authenticator, placing each agent in
// AccountAgents with AgentPermissions; [Probe] checks at the hub's start that the cluster enforces
// it; [SystemClient] closes a revoked agent's connections through the system account. The table
// of attacks in package bustest runs against both topologies.
package bus
