// Package bench holds the benchmarks behind `godwit bench`: programs that run the real hub
// components on this machine and print figures. They never assert on speed; a target missed is
// something to read in the output, not a failure.
//
// # Ingest
//
// Ingest measures the hub's event sink end to end, for SQLite and PostgreSQL: an embedded NATS
// server, the events stream, a real ingest.Ingester on a real store, and N valid events published
// on the agents' subjects (godwit.events.<agent-id>) with their Nats-Msg-Id, timed from the first
// publish until the store counts N events. The publisher uses a hub connection (JetStream
// asynchronous publish), which is faster than N agents each waiting for its acknowledgement; the
// output says so. In the same run it measures the engine's raw rate, store.InsertEvents of N
// events in batches into a fresh database, and prints the ratio of the two.
//
// # Fleet
//
// Fleet runs a real hub (by default as a child process, `godwit hub`, so its peak RSS is its own)
// and N simulated agents speaking the agent protocol over NATS: each enrolls through the HTTP API,
// heartbeats, watches and reads its desired state, and for each assignment reports observed state
// and publishes the events a real agent would for a no-op migration. It applies a migration at
// 100% batch through the API and prints the time until the migration succeeded, the events per
// second ingested meanwhile and the hub's peak RSS. When the agents do not fit the open-file
// limit one connection each, all of them are multiplexed over relay connections (bus.RelayUser),
// up to bus.MaxRelayAgents each, which the output states: every agent is still enrolled with its
// own credentials, which the hub checks on the relay's connect, and uses only its own subjects,
// under the union of its relay's agents' permissions in the agents' account. The hub then runs
// as the hidden `godwit bench fleet-hub`, the same hub with relay connections accepted
// (hub.WithAgentRelays), still a child process. Before the hub starts, the run measures the raw
// limits of the same nats-server build (KV put+get round trips per second) and of the same store
// (InsertEvents into a fresh SQLite database) and prints Godwit's figures as ratios of them.
package bench
