// Package liveness derives each agent's online / offline / unknown status from its heartbeats.
//
// Agents put a heartbeat under their own key in a JetStream KV bucket. The controller never
// compares the store's timestamps with its own wall clock (design principle 6): every tick it
// writes the hub clock key into the same bucket and takes that entry's store timestamp as "now".
// An agent is online while now − (store time of its latest heartbeat) ≤ grace, offline after,
// and unknown if it never heartbeated or the hub cannot reach the bucket to judge.
package liveness

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Controller watches heartbeats and records liveness in the store.
type Controller struct {
	kv       jetstream.KeyValue
	store    store.Store
	log      *slog.Logger
	grace    time.Duration
	interval time.Duration

	mu      sync.Mutex
	beats   map[string]beat   // latest heartbeat per agent, from the bucket
	written map[string]string // status last written per agent
	lastOK  time.Time         // local monotonic time of the last successful tick

	startStop sync.Mutex
	cancel    context.CancelFunc
	done      chan struct{}
}

type beat struct {
	at      time.Time // store timestamp
	hb      wire.Heartbeat
	written bool // recorded in the store already
}

// New returns a controller that ticks every interval and judges with grace.
func New(kv jetstream.KeyValue, st store.Store, log *slog.Logger, interval, grace time.Duration) *Controller {
	return &Controller{kv: kv, store: st, log: log, interval: interval, grace: grace,
		beats: map[string]beat{}, written: map[string]string{}}
}

// Start begins watching. Safe to call twice.
func (c *Controller) Start(ctx context.Context) error {
	c.startStop.Lock()
	defer c.startStop.Unlock()
	if c.cancel != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel, c.done = cancel, make(chan struct{})
	c.lastOK = time.Now()
	go c.run(ctx)
	return nil
}

// Stop ends the controller and waits for it. Safe to call twice.
func (c *Controller) Stop(ctx context.Context) error {
	c.startStop.Lock()
	defer c.startStop.Unlock()
	if c.cancel == nil {
		return nil
	}
	c.cancel()
	select {
	case <-c.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.cancel = nil
	return nil
}

func (c *Controller) run(ctx context.Context) {
	defer close(c.done)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.watch(ctx) }()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		c.Tick(ctx)
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
		}
	}
}

// watch follows the bucket, restarting the watcher if it fails (e.g. NATS restarted).
func (c *Controller) watch(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := c.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err != nil {
			c.log.Warn("liveness: watch heartbeats", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(c.interval):
			}
			continue
		}
		for e := range w.Updates() {
			if e != nil {
				c.observe(e)
			}
		}
		_ = w.Stop()
	}
}

func (c *Controller) observe(e jetstream.KeyValueEntry) {
	if e.Key() == wire.HubClockKey {
		return
	}
	var hb wire.Heartbeat
	if err := json.Unmarshal(e.Value(), &hb); err != nil || hb.AgentID != e.Key() {
		c.log.Debug("liveness: ignoring malformed heartbeat", "key", e.Key())
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.beats[e.Key()]; ok && !e.Created().After(prev.at) {
		return
	}
	c.beats[e.Key()] = beat{at: e.Created(), hb: hb}
}

// Tick reads the store clock, judges every agent and writes what changed. Exported for tests.
func (c *Controller) Tick(ctx context.Context) {
	now, err := c.storeNow(ctx)
	if err != nil {
		c.log.Warn("liveness: cannot read the store clock", "err", err)
		if time.Since(c.lastOK) > c.grace {
			c.markAllUnknown(ctx)
		}
		return
	}
	c.lastOK = time.Now()
	agents, err := c.store.ListAgents(ctx)
	if err != nil {
		c.log.Warn("liveness: list agents", "err", err)
		return
	}
	c.mu.Lock()
	var updates []store.Liveness
	for _, a := range agents {
		b, ok := c.beats[a.ID]
		status := wire.StatusUnknown
		if ok {
			status = wire.StatusOffline
			if now.Sub(b.at) <= c.grace {
				status = wire.StatusOnline
			}
		}
		if status == c.written[a.ID] && (!ok || b.written) {
			continue
		}
		u := store.Liveness{AgentID: a.ID, Status: status}
		if ok && !b.written {
			u.LastSeen, u.Version = b.at, b.hb.Version
			sys := b.hb.System
			u.System = &sys
		}
		updates = append(updates, u)
	}
	c.mu.Unlock()
	if err := c.store.UpdateLiveness(ctx, updates); err != nil {
		c.log.Warn("liveness: record", "err", err)
		return
	}
	c.mu.Lock()
	for _, u := range updates {
		if prev, ok := c.written[u.AgentID]; ok && prev != u.Status {
			c.log.Info("agent status changed", "agent", u.AgentID, "from", prev, "to", u.Status)
		}
		c.written[u.AgentID] = u.Status
		if b, ok := c.beats[u.AgentID]; ok && !u.LastSeen.IsZero() && b.at.Equal(u.LastSeen) {
			b.written = true
			c.beats[u.AgentID] = b
		}
	}
	c.mu.Unlock()
}

// storeNow writes the hub clock key and returns the store timestamp of that write.
func (c *Controller) storeNow(ctx context.Context) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, c.interval+time.Second)
	defer cancel()
	rev, err := c.kv.Put(ctx, wire.HubClockKey, []byte("tick"))
	if err != nil {
		return time.Time{}, err
	}
	e, err := c.kv.GetRevision(ctx, wire.HubClockKey, rev)
	if err != nil {
		return time.Time{}, err
	}
	return e.Created(), nil
}

func (c *Controller) markAllUnknown(ctx context.Context) {
	c.mu.Lock()
	var updates []store.Liveness
	for id, s := range c.written {
		if s != wire.StatusUnknown {
			updates = append(updates, store.Liveness{AgentID: id, Status: wire.StatusUnknown})
		}
	}
	c.mu.Unlock()
	if len(updates) == 0 {
		return
	}
	if err := c.store.UpdateLiveness(ctx, updates); err != nil && !errors.Is(err, context.Canceled) {
		c.log.Warn("liveness: record unknown", "err", err)
		return
	}
	c.mu.Lock()
	for _, u := range updates {
		c.written[u.AgentID] = wire.StatusUnknown
	}
	c.mu.Unlock()
	c.log.Warn("liveness: bus unreachable for longer than the grace; agent status is unknown", "agents", len(updates))
}
