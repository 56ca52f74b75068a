// Package wire holds the types that cross a process boundary: between hub, agent and CLI, over
// HTTP or NATS, or through the files a hub leaves in its data dir for local clients. Changing a
// JSON field here changes a protocol; keep them backward compatible.
//
// The hub's store keeps several of them as they are (agents, migrations and assignments,
// sweeps and runs), so that what is stored and what is sent cannot drift apart; where the store
// keeps more than it sends (an event's raw body), the API converts at its edge.
package wire
