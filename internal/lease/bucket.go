package lease

import "github.com/nats-io/nats.go/jetstream"

// BucketConfig is the configuration of a bucket of leases (one key per lease); docs/ha.md
// explains each choice. In short: file storage and replicas so that the lease survives what the
// cluster survives; the longest history the server allows, so that the last writes of a key
// (who held it, at what epoch, and when by the store's clock) can be read after an incident —
// history changes nothing in the protocol, compare-and-set is always against the latest
// revision; and no TTL of any kind: expiry is judged by the readers' own clocks, and a key the
// server dropped on its own clock could let a second holder in while the first still leads.
func BucketConfig(bucket string, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "Godwit leases (key: lease name)",
		History:     jetstream.KeyValueMaxHistory,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	}
}
