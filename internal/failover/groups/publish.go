package groups

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	member "godwit.dev/godwit/internal/agent/failover"
	"godwit.dev/godwit/internal/agent/failover/machine"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Namespace is the installation namespace of the groups' buckets (member.BucketName).
const Namespace = "godwit"

// Bus publishes groups to their members over NATS: each group's bucket (created if absent) gets
// its control key (pause), and every member agent's key in the assignment bucket names its
// group and carries its spec. Publish is a full reconciliation from the store: an agent no
// longer in any group loses its key, so a member of a deleted group stops.
//
// An agent's NATS permissions name its group's bucket as the store said when it connected. An
// agent whose published bucket changes (it left its group, or moved to another) is disconnected
// before its key changes, so its reconnect is authorized afresh: the old bucket is not left to
// an agent that does not reconnect by itself.
type Bus struct {
	Store       store.Store
	JS          jetstream.JetStream
	Assignments jetstream.KeyValue // bus.Buckets.Failover
	Replicas    int
	// Disconnect closes an agent's live NATS connections (the hub's bus); nil closes none.
	Disconnect func(ctx context.Context, agentID string) (int, error)
}

var _ Publisher = (*Bus)(nil)

// Publish reconciles every group; g names the one that changed (its control key is written).
func (b *Bus) Publish(ctx context.Context, g wire.FailoverGroup) error {
	groups, err := b.Store.ListFailoverGroups(ctx)
	if err != nil {
		return err
	}
	want := map[string][]byte{}
	for _, grp := range groups {
		bucket := member.BucketName(Namespace, grp.Name)
		kv, err := b.JS.CreateKeyValue(ctx, member.BucketConfig(Namespace, grp.Name, b.Replicas))
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = b.JS.KeyValue(ctx, bucket)
		}
		if err != nil {
			return fmt.Errorf("failover group %s: bucket %s: %w", grp.Name, bucket, err)
		}
		if err := refuseRollups(ctx, b.JS, bucket); err != nil {
			return fmt.Errorf("failover group %s: bucket %s: %w", grp.Name, bucket, err)
		}
		if err := writeControl(ctx, kv, grp.Paused); err != nil {
			return fmt.Errorf("failover group %s: control key: %w", grp.Name, err)
		}
		v, err := json.Marshal(wire.FailoverAssignment{Group: grp.Name, Bucket: bucket, Spec: grp.Spec, SpecHash: grp.SpecHash})
		if err != nil {
			return err
		}
		for _, a := range grp.Members {
			want[a] = v
		}
	}
	for a, v := range want {
		e, err := b.Assignments.Get(ctx, a)
		switch {
		case err == nil && bytes.Equal(e.Value(), v):
			continue
		case err == nil:
			if err := b.leave(ctx, a, e.Value(), v); err != nil {
				return err
			}
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return fmt.Errorf("failover assignment of agent %s: %w", a, err)
		}
		if _, err := b.Assignments.Put(ctx, a, v); err != nil {
			return fmt.Errorf("failover assignment of agent %s: %w", a, err)
		}
	}
	keys, err := b.Assignments.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for k := range keys.Keys() {
		if _, ok := want[k]; !ok {
			e, err := b.Assignments.Get(ctx, k)
			if err == nil {
				err = b.leave(ctx, k, e.Value(), nil)
			}
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return err
			}
			if err := b.Assignments.Delete(ctx, k); err != nil {
				return fmt.Errorf("failover assignment of agent %s: %w", k, err)
			}
		}
	}
	return nil
}

// leave disconnects agent when its published assignment moves it off a group bucket (old names
// a bucket that next, nil or another group's, does not), so that it reconnects without it.
func (b *Bus) leave(ctx context.Context, agent string, old, next []byte) error {
	var was, will wire.FailoverAssignment
	if json.Unmarshal(old, &was) != nil {
		was.Bucket = "?" // unreadable: assume it named a bucket
	}
	if next != nil {
		if err := json.Unmarshal(next, &will); err != nil {
			return err
		}
	}
	if was.Bucket == "" || was.Bucket == will.Bucket || b.Disconnect == nil {
		return nil
	}
	if _, err := b.Disconnect(ctx, agent); err != nil {
		return fmt.Errorf("failover assignment of agent %s: it leaves bucket %s, and its connections could not be closed: %w", agent, was.Bucket, err)
	}
	return nil
}

// refuseRollups makes the group bucket's stream refuse rollup headers. Members publish into it
// (the record, their own key), and a "Nats-Rollup: all" header on such a publish would otherwise
// erase every key of the bucket: the hub's control key and the other members' keys. Nothing
// purges a group key (a purge is a rollup); deletes still work.
func refuseRollups(ctx context.Context, js jetstream.JetStream, bucket string) error {
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	if !cfg.AllowRollup {
		return nil
	}
	cfg.AllowRollup = false
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// writeControl sets the control key's pause, keeping a pending switchover request.
func writeControl(ctx context.Context, kv jetstream.KeyValue, paused bool) error {
	var c member.Control
	e, err := kv.Get(ctx, member.KeyControl)
	switch {
	case err == nil:
		_ = json.Unmarshal(e.Value(), &c)
		if c.Paused == paused {
			return nil
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return err
	}
	c.Paused = paused
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if e != nil {
		_, err = kv.Update(ctx, member.KeyControl, v, e.Revision())
	} else {
		_, err = kv.Create(ctx, member.KeyControl, v)
	}
	return err
}

// FailoverBucket is the bucket of agentID's group, "" when it is in none (bus.FailoverGroups).
func FailoverBucket(ctx context.Context, st store.Store, agentID string) (string, error) {
	groups, err := st.ListFailoverGroups(ctx)
	if err != nil {
		return "", err
	}
	for _, g := range groups {
		for _, a := range g.Members {
			if a == agentID {
				return member.BucketName(Namespace, g.Name), nil
			}
		}
	}
	return "", nil
}

// Switchover writes a switchover request to the group's control key: the primary of the
// current epoch fences, then hands over to the member to, which promotes at once.
func (b *Bus) Switchover(ctx context.Context, g wire.FailoverGroup, to string) (wire.FailoverSwitchoverResult, error) {
	res := wire.FailoverSwitchoverResult{Group: g.Name, To: to}
	kv, err := b.JS.KeyValue(ctx, member.BucketName(Namespace, g.Name))
	if err != nil {
		return res, fmt.Errorf("failover group %s: bucket: %w", g.Name, err)
	}
	e, err := kv.Get(ctx, member.KeyRecord)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return res, fmt.Errorf("failover group %s has no primary yet: %w", g.Name, fault.ErrConflict)
	}
	if err != nil {
		return res, err
	}
	var rec machine.Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Primary == "" {
		return res, fmt.Errorf("failover group %s: the group record does not name a primary: %w", g.Name, fault.ErrConflict)
	}
	res.From, res.Epoch = rec.Primary, rec.Epoch
	if res.Epoch == 0 {
		res.Epoch = e.Revision() // the promoting write itself
	}
	if rec.Primary == to {
		return res, fault.Invalid("to", "%s is the primary already", to)
	}
	for attempt := 1; ; attempt++ {
		var c member.Control
		ce, err := kv.Get(ctx, member.KeyControl)
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return res, err
		}
		if ce != nil {
			_ = json.Unmarshal(ce.Value(), &c)
		}
		c.SwitchoverTo, c.SwitchoverEpoch = to, res.Epoch
		v, _ := json.Marshal(c)
		if ce != nil {
			_, err = kv.Update(ctx, member.KeyControl, v, ce.Revision())
		} else {
			_, err = kv.Create(ctx, member.KeyControl, v)
		}
		if err == nil || attempt == 3 {
			return res, err
		}
	}
}
