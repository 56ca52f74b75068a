// Package wire holds the types that cross a process boundary: between hub, agent and CLI, over
// HTTP or NATS. Changing a JSON field here changes a protocol; keep them backward compatible.
package wire
