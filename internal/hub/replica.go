package hub

// This replica among the others: the lease it contends for, the NATS cluster it must share
// with the database's other replicas, and its row for status pages.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/lease"
	"godwit.dev/godwit/internal/store/sqlstore"
	"godwit.dev/godwit/internal/wire"
)

// replicaRow is this replica's row in the store, kept current by startLease's heartbeat.
type replicaRow struct {
	mu   sync.Mutex
	row  wire.HubReplica
	stop context.CancelFunc
	done chan struct{}
}

// ErrOtherNATS is the refusal of a hub whose NATS is not the NATS of the database's other hubs.
var ErrOtherNATS = errors.New("this hub's NATS is not the NATS cluster of the other hubs of this database")

// ensureLeaseBucket declares the bucket of leases and checks that this hub's NATS is the NATS
// cluster the database's hubs use: a random identity kept in the bucket (created by the first
// hub on a NATS cluster, replicated with it) is recorded in the database by the first hub on
// it, and compared by every later one. A one-hub store (SQLite) adopts a new NATS with a
// warning; a shared one refuses to start unless told to adopt it (nats.adopt).
func (h *Hub) ensureLeaseBucket(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := h.ctlJS.CreateOrUpdateKeyValue(ctx, lease.BucketConfig(LeaseBucket, h.cfg.NATS.Replicas))
	if err != nil {
		return nil, fmt.Errorf("jetstream lease bucket: %w", err)
	}
	id := newID()
	if _, err := kv.Create(ctx, natsIdentityKey, []byte(id)); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("nats identity: %w", err)
		}
		e, err := kv.Get(ctx, natsIdentityKey)
		if err != nil {
			return nil, fmt.Errorf("nats identity: %w", err)
		}
		id = string(e.Value())
	}
	h.natsID = id
	stored, err := h.store.EnsureSetting(ctx, sqlstore.NATSIdentitySetting, id, time.Now())
	if err != nil {
		return nil, err
	}
	if stored == id {
		return kv, nil
	}
	switch {
	case h.cfg.NATS.Adopt:
		h.log.Warn("adopting this hub's NATS as the database's NATS cluster (nats.adopt): the leadership epochs count afresh",
			"nats", id, "was", stored)
	case h.cfg.Database == "":
		// SQLite: the data dir's lock makes this the only hub; its NATS data was lost or replaced.
		h.log.Warn("the NATS data of this hub is new (the JetStream directory was lost or replaced): adopting it; the leadership epochs count afresh",
			"nats", id, "was", stored)
	default:
		return nil, fmt.Errorf("%w: its NATS cluster is %s, the database's hubs use %s. Join this hub's embedded server to their cluster (nats.cluster.routes) or connect it to their NATS (nats.url); only if that NATS is gone for good, start once with %s: %w",
			ErrOtherNATS, id, stored, "nats.adopt (--nats-adopt)", fault.ErrConflict)
	}
	if err := h.store.AdoptNATS(ctx, id, time.Now()); err != nil {
		return nil, err
	}
	return kv, nil
}

// startLease starts contending for the hub's lease and keeps this replica's row current.
func (h *Hub) startLease(ctx context.Context) error {
	var kv jetstream.KeyValue
	for attempt := 1; ; attempt++ {
		// As ensureJetStream: on a cluster, short tries again and again.
		timeout := 30 * time.Second
		if h.jetStreamCluster() {
			timeout = 3 * time.Second
		}
		bctx, cancel := context.WithTimeout(ctx, timeout)
		var err error
		kv, err = h.ensureLeaseBucket(bctx)
		cancel()
		if err == nil {
			break
		}
		if !h.jetStreamCluster() || errors.Is(err, ErrOtherNATS) || attempt >= 20 {
			return err
		}
		h.log.Warn("lease bucket not ready; retrying", "err", err)
	}
	if ttl := h.cfg.LeaseTiming().TTL; h.cfg.Clustered() && ttl < MinClusteredTTL {
		h.log.Info("the lease ttl is shorter than NATS's longest stream election plus a failed write: when the leader crashes, another replica leads once the lease's stream has a new leader (up to 9 s) plus about one renew interval, not within ttl + renew interval (docs/ha.md)",
			"ttl", ttl, "advised_min", MinClusteredTTL)
	}
	l, err := lease.New(lease.Config{Name: LeaseName, Holder: h.id, KV: kv, Timing: h.cfg.LeaseTiming(),
		Logger: h.log.With("component", "lease"), Registry: h.registry, Lead: h.leader.lead})
	if err != nil {
		return err
	}
	if h.replica.stop == nil {
		h.startReplicaRow(ctx)
	} else {
		// Written while this replica waited for JetStream, before its NATS identity was known.
		h.replica.mu.Lock()
		h.replica.row.NATS = h.natsID
		h.replica.mu.Unlock()
		h.saveReplica(ctx)
	}
	if err := l.Start(ctx); err != nil {
		return err
	}
	h.lease.Store(l)
	return nil
}

// startReplicaRow writes this replica's row, as a follower, and keeps it current.
func (h *Hub) startReplicaRow(ctx context.Context) {
	now := time.Now()
	h.replica.mu.Lock()
	h.replica.row = wire.HubReplica{ID: h.id, Address: h.endpoint.API, NATS: h.natsID, Role: wire.RoleFollower,
		Since: now, StartedAt: now, LastSeen: now}
	h.replica.mu.Unlock()
	h.saveReplica(ctx)
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	h.replica.stop, h.replica.done = stop, make(chan struct{})
	go h.heartbeat(rctx, h.replica.done)
}

// stopLease ends a term in progress (the leader-only workers stop), hands the lease on and
// removes this replica's row.
func (h *Hub) stopLease(ctx context.Context) error {
	var err error
	if l := h.lease.Load(); l != nil {
		err = l.Stop(ctx)
	}
	if h.replica.stop == nil {
		return err
	}
	h.replica.stop()
	<-h.replica.done
	h.replica.stop = nil
	if derr := h.store.DeleteReplica(ctx, h.id); derr != nil {
		h.log.Warn("removing this replica's row", "err", derr)
	}
	h.lease.Store(nil)
	return err
}

// heartbeat rewrites this replica's row every renew interval.
func (h *Hub) heartbeat(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(h.cfg.LeaseTiming().RenewInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l := h.lease.Load(); l != nil {
			st := l.Status()
			h.replica.mu.Lock()
			if !st.Leader {
				h.replica.row.Epoch = int64(st.Epoch)
			}
			h.replica.mu.Unlock()
		}
		h.saveReplica(ctx)
	}
}

// noteRole records a change of this replica's role at once.
func (h *Hub) noteRole(role string, epoch int64, since time.Time) {
	h.replica.mu.Lock()
	h.replica.row.Role, h.replica.row.Epoch, h.replica.row.Since = role, epoch, since
	h.replica.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.saveReplica(ctx)
}

func (h *Hub) saveReplica(ctx context.Context) {
	h.replica.mu.Lock()
	h.replica.row.LastSeen = time.Now()
	row := h.replica.row
	h.replica.mu.Unlock()
	if row.ID == "" {
		return
	}
	if err := h.store.SaveReplica(ctx, row); err != nil && ctx.Err() == nil {
		h.log.Debug("saving this replica's row", "err", err)
	}
}

// leadership is the leadership part of the status, as this replica sees it.
func (h *Hub) leadership() *wire.HubLeadership {
	if h.waiting.Load() {
		return h.waitingLeadership()
	}
	l := h.lease.Load()
	if l == nil {
		return nil
	}
	st := l.Status()
	out := &wire.HubLeadership{Replica: h.id, Epoch: int64(st.Epoch), Degraded: st.Degraded}
	if st.Leader {
		out.Leader, out.Since = h.id, st.Since
	} else if st.Record.Readable && !st.Record.Released {
		out.Leader = st.Record.Holder
	}
	if h.server != nil {
		if n, missing := h.server.PeerStatus(); len(missing) > 0 {
			out.Waiting = fmt.Sprintf("NATS peers not connected (%d connected): %v", n, missing)
		}
	}
	return out
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
