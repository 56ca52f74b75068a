// Package controller is the hub's migration controller. It runs on the leader only, and every
// write it makes carries the leader's fencing epoch (see Leadership).
//
// It is level-triggered: each pass reads the migrations and assignments from SQL and the agents'
// observed state from the observed bucket, decides, writes the decision to SQL, and then writes
// each agent's desired state (derived from SQL alone) to the desired bucket. A pass after an
// outage of any length starts from what is stored, never from a backlog of messages.
package controller

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
	"godwit.dev/godwit/internal/collector"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/hubevent"
	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
	"godwit.dev/godwit/internal/worker"
)

// Clock tells the time. Deadlines under the "active" policy add up the differences between
// successive passes that read and saved the store, so a test clock that jumps hours between two
// such passes counts hours of hub up-time (and one that jumps while the store is away, none).
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Config wires a controller.
type Config struct {
	Store    store.Store
	Desired  jetstream.KeyValue
	Observed jetstream.KeyValue
	Leader   Leadership
	Logger   *slog.Logger
	// Interval between passes; a Nudge runs one sooner. Default 500ms.
	Interval time.Duration
	Clock    Clock
	// Publish records a hub event (state changes, timeouts); nil drops them. An event it cannot
	// record is kept and offered again (package hubevent).
	Publish func(ctx context.Context, e wire.Event) error
	// HubID names this hub in event sources.
	HubID string
	// Settle is how long, after taking the lead and after the bus comes back, the controller
	// starts nothing new and judges no deadline of an agent it has not heard from again, so
	// agents can report what they finished while nobody could hear them: an outcome never
	// depends on which component came back first. It must cover an agent's reconnect back-off.
	// Default (0) 45s; negative: none (tests that step passes by hand).
	Settle time.Duration
	// Connected reports whether the hub can reach NATS; while it cannot, deadlines are not
	// enforced (nobody can hear the agents). Nil: always connected. Only the connection counts:
	// a desired document that the bus refuses (too large, say) is that document's problem, not
	// an outage.
	Connected func() bool
	// MaxPayload is the largest message the NATS server the hub is connected to accepts
	// (nats.Conn.MaxPayload). A migration whose desired document would not fit is refused at
	// Apply; one stored past that check fails on its own without holding up the others. Nil, or
	// 0 while not connected: not checked.
	MaxPayload func() int64
	// Referenced names what depends on a migration besides its own records (the sweeps that
	// remediate with its spec); Delete refuses while there is any. Nil: nothing does.
	Referenced func(ctx context.Context, migration string) ([]string, error)
	// Registry receives the controller's metrics; nil: not exported.
	Registry prometheus.Registerer
	// OnExit is told when the controller stops by itself: deposed (fault.ErrFenced, another hub
	// holds a newer epoch) or panicked. See package worker.
	OnExit func(worker.Exit)
}

// Controller runs migrations.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	epoch    int64
	observed map[string]wire.ObservedState // agent → latest observed document
	specs    map[string]*spec.Migration    // spec hash → parsed spec
	written  map[string]docDigest          // agent → digest of the desired document last written
	// counted holds, per migration, the time of the last pass that read the store and saved
	// the migration's counted time: the next pass counts from there. A pass takes the whole map
	// and puts back only the migrations it saved, so a pass cut short in any way (the store
	// unreachable, a save refused, a panic, a stop) leaves no mark, and the time until the next
	// pass that gets through is never counted.
	counted map[string]time.Time
	touched time.Time // last TouchEpoch
	// adopted names the migrations reconciled since taking the lead: until a migration's first
	// reconcile, what it adopts from the agents happened while no controller ran, and each
	// change becomes an event.
	adopted map[string]bool
	// judgeFrom is when deadlines may be enforced again (see Config.Settle); busDown is set
	// while the hub is not connected to NATS.
	judgeFrom time.Time
	busDown   bool
	// failing is set while the store cannot be read (the database is unreachable); the first
	// pass that can read it again settles before judging, as after a start. Nothing else sets
	// it: one migration's trouble is that migration's.
	failing bool
	// unrunnable remembers the migrations already reported as unrunnable, and writeErr the
	// last error writing each agent's desired document, so that each is logged once.
	unrunnable map[string]bool
	writeErr   map[string]string
	// resend names the agents whose desired document the next pass renders and writes again
	// (the consistency check found that an agent did not get it).
	resend  map[string]bool
	synced  chan struct{} // closed once the observed watcher delivered its initial values
	rewatch chan struct{} // asks the observed watcher to start over (the bus came back)
	// heardAt is when each agent's observed state last arrived; recoveredAt when the controller
	// took the lead or the bus came back. While settling, an agent is judged once it has been
	// heard from again since then.
	heardAt     map[string]time.Time
	recoveredAt time.Time
	passes      *prometheus.CounterVec

	// agents is the reachability index (agents.go): read from SQL once per run (or again when
	// resync is set), then changed only by agentChanges, the changes reported since the last
	// pass. Only the pass's goroutine reads or changes the map itself.
	agents       map[string]agentEntry
	agentChanges []agentChange
	resync       bool
	// obsChanged names the agents whose observed state arrived since the last pass, and
	// obsMigrations the migrations for which some agent's observed document holds an entry that
	// is new or differs from the one before; idle holds the finished migrations a pass skips
	// until they change or one of their entries does (only the pass's goroutine uses it).
	obsChanged    map[string]bool
	obsMigrations map[string]bool
	// idle maps each finished migration whose last pass left nothing for any agent to do to
	// its version then: until its row changes (its version) or an agent reports a new or changed
	// entry for it, a pass has nothing to do for it and reads none of its assignments. Agents
	// reporting on other migrations, or republishing what they said before, do not wake it.
	idle map[string]int64
	// rows holds the assignments of the migrations the last pass worked on, with the version
	// they go with (see rows; only the pass's goroutine uses it).
	rows map[string]*rows
	// unsaved is, per migration, the active time counted by passes and not yet stored (see
	// activeFlush).
	unsaved map[string]*counting
	// seq numbers the passes that took the observed changes (takeObserved): rows kept by the
	// pass just before this one, together with what changed since, are all a pass needs to
	// look at (see rows.seq).
	seq int64
	// budget is the desired document budget the last pass rendered with: when it changes, every
	// document is rendered again.
	lastBudget int
	// stats is what the last pass looked at: agents observed and desired documents rendered
	// (tests count them; only the pass's goroutine uses it).
	stats passStats

	events *hubevent.Sender
	life   *worker.Lifecycle
}

// New returns a controller; Start makes it run.
func New(cfg Config) *Controller {
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	switch {
	case cfg.Settle == 0:
		cfg.Settle = DefaultSettle
	case cfg.Settle < 0:
		cfg.Settle = 0
	}
	passes := collector.Register(cfg.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "godwit_migration_controller_passes_total", Help: "Migration controller passes by result (ok, error).",
	}, []string{"result"}))
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{cfg: cfg, log: cfg.Logger, synced: make(chan struct{}), rewatch: make(chan struct{}, 1),
		heardAt: map[string]time.Time{}, passes: passes, adopted: map[string]bool{},
		observed: map[string]wire.ObservedState{}, specs: map[string]*spec.Migration{}, written: map[string]docDigest{}, counted: map[string]time.Time{},
		unrunnable: map[string]bool{}, writeErr: map[string]string{}, resend: map[string]bool{}, obsChanged: map[string]bool{}, obsMigrations: map[string]bool{}, idle: map[string]int64{},
		rows:    map[string]*rows{},
		unsaved: map[string]*counting{},
		events:  hubevent.New(cfg.Publish, cfg.Logger).CountedIn(cfg.Registry, "migrations"),
		life:    worker.New(worker.Config{Name: "migrations", Logger: cfg.Logger, OnExit: cfg.OnExit, Registry: cfg.Registry})}
}

// Start acquires leadership, starts following observed state and runs passes until Stop. Safe
// to call twice; Start after Stop leads again (package worker).
func (c *Controller) Start(ctx context.Context) error {
	return c.life.Start(ctx, c.begin, c.run, c.watchObserved)
}

// Stop ends the controller and waits for its pass to finish. Safe to call twice.
func (c *Controller) Stop(ctx context.Context) error { return c.life.Stop(ctx) }

// begin sets a run up: nothing the last run learned carries over (another hub may have led in
// between, and the time no run counted must count nothing), then it takes the lead.
func (c *Controller) begin(ctx context.Context) error {
	c.mu.Lock()
	c.observed, c.heardAt, c.written = map[string]wire.ObservedState{}, map[string]time.Time{}, map[string]docDigest{}
	c.unrunnable, c.writeErr, c.resend = map[string]bool{}, map[string]string{}, map[string]bool{}
	c.counted, c.failing, c.busDown = map[string]time.Time{}, false, false
	// The agent index is read again from SQL by the first pass: another hub may have led and
	// written in between.
	c.agents, c.agentChanges, c.obsChanged, c.obsMigrations, c.idle = nil, nil, map[string]bool{}, map[string]bool{}, map[string]int64{}
	c.rows = map[string]*rows{}
	c.unsaved = map[string]*counting{}
	c.synced = make(chan struct{})
	c.mu.Unlock()
	select {
	case <-c.rewatch:
	default:
	}
	return c.lead(ctx)
}

func (c *Controller) lead(ctx context.Context) error {
	prevHolder, _, prevSeen, prevErr := c.cfg.Store.Leader(ctx, LeadershipName)
	epoch, err := c.cfg.Leader.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migration controller: leadership: %w", err)
	}
	now := c.cfg.Clock.Now()
	c.mu.Lock()
	c.epoch, c.adopted, c.touched = epoch, map[string]bool{}, now
	c.judgeFrom, c.recoveredAt = now.Add(c.cfg.Settle), now
	c.mu.Unlock()
	if err := c.cfg.Store.TouchEpoch(ctx, c.fence(), now); err != nil {
		if !errors.Is(err, fault.ErrFenced) {
			return fmt.Errorf("migration controller: %w", err)
		}
		// Another hub took the lead between the two writes (two hubs starting together). Not a
		// failure to start: the first pass is fenced, the run ends deposed and the hub steps
		// down, as it would a moment later.
		c.log.Info("migration controller: another hub took the lead at once; this one steps down on its first pass", "epoch", epoch)
		return nil
	}
	if prevErr != nil {
		c.log.Info("migration controller leading", "epoch", epoch)
		return nil
	}
	// The hub records its own up-time, so a restart can tell how long no controller ran.
	away := now.Sub(prevSeen).Round(time.Second)
	msg := fmt.Sprintf("migration controller resumes after %s without one (last seen: %s at %s)", away, prevHolder, prevSeen.UTC().Format(time.RFC3339))
	c.log.Info(msg, "epoch", epoch)
	extra, _ := json.Marshal(map[string]any{"away_seconds": int64(away.Seconds()), "previous_holder": prevHolder, "epoch": epoch})
	c.publish(ctx, wire.NewEvent(wire.HubSource(c.cfg.HubID), wire.EventControllerResumed, wire.SeverityInfo, wire.EventData{Message: msg, Extra: extra}))
	return nil
}

func (c *Controller) publish(ctx context.Context, e wire.Event) { c.events.Send(ctx, e) }

// Nudge asks for a pass as soon as possible (after an operator action or an observation).
func (c *Controller) Nudge() { c.life.Nudge() }

// run is one run of the controller, until Stop or until it is deposed; watchObserved runs
// beside it.
func (c *Controller) run(ctx context.Context) error {
	c.mu.Lock()
	synced := c.synced
	c.mu.Unlock()
	// Decide nothing before the agents' last reports are in.
	select {
	case <-synced:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(c.cfg.Settle):
		c.log.Warn("migration controller: observed state not read within the settle time; going on")
	}
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	check := time.NewTicker(checkEvery)
	defer check.Stop()
	var lastErr string
	var loggedAt time.Time
	// The desired documents are written beside the passes, not inside them: a pass that has
	// saved its decisions goes on to the next at once, whatever the puts of the last one still
	// take (a burst over a large fleet), and the writer takes the newest documents when it is
	// free (see desiredWriter).
	w := newDesiredWriter()
	wctx, stopWriter := context.WithCancel(ctx)
	wrote := make(chan struct{})
	go func() { defer close(wrote); w.run(wctx, c) }()
	defer func() { stopWriter(); <-wrote }()
	for {
		docs, err := c.decide(ctx)
		if docs != nil {
			w.offer(docs)
		}
		if err != nil {
			c.passes.WithLabelValues("error").Inc()
		} else {
			c.passes.WithLabelValues("ok").Inc()
		}
		switch {
		case err == nil:
			lastErr = ""
		case errors.Is(err, fault.ErrFenced):
			return fmt.Errorf("migration controller deposed: another hub holds a newer epoch: %w", err)
		case ctx.Err() != nil:
		case err.Error() != lastErr || time.Since(loggedAt) >= time.Minute:
			// The same trouble pass after pass is logged once a minute, not twice a second.
			c.log.Warn("migration controller pass failed", "err", err)
			lastErr, loggedAt = err.Error(), time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-c.life.Nudged():
		case <-check.C:
			c.resyncAgents()
			if _, err := c.Check(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("consistency check failed", "err", err)
			}
		}
	}
}

// checkEvery is how often the leader runs the consistency check on its own.
const checkEvery = time.Minute

func (c *Controller) fence() store.Fence {
	c.mu.Lock()
	defer c.mu.Unlock()
	return store.Fence{Name: LeadershipName, Epoch: c.epoch}
}
