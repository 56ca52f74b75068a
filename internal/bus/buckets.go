package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// DefaultHeartbeatMaxValueSize bounds a heartbeat value when BucketOptions leaves it zero.
const DefaultHeartbeatMaxValueSize = 64 << 10

// BucketOptions sizes the KV buckets.
type BucketOptions struct {
	// Replicas is the number of stream replicas (1 embedded, 3 on a cluster); 0 means 1.
	Replicas int
	// HeartbeatMaxAge is how long a heartbeat entry lives without being rewritten; 0 keeps it.
	HeartbeatMaxAge time.Duration
	// HeartbeatMaxValueSize caps one heartbeat value in bytes; 0 means
	// DefaultHeartbeatMaxValueSize, -1 means the server's limit.
	HeartbeatMaxValueSize int32
}

// Buckets are the hub's handles on the KV buckets.
type Buckets struct {
	Heartbeats, Desired, Observed jetstream.KeyValue
	// Sweep (hub writes, agent reads its key) and SweepResults (agent writes its key) carry
	// sweep check requests and answers, the way Desired and Observed carry assignments.
	Sweep, SweepResults jetstream.KeyValue
	// Failover holds each failover member's assignment (hub writes, agent reads its key).
	Failover jetstream.KeyValue
}

// EnsureBuckets creates the buckets, or updates them to the current configuration: file storage,
// one value per key, direct get allowed (agents read with it), and no MaxAge on desired state,
// which must outlive any outage.
//
// The streams are declared here rather than through jetstream.CreateOrUpdateKeyValue so that the
// heartbeat bucket can refuse rollups: agents publish into it, and a "Nats-Rollup: all" header
// would otherwise erase every other agent's heartbeat. As a consequence KeyValue.Purge does not
// work on the heartbeat bucket; Delete does.
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, o BucketOptions) (Buckets, error) {
	if o.Replicas < 0 {
		return Buckets{}, fault.Invalid("Replicas", "must not be negative")
	}
	if o.HeartbeatMaxAge < 0 {
		return Buckets{}, fault.Invalid("HeartbeatMaxAge", "must not be negative")
	}
	if o.HeartbeatMaxValueSize < -1 {
		return Buckets{}, fault.Invalid("HeartbeatMaxValueSize", "must be -1 or more")
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.HeartbeatMaxValueSize == 0 {
		o.HeartbeatMaxValueSize = DefaultHeartbeatMaxValueSize
	}

	hb := kvStreamConfig(wire.BucketHeartbeats, o.Replicas)
	hb.Description = "Godwit agent heartbeats (key: agent ID) and the hub clock"
	hb.MaxAge = o.HeartbeatMaxAge
	if o.HeartbeatMaxAge > 0 && o.HeartbeatMaxAge < hb.Duplicates {
		hb.Duplicates = o.HeartbeatMaxAge // the server refuses a window longer than MaxAge
	}
	hb.MaxMsgSize = o.HeartbeatMaxValueSize
	hb.AllowRollup = false

	ds := kvStreamConfig(wire.BucketDesired, o.Replicas)
	ds.Description = "Godwit desired state per agent (key: agent ID)"

	// Agents write here too, so like heartbeats it refuses rollups; unlike heartbeats it never
	// expires: it is what the controller reconciles after an outage of any length.
	ob := kvStreamConfig(wire.BucketObserved, o.Replicas)
	ob.Description = "Godwit observed assignment state per agent (key: agent ID)"
	ob.AllowRollup = false
	ob.MaxMsgSize = 1 << 20

	sw := kvStreamConfig(wire.BucketSweep, o.Replicas)
	sw.Description = "Godwit sweep check requests per agent (key: agent ID)"

	// Agent-written, so it refuses rollups like the observed bucket.
	sr := kvStreamConfig(wire.BucketSweepResults, o.Replicas)
	sr.Description = "Godwit sweep check results per agent (key: agent ID)"
	sr.AllowRollup = false
	sr.MaxMsgSize = 1 << 20

	fo := kvStreamConfig(wire.BucketFailover, o.Replicas)
	fo.Description = "Godwit failover group assignment per agent (key: agent ID)"

	var b Buckets
	var err error
	if b.Heartbeats, err = ensureKV(ctx, js, wire.BucketHeartbeats, hb); err != nil {
		return Buckets{}, err
	}
	if b.Desired, err = ensureKV(ctx, js, wire.BucketDesired, ds); err != nil {
		return Buckets{}, err
	}
	if b.Observed, err = ensureKV(ctx, js, wire.BucketObserved, ob); err != nil {
		return Buckets{}, err
	}
	if b.Sweep, err = ensureKV(ctx, js, wire.BucketSweep, sw); err != nil {
		return Buckets{}, err
	}
	if b.SweepResults, err = ensureKV(ctx, js, wire.BucketSweepResults, sr); err != nil {
		return Buckets{}, err
	}
	if b.Failover, err = ensureKV(ctx, js, wire.BucketFailover, fo); err != nil {
		return Buckets{}, err
	}
	return b, nil
}

// kvStreamConfig is the stream behind a KV bucket, as nats.go's KeyValue would declare it.
func kvStreamConfig(bucket string, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              "KV_" + bucket,
		Subjects:          []string{wire.KVSubject(bucket, ">")},
		MaxMsgsPerSubject: 1, // History 1
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		AllowDirect:       true,
		Discard:           jetstream.DiscardNew,
		Duplicates:        2 * time.Minute,
	}
}

func ensureKV(ctx context.Context, js jetstream.JetStream, bucket string, cfg jetstream.StreamConfig) (jetstream.KeyValue, error) {
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", bucket, err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", bucket, err)
	}
	return kv, nil
}
