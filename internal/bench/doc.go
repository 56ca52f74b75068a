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
// second ingested meanwhile and the hub's peak RSS. When the agents do not fit the process's
// open-file limit, some or all of them are multiplexed over fewer connections of the hub's own
// NATS user (the hub then runs in-process), which the output states.
package bench
