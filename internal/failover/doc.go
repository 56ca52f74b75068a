// Package failover holds what the hub and the agents share about failover groups: the
// FailoverGroup document (Parse, Validate, the canonical form the hub stores and agents read),
// the keys of a group's bucket and the records written in them.
//
// A failover group is a set of agents of which exactly one is primary for a workload. The
// witness is one NATS JetStream key-value bucket per group (Bucket), written only by
// compare-and-set with the primitives of internal/lease; the member state machines live in
// internal/agent/failover. docs/failover.md states the promises and argues the timing rule:
//
//	failoverTimeout > heartbeatTimeout × failureThreshold + safetyMargin
package failover
