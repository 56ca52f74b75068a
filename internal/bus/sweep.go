package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// GetSweepRequests reads the agent's sweep check requests (wire.SweepRequests as JSON) with a
// direct get, like GetDesired. An absent or deleted key wraps fault.ErrNotFound.
func GetSweepRequests(ctx context.Context, nc *nats.Conn, agentID string) (value []byte, rev uint64, err error) {
	value, rev, err = getOwnKey(ctx, nc, wire.BucketSweep, agentID)
	if err != nil {
		return nil, 0, fmt.Errorf("get sweep requests: %w", err)
	}
	return value, rev, nil
}

// WatchSweepRequests calls fn for each put to the agent's sweep-request key. As with
// WatchDesired, a call is only a hint: read the value with GetSweepRequests before acting.
func WatchSweepRequests(nc *nats.Conn, agentID string, fn func(value []byte, rev uint64)) (*nats.Subscription, error) {
	sub, err := watchOwnKey(nc, wire.BucketSweep, agentID, fn)
	if err != nil {
		return nil, fmt.Errorf("watch sweep requests: %w", err)
	}
	return sub, nil
}

// PutSweepResults writes the agent's sweep check results (wire.SweepResults as JSON) under its
// own key.
func PutSweepResults(ctx context.Context, nc *nats.Conn, agentID string, value []byte) (rev uint64, err error) {
	if !ValidAgentID(agentID) {
		return 0, fault.Invalid("agentID", "not a canonical UUID: %q", agentID)
	}
	rev, err = putOwnKey(ctx, nc, wire.BucketSweepResults, agentID, value)
	if err != nil {
		return 0, fmt.Errorf("put sweep results: %w", err)
	}
	return rev, nil
}
