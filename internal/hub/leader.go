package hub

// The hub's leadership: one lease over a NATS KV key (package lease) and one lifecycle for the
// leader-only workers — liveness, the migration controller and the sweep scheduler. They start
// together when this replica's term begins, stop together when it ends, and start again on the
// next term. The term's epoch is adopted by the store (AdoptEpoch) before any worker writes,
// and every fenced write checks the term first: a replica paused past its deadline learns it no
// longer leads before it writes, and the store refuses what was already on the wire.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/lease"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
	"godwit.dev/godwit/internal/worker"
)

// Lease names: the bucket of leases and the hub's key in it.
const (
	LeaseBucket = "godwit_leases"
	LeaseName   = "hub"
	// natsIdentityKey holds the random identity of the NATS cluster (in LeaseBucket), which the
	// database records so that a hub on another NATS is refused (docs/ha.md).
	natsIdentityKey = "nats-identity"
)

// MinClusteredTTL is the least lease ttl with which, on an embedded clustered NATS, a crash of the
// leader is taken over within ttl + renew interval: nats-server's longest raft election (9 s),
// which the lease's stream goes through when the leader's server dies with it, plus one failed
// takeover write (docs/ha.md, "On a replicated bucket"). A shorter ttl is safe and allowed;
// the hub says so at start.
const MinClusteredTTL = 9500 * time.Millisecond

// leader is the one lifecycle of the leader-only workers under the lease.
type leader struct {
	h *Hub

	mu     sync.Mutex
	term   *lease.Term // the live term while leading
	fenced chan worker.Exit
}

func newLeader(h *Hub) *leader { return &leader{h: h, fenced: make(chan worker.Exit, 1)} }

// lead is the lease's Lead: one call per term.
func (l *leader) lead(t lease.Term) {
	h := l.h
	ctx := t.Context()
	l.mu.Lock()
	l.term = &t
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.term = nil
		l.mu.Unlock()
	}()
	// A fenced exit of the previous term is stale.
	select {
	case <-l.fenced:
	default:
	}
	h.log.Info("this replica leads: starting the leader-only workers", "epoch", t.Epoch)
	h.noteRole(wire.RoleLeader, int64(t.Epoch), t.Started)
	go l.keepLeaseStreamNear(ctx, t.Epoch)
	ws := h.leaderWorkers()
	// A start that fails for a passing reason (NATS electing a stream leader after a server
	// was lost, the database restarting) is tried again within the term: handing the lease on
	// would only move the same trouble to another replica after a ttl.
	for {
		err := worker.StartAll(ctx, ws...)
		if err == nil {
			break
		}
		if errors.Is(err, fault.ErrFenced) || ctx.Err() != nil {
			h.log.Warn("leader-only workers did not start; this replica does not lead", "epoch", t.Epoch, "err", err)
			h.noteRole(wire.RoleFollower, int64(t.Epoch), time.Now())
			return
		}
		h.log.Warn("leader-only workers did not start; trying again", "epoch", t.Epoch, "err", err)
		select {
		case <-ctx.Done():
			h.noteRole(wire.RoleFollower, int64(t.Epoch), time.Now())
			return
		case <-time.After(h.cfg.LeaseTiming().RenewInterval):
		}
	}
	var why error
	select {
	case <-ctx.Done():
		why = context.Cause(ctx)
	case e := <-l.fenced:
		why = fmt.Errorf("the store holds a newer epoch than %d: %w", t.Epoch, e)
	}
	sctx, cancel := context.WithTimeout(context.Background(), h.cfg.ShutdownTimeout.D())
	defer cancel()
	if err := worker.StopAll(sctx, ws...); err != nil {
		h.log.Warn("stopping the leader-only workers", "err", err)
	}
	lvl := h.log.Warn
	if errors.Is(why, lease.ErrReleased) {
		lvl = h.log.Info
	}
	lvl("this replica stepped down: its leader-only workers stopped; it goes on serving the API, the UI and the ingest as a follower",
		"epoch", t.Epoch, "why", why)
	h.noteRole(wire.RoleFollower, int64(t.Epoch), time.Now())
}

// exited hears of a leader-only worker whose run ended by itself. A fenced one ends the term
// (the lease is handed on); anything else is the hub's to act on.
func (l *leader) exited(e worker.Exit) bool {
	if !errors.Is(e.Err, fault.ErrFenced) {
		return false
	}
	select {
	case l.fenced <- e:
	default:
	}
	return true
}

// current returns the live term.
func (l *leader) current() (lease.Term, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term == nil {
		return lease.Term{}, false
	}
	return *l.term, true
}

// check returns nil if epoch is the live term's and the term is still valid.
func (l *leader) check(epoch int64) error {
	t, ok := l.current()
	if !ok {
		return fmt.Errorf("epoch %d: this replica does not lead: %w", epoch, fault.ErrFenced)
	}
	if int64(t.Epoch) != epoch {
		return fmt.Errorf("epoch %d: this replica leads under %d: %w", epoch, t.Epoch, fault.ErrFenced)
	}
	return t.Check()
}

// termLeadership hands a worker the live term's epoch, adopted by the store under the worker's
// leadership name.
type termLeadership struct {
	l    *leader
	name string
}

var _ lease.Leadership = termLeadership{}

// Acquire implements lease.Leadership.
func (tl termLeadership) Acquire(ctx context.Context) (int64, error) {
	t, ok := tl.l.current()
	if !ok {
		return 0, fmt.Errorf("%s: this replica does not lead: %w", tl.name, fault.ErrFenced)
	}
	if err := t.Check(); err != nil {
		return 0, err
	}
	epoch := int64(t.Epoch)
	if err := tl.l.h.store.AdoptEpoch(ctx, tl.name, tl.l.h.id, epoch, time.Now()); err != nil {
		return 0, err
	}
	return epoch, nil
}

// fencedStore is the store as the leader-only workers see it: a fenced write first checks that
// its epoch is the live term's and that the term has not passed its deadline.
type fencedStore struct {
	store.Store
	check func(epoch int64) error
}

func (s fencedStore) guard(f store.Fence) error {
	if f.Epoch == 0 {
		return nil
	}
	if err := s.check(f.Epoch); err != nil {
		return fmt.Errorf("%s write refused before it was sent: %w", f.Name, err)
	}
	return nil
}

func (s fencedStore) TouchEpoch(ctx context.Context, f store.Fence, now time.Time) error {
	if err := s.guard(f); err != nil {
		return err
	}
	return s.Store.TouchEpoch(ctx, f, now)
}

func (s fencedStore) SaveMigration(ctx context.Context, f store.Fence, m wire.Migration, changed []wire.Assignment) error {
	if err := s.guard(f); err != nil {
		return err
	}
	return s.Store.SaveMigration(ctx, f, m, changed)
}

func (s fencedStore) ReconcileFindings(ctx context.Context, f store.Fence, current []wire.CheckFinding, now time.Time) ([]wire.CheckFinding, []store.OpenFinding, error) {
	if err := s.guard(f); err != nil {
		return nil, nil, err
	}
	return s.Store.ReconcileFindings(ctx, f, current, now)
}

func (s fencedStore) StartRun(ctx context.Context, f store.Fence, firing *store.SweepFiring, run wire.SweepRun, agents []wire.SweepRunAgent) (wire.SweepRun, error) {
	if err := s.guard(f); err != nil {
		return run, err
	}
	return s.Store.StartRun(ctx, f, firing, run, agents)
}

func (s fencedStore) SaveRun(ctx context.Context, f store.Fence, run wire.SweepRun, changed []wire.SweepRunAgent) error {
	if err := s.guard(f); err != nil {
		return err
	}
	return s.Store.SaveRun(ctx, f, run, changed)
}

// keepLeaseStreamNear keeps the lease bucket's stream led by the NATS server this replica is
// connected to (its own embedded one, or the external server it uses), checking once per ttl
// for as long as the term lasts: losing any other server then leaves the lease's renews
// untouched (bus.MoveStreamLeader, docs/ha.md). It logs once per term when the stream is led
// there.
func (l *leader) keepLeaseStreamNear(ctx context.Context, epoch uint64) {
	h := l.h
	if h.cfg.NATS.Replicas < 2 {
		return
	}
	timing := h.cfg.LeaseTiming()
	said := false
	for {
		here := h.nc.ConnectedServerName()
		cctx, cancel := context.WithTimeout(ctx, timing.CallTimeout)
		leader, err := bus.MoveStreamLeader(cctx, h.js, h.nc, "KV_"+LeaseBucket, here)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			h.log.Debug("cannot move the lease stream's leader to this replica's NATS server", "err", err)
		case leader == here && !said:
			said = true
			h.log.Info("the lease stream is led by this replica's NATS server", "server", here, "epoch", epoch)
		}
		wait := timing.TTL
		if leader != here {
			wait = timing.RenewInterval // a move was asked for: see it done
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
