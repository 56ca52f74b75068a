package failover

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// An existing group bucket is used as it is: opening it never rewrites its configuration (a
// member started with one replica must not turn a cluster's R3 bucket into R1).
func TestOpenBucketKeepsAnExistingBucket(t *testing.T) {
	nc, err := nats.Connect(startNATS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	kv, err := OpenBucket(ctx, js, "ns", "g", 1)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := kv.Create(ctx, KeyRecord, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// Someone (the hub, an operator) changed the bucket after it was made.
	cfg := BucketConfig("ns", "g", 1)
	cfg.Description = "changed by the operator"
	cfg.MaxValueSize = 4096
	if _, err := js.UpdateKeyValue(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	kv, err = OpenBucket(ctx, js, "ns", "g", 1)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
	if info.Config.Description != "changed by the operator" || info.Config.MaxMsgSize != 4096 {
		t.Fatalf("opening rewrote the bucket: description %q, max message size %d", info.Config.Description, info.Config.MaxMsgSize)
	}
	if e, err := kv.Get(ctx, KeyRecord); err != nil || string(e.Value()) != `{}` {
		t.Fatalf("the record is gone after opening: %v", err)
	}
}
