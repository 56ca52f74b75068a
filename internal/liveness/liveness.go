// Package liveness derives each agent's online / offline / unknown status from its heartbeats.
//
// Agents put a heartbeat under their own key in a JetStream KV bucket. The controller never
// compares the store's timestamps with its own wall clock (design principle 6): every tick it
// writes the hub clock key into the same bucket and takes that entry's store timestamp as "now".
// An agent is online while now − (store time of its latest heartbeat) ≤ grace, offline after,
// and unknown if it never heartbeated or the hub cannot reach the bucket to judge (an agent
// already offline stays offline then: nothing new is known of it). The latest heartbeat is the
// bucket's, or the last one recorded in SQL when the bucket no longer holds one.
//
// A change between online and offline is an agent.status_changed event: one when the agent goes
// offline, one when it is back, with how long it was silent. The change is judged against the
// status stored in SQL, not against what this process remembers, so a restarted hub or a new
// leader does not announce again what was announced, and the first tick waits for the bucket's
// stored heartbeats so that a restart does not see every agent silent.
//
// Whenever the hub begins to see the bucket — a run's first tick, or the first after ticks that
// could not read the store clock — the agents it has not heard from since may have been cut off
// with it (the embedded bus stops with the hub; an outage of the bus cuts off everyone) and be
// reconnecting with their back-off. For the settle time (Config.Settle) such an agent keeps its
// stored status rather than being judged offline: a hub back after an outage does not announce
// the whole fleet offline and then online again.
//
// What is written is bounded by change, not by fleet size. A run reads every agent from SQL once,
// at its first tick, into an index it keeps up to date with what it writes; ticks judge that index
// and do not list the agents again (an agent enrolled since is read when its first heartbeat
// arrives). A tick writes, in one batch: each change of status, of version, of degraded reason or
// of system description (free disk aside) at once; and an agent's last-seen time only when the
// stored one is LastSeenEvery or more behind its latest heartbeat, so each agent's last_seen is
// written at most once per LastSeenEvery of store time. A row's status is written only where the
// stored one differs (a last-seen write of an agent that stays online leaves the status's
// indexes alone, and puts right a row another writer changed), its degraded reason only when it
// changed. A change of status also records the latest heartbeat, so the stored last_seen of an
// offline agent is that of its last heartbeat.
package liveness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/hubevent"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
	"godwit.dev/godwit/internal/worker"
)

// Config wires a liveness controller.
type Config struct {
	KV     jetstream.KeyValue // the heartbeat bucket
	Store  store.Store
	Logger *slog.Logger
	// Interval is how often agents are judged (the agents' heartbeat interval); Grace how long
	// after its latest heartbeat an agent is still online.
	Interval, Grace time.Duration
	// Publish records the agent.status_changed events; nil drops them. An event it cannot record
	// is kept and offered again (package hubevent).
	Publish func(ctx context.Context, e wire.Event) error
	// HubID names this hub in event sources.
	HubID string
	// Now tells the time heartbeats are judged at; nil: the store timestamp of a write of the hub
	// clock key (tests jump hours with a fake).
	Now func(ctx context.Context) (time.Time, error)
	// OnExit is told if the controller stops by itself (a panic). See package worker.
	OnExit func(worker.Exit)
	// Registry receives the worker metrics; nil: not exported.
	Registry prometheus.Registerer
	// Settle is how long after the hub begins to see the bucket (a run's start, the bus back)
	// an agent not heard from since keeps its stored status instead of going offline: longer
	// than an agent's reconnect back-off. ≤ 0: Grace.
	Settle time.Duration
	// LastSeenEvery is how far an agent's stored last-seen time may fall behind its latest
	// heartbeat before it is written again: at most one last-seen write per agent per
	// LastSeenEvery. Changes of status are written at once regardless. ≤ 0: DefaultLastSeenEvery.
	LastSeenEvery time.Duration
	// OnStatus is told of each change of an agent's status once it is stored (the migration
	// controller keeps its reachability index from these instead of reading every agent on
	// every pass). Nil: nobody is told. It must not block.
	OnStatus func(agentID, status string)
}

// DefaultLastSeenEvery is Config.LastSeenEvery's default.
const DefaultLastSeenEvery = 30 * time.Second

// Controller watches heartbeats and records liveness in the store.
type Controller struct {
	kv       jetstream.KeyValue
	store    store.Store
	log      *slog.Logger
	grace    time.Duration
	interval time.Duration
	settle   time.Duration
	hubID    string
	now      func(ctx context.Context) (time.Time, error)
	events   *hubevent.Sender

	lastSeenEvery time.Duration
	onStatus      func(agentID, status string)

	mu     sync.Mutex
	beats  map[string]beat // latest heartbeat per agent, from the bucket
	synced chan struct{}   // closed once the watch delivered the bucket's stored heartbeats

	// index is what SQL holds of each agent, read once per run and kept up to date with what the
	// run writes; nil until the run's first tick reads it. Only the run's goroutine changes it
	// (the map and the records), reading it without mu; c.mu guards it against begin.
	index map[string]*record
	// missing is the heartbeat time of beating keys that no agent row has, so that each is
	// looked up again only when it beats again.
	missing map[string]time.Time

	lastOK time.Time // local monotonic time of the last successful tick (set by begin, then the run's)
	// sight is the store time of the first tick that read the store clock since the run began or
	// since the last tick that could not; zero until then. The run's goroutine only.
	sight time.Time

	life *worker.Lifecycle
}

type beat struct {
	at time.Time // store timestamp
	hb wire.Heartbeat
}

// record is an agent as its row in SQL stands.
type record struct {
	name     string
	status   string
	lastSeen time.Time
	version  string
	degraded string
	system   wire.SystemInfo // FreeDiskBytes zeroed: it changes with every heartbeat
	revoked  bool
}

func recordOf(a wire.Agent) *record {
	sys := a.System
	sys.FreeDiskBytes = 0
	return &record{name: a.Name, status: a.Status, lastSeen: a.LastSeen, version: a.Version, degraded: a.Degraded,
		system: sys, revoked: a.RevokedAt != nil}
}

// agent is the record as the event texts need it.
func (r *record) agent(id string) wire.Agent {
	a := wire.Agent{ID: id, Name: r.name, Status: r.status, LastSeen: r.lastSeen}
	if r.revoked {
		a.RevokedAt = &time.Time{}
	}
	return a
}

// New returns a controller; Start makes it run.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Controller{kv: cfg.KV, store: cfg.Store, log: cfg.Logger, interval: cfg.Interval, grace: cfg.Grace, settle: cfg.Settle, hubID: cfg.HubID,
		now: cfg.Now, events: hubevent.New(cfg.Publish, cfg.Logger).CountedIn(cfg.Registry, "liveness"),
		beats: map[string]beat{}, synced: make(chan struct{}), lastSeenEvery: cfg.LastSeenEvery, onStatus: cfg.OnStatus,
		life: worker.New(worker.Config{Name: "liveness", Logger: cfg.Logger, OnExit: cfg.OnExit, Registry: cfg.Registry})}
	if c.now == nil {
		c.now = c.storeNow
	}
	if c.settle <= 0 {
		c.settle = c.grace
	}
	if c.lastSeenEvery <= 0 {
		c.lastSeenEvery = DefaultLastSeenEvery
	}
	return c
}

// Start begins watching. Safe to call twice; Start after Stop starts again (package worker).
func (c *Controller) Start(ctx context.Context) error {
	return c.life.Start(ctx, c.begin, c.run, c.watch)
}

// Stop ends the controller and waits for it. Safe to call twice.
func (c *Controller) Stop(ctx context.Context) error { return c.life.Stop(ctx) }

// begin sets a run up. The heartbeats seen are facts of the bucket and stay; the index of what
// SQL holds is dropped, since another hub may have written in between, and the first tick reads
// it again.
func (c *Controller) begin(context.Context) error {
	c.mu.Lock()
	c.index, c.missing = nil, nil
	c.synced = make(chan struct{})
	c.mu.Unlock()
	c.lastOK = time.Now()
	c.sight = time.Time{}
	return nil
}

// run judges the agents every interval until Stop; watch runs beside it. Nothing is judged
// before the watch has delivered the stored heartbeats (or the grace has passed without them).
func (c *Controller) run(ctx context.Context) error {
	c.mu.Lock()
	synced := c.synced
	c.mu.Unlock()
	select {
	case <-synced:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(c.grace):
		c.log.Warn("liveness: stored heartbeats not read within the grace; judging anyway")
	}
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		c.tick(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
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
			if e == nil {
				c.markSynced()
				continue
			}
			c.observe(e)
		}
		_ = w.Stop()
	}
}

func (c *Controller) markSynced() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.synced:
	default:
		close(c.synced)
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

// tick reads the store clock, judges every agent of the index, writes in one batch what changed
// (and the last-seen times that are due) and announces each change between online and offline.
func (c *Controller) tick(ctx context.Context) {
	c.events.Flush(ctx)
	now, err := c.now(ctx)
	if err != nil {
		c.log.Warn("liveness: cannot read the store clock", "err", err)
		c.sight = time.Time{}
		if time.Since(c.lastOK) > c.grace {
			c.markAllUnknown(ctx)
		}
		return
	}
	c.lastOK = time.Now()
	if c.sight.IsZero() || now.Before(c.sight) {
		c.sight = now
	}
	if err := c.load(ctx); err != nil {
		c.log.Warn("liveness: list agents", "err", err)
		return
	}
	c.learn(ctx)

	type move struct {
		id     string
		r      *record
		status string
		b      beat
	}
	var updates []store.Liveness
	var moves []move
	c.mu.Lock()
	for id, r := range c.index {
		// The latest heartbeat is the bucket's, or the one stored (a heartbeat key that expired
		// while the agent was away still leaves the agent offline, not unknown).
		b, ok := c.beats[id]
		fresh := ok && b.at.After(r.lastSeen)
		at := r.lastSeen
		if fresh {
			at = b.at
		}
		status := wire.StatusUnknown
		if !at.IsZero() {
			status = wire.StatusOffline
			if now.Sub(at) <= c.grace {
				status = wire.StatusOnline
			}
		}
		if status == wire.StatusOffline && at.Before(c.sight) && now.Sub(c.sight) <= c.settle {
			// Not heard from since the hub began to see: it may be reconnecting still.
			status = r.status
		}
		// A row carries the status as judged and the heartbeat's version and system description
		// (free disk changes with every heartbeat): the store sets the status column only where
		// the stored status differs, so a last-seen write of an agent that stays online leaves
		// the status's indexes alone, and a row that another writer changed (a replica that
		// led before) is right again at the agent's next last-seen write. The degraded reason
		// goes only when it changed: clearing it is a DELETE per agent.
		u := store.Liveness{AgentID: id, Status: status}
		due := status != r.status
		if fresh {
			sys := b.hb.System
			sys.FreeDiskBytes = 0
			degraded := b.hb.Degraded != r.degraded
			due = due || b.at.Sub(r.lastSeen) >= c.lastSeenEvery || b.hb.Version != "" && b.hb.Version != r.version ||
				degraded || sys != r.system
			u.LastSeen, u.Version = b.at, b.hb.Version
			if degraded {
				d := b.hb.Degraded
				u.Degraded = &d
			}
			full := b.hb.System
			u.System = &full
		}
		if !due {
			continue
		}
		updates = append(updates, u)
		if status != r.status {
			moves = append(moves, move{id: id, r: r, status: status, b: b})
		}
	}
	c.mu.Unlock()
	var changes []wire.Event
	for _, m := range moves {
		if e, ok := c.announce(ctx, m.id, m.r, m.status, m.b, now); ok {
			changes = append(changes, e)
		}
	}
	if err := c.store.UpdateLiveness(ctx, updates); err != nil {
		c.log.Warn("liveness: record", "err", err)
		return
	}
	for _, u := range updates {
		r := c.index[u.AgentID]
		if r.status != u.Status {
			c.log.Info("agent status changed", "agent", u.AgentID, "from", r.status, "to", u.Status)
			c.told(u.AgentID, u.Status)
			r.status = u.Status
		}
		if u.LastSeen.After(r.lastSeen) {
			r.lastSeen = u.LastSeen
		}
		if u.Version != "" {
			r.version = u.Version
		}
		if u.Degraded != nil {
			r.degraded = *u.Degraded
		}
		if u.System != nil {
			r.system = *u.System
			r.system.FreeDiskBytes = 0
		}
	}
	for _, e := range changes {
		c.events.Send(ctx, e)
	}
}

// load reads every agent into the index, once per run.
func (c *Controller) load(ctx context.Context) error {
	if c.index != nil {
		return nil
	}
	agents, err := c.store.ListAgents(ctx)
	if err != nil {
		return err
	}
	c.index = make(map[string]*record, len(agents))
	c.missing = map[string]time.Time{}
	for _, a := range agents {
		c.index[a.ID] = recordOf(a)
	}
	return nil
}

// learn reads the rows of agents that heartbeat but are not in the index (enrolled since the
// run began).
func (c *Controller) learn(ctx context.Context) {
	newcomers := map[string]time.Time{}
	c.mu.Lock()
	for id, b := range c.beats {
		if _, ok := c.index[id]; ok {
			continue
		}
		if at, ok := c.missing[id]; ok && !b.at.After(at) {
			continue
		}
		newcomers[id] = b.at
	}
	c.mu.Unlock()
	for id, at := range newcomers {
		a, err := c.store.GetAgent(ctx, id)
		switch {
		case errors.Is(err, fault.ErrNotFound):
			c.missing[id] = at
		case err != nil:
			c.log.Warn("liveness: read agent", "agent", id, "err", err)
		default:
			delete(c.missing, id)
			c.index[id] = recordOf(a)
		}
	}
}

// announce returns the event for an agent's change of status, if the change is announced. The
// agent's row is read again first (a change that is announced is rare): it may have been
// revoked or renamed since the index read it.
func (c *Controller) announce(ctx context.Context, id string, r *record, status string, b beat, now time.Time) (wire.Event, bool) {
	if status != wire.StatusOffline && !(status == wire.StatusOnline && r.status == wire.StatusOffline) {
		return wire.Event{}, false
	}
	if a, err := c.store.GetAgent(ctx, id); err == nil {
		r.name, r.revoked = a.Name, a.RevokedAt != nil
	}
	return c.change(r.agent(id), status, b, now)
}

// change returns the event for an agent whose status moves from the stored one to status, if
// the move is one that is announced: to offline (from online, or from unknown — an agent the
// hub could not judge for a while, now known to be silent), or from offline back to online.
// Moves to and from unknown otherwise are the hub's blindness, not the agent's doing.
func (c *Controller) change(a wire.Agent, status string, b beat, now time.Time) (wire.Event, bool) {
	if a.Status == status || a.RevokedAt != nil {
		return wire.Event{}, false
	}
	lastSeen := a.LastSeen
	if b.at.After(lastSeen) {
		lastSeen = b.at
	}
	var sev, msg string
	var silent time.Duration
	switch {
	case status == wire.StatusOffline:
		silent = now.Sub(lastSeen)
		sev = wire.SeverityWarning
		msg = fmt.Sprintf("agent %s is offline: no heartbeat for %s (last at %s; liveness grace %s)",
			a.Name, silent.Round(time.Second), lastSeen.UTC().Format(time.RFC3339), c.grace)
	case status == wire.StatusOnline && a.Status == wire.StatusOffline:
		// a.LastSeen is the last heartbeat before the silence; b.at the one that ended it.
		silent = b.at.Sub(a.LastSeen)
		sev = wire.SeverityInfo
		msg = fmt.Sprintf("agent %s is online again after %s without a heartbeat (offline since its heartbeat at %s)",
			a.Name, silent.Round(time.Second), a.LastSeen.UTC().Format(time.RFC3339))
	default:
		return wire.Event{}, false
	}
	extra, _ := json.Marshal(map[string]any{"from": a.Status, "to": status, "last_seen": lastSeen.UTC(), "silent_seconds": int64(silent.Seconds())})
	e := wire.NewEvent(wire.HubSource(c.hubID), wire.EventAgentStatusChanged, sev, wire.EventData{AgentID: a.ID, Message: msg, Extra: extra})
	e.Subject = "agent/" + a.ID
	return e, true
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

// markAllUnknown records that the hub cannot judge the agents it last saw online. An agent
// already offline stays offline: the hub learns nothing new of it while it is blind, and
// marking it unknown would only make it "go offline" again once the hub sees.
//
// A run that has not judged yet (a hub that starts, or a replica that takes the lead, while the
// bus is away) reads the agents first: what SQL says was online is not known now either.
func (c *Controller) markAllUnknown(ctx context.Context) {
	if err := c.load(ctx); err != nil {
		if !errors.Is(err, context.Canceled) {
			c.log.Warn("liveness: list agents", "err", err)
		}
		return
	}
	var updates []store.Liveness
	for id, r := range c.index {
		if r.status == wire.StatusOnline {
			updates = append(updates, store.Liveness{AgentID: id, Status: wire.StatusUnknown})
		}
	}
	if len(updates) == 0 {
		return
	}
	if err := c.store.UpdateLiveness(ctx, updates); err != nil {
		// Not stored, so not told either (a hub stopping meanwhile logs nothing): the next
		// tick judges again.
		if !errors.Is(err, context.Canceled) {
			c.log.Warn("liveness: record unknown", "err", err)
		}
		return
	}
	for _, u := range updates {
		c.index[u.AgentID].status = wire.StatusUnknown
		c.told(u.AgentID, wire.StatusUnknown)
	}
	c.log.Warn("liveness: bus unreachable for longer than the grace; agent status is unknown", "agents", len(updates))
}

// told passes a stored change of status on to Config.OnStatus.
func (c *Controller) told(id, status string) {
	if c.onStatus != nil {
		c.onStatus(id, status)
	}
}
