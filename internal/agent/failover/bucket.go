package failover

import (
	"context"
	"errors"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"godwit.dev/godwit/internal/lease"
)

// Keys of a group's bucket.
const (
	// KeyRecord is the group record: who is primary, under which epoch, in which state.
	KeyRecord = "record"
	// KeyControl is written by the hub: maintenance pause and switchover requests.
	KeyControl = "control"
	// memberPrefix + agent id: a member's own heartbeat (role, state, epoch, lag).
	memberPrefix = "member."
)

// MemberKey is the key of a member's own heartbeat.
func MemberKey(agentID string) string { return memberPrefix + agentID }

// BucketName is the bucket of group in the installation namespace: two groups, or two
// installations on one NATS, never share a bucket.
func BucketName(namespace, group string) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
				return r
			}
			return '_'
		}, s)
	}
	return "godwit_fo_" + clean(namespace) + "_" + clean(group)
}

// BucketConfig is a group bucket's configuration: lease.BucketConfig's (file storage, the
// longest history the server keeps for post-mortems, no TTL of any kind).
func BucketConfig(namespace, group string, replicas int) jetstream.KeyValueConfig {
	c := lease.BucketConfig(BucketName(namespace, group), replicas)
	c.Description = "Godwit failover group " + group + " (keys: record, control, member.<agent>)"
	return c
}

// OpenBucket returns the group's bucket as it is, and creates it with replicas only when it is
// missing. An existing bucket's configuration is never changed: a member started with one replica
// against a cluster must not turn the group's R3 bucket into R1.
func OpenBucket(ctx context.Context, js jetstream.JetStream, namespace, group string, replicas int) (jetstream.KeyValue, error) {
	name := BucketName(namespace, group)
	kv, err := js.KeyValue(ctx, name)
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return kv, err
	}
	kv, err = js.CreateKeyValue(ctx, BucketConfig(namespace, group, replicas))
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Another member created it in between.
		return js.KeyValue(ctx, name)
	}
	return kv, err
}

// Control is the value of KeyControl.
type Control struct {
	Paused bool `json:"paused"`
	// SwitchoverTo asks the primary of SwitchoverEpoch to hand over to this member.
	SwitchoverTo    string `json:"switchoverTo,omitempty"`
	SwitchoverEpoch uint64 `json:"switchoverEpoch,omitempty"`
}

// MemberStatus is the value of a member's own key.
type MemberStatus struct {
	Role  string `json:"role"`
	State string `json:"state"`
	Epoch uint64 `json:"epoch"`
	Lag   int64  `json:"lag,omitempty"`
}
