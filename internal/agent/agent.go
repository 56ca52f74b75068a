// Package agent is the runtime that runs on every node: it enrolls once, then heartbeats and
// follows its desired state over NATS with its own, narrowly-permitted credentials.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"godwit.dev/godwit/internal/agent/health"
	"godwit.dev/godwit/internal/agent/outbox"
	"godwit.dev/godwit/internal/agent/policy"
	"godwit.dev/godwit/internal/agent/runner"
	"godwit.dev/godwit/internal/agent/sweepcheck"
	"godwit.dev/godwit/internal/buildinfo"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/datadir"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// ErrRejected means the hub's NATS server refused this agent's credentials: it was revoked.
var ErrRejected = errors.New("the hub rejected this agent's credentials (revoked?)")

// ErrNeedsOperator marks an error Run returns for what only an operator can fix: a read-only
// or unreadable state directory, a damaged journal or outbox. Restarting does not help; the
// command line exits with its own code for it. A full disk is not one: the agent waits it out.
var ErrNeedsOperator = health.ErrNeedsOperator

// Agent is one running agent.
type Agent struct {
	cfg    *config.Agent
	log    *slog.Logger
	policy *policy.Policy // nil: no --policy; the agent runs whatever the hub asks

	dir     *datadir.Dir
	id      *Identity
	trust   *trust
	nc      *nats.Conn
	full    atomic.Bool       // outbox full: reported once per episode
	storage *health.Condition // the journal and outbox cannot be opened yet

	mu         sync.Mutex
	desiredRev uint64
	outbox     *outbox.Outbox // nil until opened
	runner     *runner.Runner // nil until opened
	unsent     []wire.Event   // the agent's own events the outbox could not take yet
}

// maxUnsent bounds the agent's own events kept in memory while the outbox cannot take them.
const maxUnsent = 256

// New returns an agent for a validated configuration.
func New(cfg *config.Agent, log *slog.Logger) *Agent { return &Agent{cfg: cfg, log: log} }

// Run enrolls if needed, connects and runs until ctx ends or the hub rejects the agent. An
// error that only an operator can fix wraps ErrNeedsOperator.
func (a *Agent) Run(ctx context.Context) error {
	err := a.run(ctx)
	if err != nil && health.Classify(err) == health.Operator && !errors.Is(err, ErrNeedsOperator) {
		err = health.NeedsOperator(fmt.Errorf("the state directory %s needs an operator (%s; restarting the agent does not help): %w",
			a.cfg.StateDir, health.Summary(err), err))
	}
	return err
}

func (a *Agent) run(ctx context.Context) error {
	var err error
	// The policy first: an agent that cannot keep it (a file it cannot read, a user it cannot
	// switch to) must not enroll or take work.
	if a.cfg.Policy != "" {
		if a.policy, err = policy.Load(a.cfg.Policy); err != nil {
			return err
		}
		a.log.Info("agent policy loaded: every command is checked against it", "policy", a.policy.Name(), "file", a.cfg.Policy,
			"digest", a.policy.Digest(), "run_as", a.policy.RunAs.User, "trusted_keys", len(a.policy.TrustedKeys),
			"allow_lists", a.policy.Commands != nil, "max_timeout", a.policy.MaxTimeout)
	}
	if a.dir, err = datadir.Open(a.cfg.StateDir, datadir.KindAgent); err != nil {
		return err
	}
	defer a.dir.Close()
	if a.dir.Tightened != 0 {
		a.log.Warn("state dir was open to other users; tightened to 0700", "state_dir", a.dir.Path,
			"was", fmt.Sprintf("%#o", a.dir.Tightened))
	}
	if err := a.ensureIdentity(ctx); err != nil {
		return err
	}
	if a.trust, err = loadTrust(a.dir, a.cfg); err != nil {
		return err
	}
	if err := a.trust.checkHubURL(a.id.Hub); err != nil {
		return err
	}
	a.storage = health.NewCondition("the state directory "+a.dir.Path, a.log, nil)
	// The work directory exists before the first heartbeat: whoever sees the agent online may put
	// files in it. On a full disk it is made with the journals, below.
	if err := os.MkdirAll(a.dir.Join("work"), 0o700); err != nil && health.Classify(err) != health.Wait {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	checker := newRejectionCheck(a.id, a.log, a.trust.httpClient(), func() { cancel(ErrRejected) })
	// nudge asks the loop to read the desired state now: a watch message, a reconnect (puts made
	// while the agent was away sent it no message), or a subscription that dropped messages.
	nudge := make(chan struct{}, 1)
	poke := func() {
		select {
		case nudge <- struct{}{}:
		default:
		}
	}
	// The first connection is retried like any reconnect: an agent that boots while its hub is
	// down waits for it instead of exiting.
	natsOpts := append(a.trust.natsOptions(a.id.NATSURLs),
		nats.RetryOnFailedConnect(true),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				poke() // a dropped message may have been a watch message
			}
			if isAuthError(err) {
				checker.trigger(ctx)
				return
			}
			a.log.Warn("nats", "err", err)
		}),
		nats.ConnectHandler(func(*nats.Conn) {
			a.log.Info("connected to hub")
			poke() // a first connection made late (the hub was down at start)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				a.log.Warn("disconnected from hub", "err", err)
				if isAuthError(err) {
					checker.trigger(ctx)
				}
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			a.log.Info("reconnected to hub")
			poke()
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			switch {
			case isAuthError(err):
				checker.trigger(ctx)
			case isCertError(err):
				// Never clears by itself: the server is not the hub this agent enrolled with,
				// or its certificate changed CA.
				a.log.Error("refusing the NATS server's certificate", "err", err)
			default:
				a.log.Debug("cannot connect to hub nats", "err", err)
			}
		}),
	)
	a.nc, err = bus.ConnectAgent(a.id.NATSURLs, a.id.AgentID, a.id.NATSPassword, natsOpts...)
	if err != nil {
		return fmt.Errorf("connect to hub nats %v: %w", a.id.NATSURLs, err)
	}
	defer a.nc.Close()
	interval, err := time.ParseDuration(a.id.HeartbeatInterval)
	if err != nil || interval <= 0 {
		interval = 5 * time.Second
	}
	// Heartbeats go out from now on, whatever the state of the journal and outbox: an agent
	// whose disk is full is degraded, not gone, and says why in every heartbeat.
	beats := make(chan struct{})
	go func() { defer close(beats); a.heartbeats(ctx, interval) }()
	defer func() { cancel(nil); <-beats }()

	defer func() {
		ob, rn := a.stores()
		if rn != nil {
			_ = rn.Close()
		}
		if ob != nil {
			_ = ob.Close()
		}
	}()
	if err := a.openStores(ctx); err != nil {
		if ctx.Err() != nil {
			return a.stopped(ctx)
		}
		return err
	}
	ob, rn := a.stores()
	workDir := a.dir.Join("work")
	a.log.Info("agent started", "agent", a.id.AgentID, "name", a.id.Name, "nats", strings.Join(a.id.NATSURLs, ","))
	a.event(ctx, wire.EventAgentStarted, wire.SeverityInfo, wire.EventData{Message: "agent " + a.id.Name + " started, version " + buildinfo.String()})
	sent := make(chan error, 1)
	go func() {
		sent <- ob.Run(ctx, func(ctx context.Context, entries []outbox.Entry) error {
			ids := make([]string, len(entries))
			payloads := make([][]byte, len(entries))
			for n, e := range entries {
				ids[n], payloads[n] = e.ID, e.Payload
			}
			_, err := bus.SendEvents(ctx, a.nc, a.id.AgentID, ids, payloads)
			return err
		})
	}()
	ran := make(chan error, 1)
	go func() {
		if err := rn.Run(ctx); err != nil {
			// The journal could not be written: no command may start without it.
			cancel(fmt.Errorf("migration runner: %w", err))
			ran <- err
			return
		}
		ran <- nil
	}()
	defer func() { cancel(nil); <-sent; <-ran }()

	// A watch message is only a nudge: the value is re-read with a direct get, because a live
	// KV message may be a write JetStream then rejected.
	sub, err := bus.WatchDesired(a.nc, a.id.AgentID, func([]byte, uint64) { poke() })
	if err != nil {
		return fmt.Errorf("watch desired state: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// Sweeps: answer the hub's consistency checks (internal/agent/sweepcheck). This is the sweep
	// feature's one hook into the agent: Start runs now, and the deferred stop ends running
	// checks when Run returns.
	defer sweepcheck.Start(ctx, sweepcheck.Config{Conn: a.nc, AgentID: a.id.AgentID, WorkDir: workDir, Events: a.record,
		System: func() wire.SystemInfo { return a.system() }, Logger: a.log.With("component", "sweepcheck"), Resync: interval * DesiredReadEvery,
		Policy: a.policy})()
	// Failover groups: run the member runtime of the agent's group (internal/agent/failover).
	fo := make(chan struct{})
	go func() { defer close(fo); a.failover(ctx, interval) }()
	a.loop(ctx, interval, nudge)
	<-fo
	return a.stopped(ctx)
}

// stopped is Run's result once ctx has ended: the cause, or nil for a plain stop.
func (a *Agent) stopped(ctx context.Context) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	a.log.Info("agent stopped")
	return nil
}

// openStores opens the outbox and the runner journal (and the work directory). A failure the
// agent waits out — a full disk, an I/O error — is retried with back-off, the agent degraded
// meanwhile (its heartbeats say why); anything else is returned.
func (a *Agent) openStores(ctx context.Context) error {
	for n := 1; ; n++ {
		err := a.tryOpenStores()
		if err == nil {
			a.storage.OK()
			return nil
		}
		if health.Classify(err) != health.Wait {
			return err
		}
		a.storage.Failed(err)
		t := time.NewTimer(health.Backoff(n))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (a *Agent) tryOpenStores() error {
	// The outbox and the journal are SQLite files holding command output and events: this user's
	// only, whatever the umask or an older version left.
	for _, f := range []string{outboxFile, journalFile} {
		if err := datadir.PrivateSQLite(a.dir.Join(f)); err != nil {
			return err
		}
	}
	ob, rn := a.stores()
	if ob == nil {
		// Events are journalled before they are sent, so they survive restarts and hub outages.
		o, err := outbox.Open(a.dir.Join(outboxFile), outbox.Limits{}, a.log.With("component", "outbox"), nil)
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.outbox, ob = o, o
		a.mu.Unlock()
	}
	if rn != nil {
		return nil
	}
	workDir := a.dir.Join("work")
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return err
	}
	r, err := runner.Open(runner.Config{
		AgentID: a.id.AgentID, JournalPath: a.dir.Join(journalFile), Logger: a.log.With("component", "runner"),
		Events:   ob.Append,
		Observed: a.putObserved,
		System:   func() wire.SystemInfo { return a.system() },
		WorkDir:  workDir,
		CanStart: a.canStart,
		Policy:   a.policy,
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.runner = r
	a.mu.Unlock()
	return nil
}

// stores returns the outbox and the runner, nil until opened.
func (a *Agent) stores() (*outbox.Outbox, *runner.Runner) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.outbox, a.runner
}

// degraded is "" while the agent can take new work, and otherwise says why not: its storage
// fails (with the free space of the state directory's file system) or its outbox is full.
func (a *Agent) degraded() string {
	var parts []string
	if a.storage != nil {
		if r := a.storage.Reason(); r != "" {
			parts = append(parts, r)
		}
	}
	ob, rn := a.stores()
	if rn != nil {
		if r := rn.Degraded(); r != "" {
			parts = append(parts, r)
		}
	}
	if ob != nil {
		if r := ob.Degraded(); r != "" {
			parts = append(parts, r)
		}
	}
	if len(parts) > 0 {
		parts = append(parts, fmt.Sprintf("%d bytes free in %s", a.system().FreeDiskBytes, a.dir.Path))
	}
	if ob != nil && ob.Full() {
		parts = append(parts, "the event outbox is full: no new work until the hub has received its backlog")
	}
	return strings.Join(parts, "; ")
}

func (a *Agent) ensureIdentity(ctx context.Context) error {
	id, err := loadIdentity(a.dir, a.log)
	if err != nil {
		return err
	}
	if id != nil {
		a.id = id
		return nil
	}
	if err := a.cfg.NeedEnrollment(); err != nil {
		return err
	}
	labels, _ := a.cfg.LabelMap()
	name := a.cfg.Name
	if name == "" {
		name, _ = os.Hostname()
	}
	tr, err := loadTrust(a.dir, a.cfg)
	if err != nil {
		return err
	}
	id, err = enroll(ctx, a.cfg, wire.EnrollRequest{
		Name: name, Labels: labels, Version: buildinfo.String(), System: a.system(),
	}, a.dir, tr)
	if err != nil {
		return err
	}
	if err := saveIdentity(a.dir, id); err != nil {
		return fmt.Errorf("save identity (enrolled as %s): %w", id.AgentID, err)
	}
	a.id = id
	a.log.Info("enrolled", "agent", id.AgentID, "name", id.Name)
	return nil
}

// event records an event of the agent itself in the outbox; the sender delivers it when the hub
// is reachable.
func (a *Agent) event(ctx context.Context, typ, severity string, data wire.EventData) {
	data.AgentID = a.id.AgentID
	if data.System == nil {
		si := a.system()
		data.System = &si
	}
	_ = a.record(ctx, wire.NewEvent(wire.AgentSource(a.id.AgentID), typ, severity, data))
}

// record appends e to the outbox. An event the outbox cannot take because its journal fails (a
// full disk) is kept in memory, up to maxUnsent, and offered again on every tick.
func (a *Agent) record(ctx context.Context, e wire.Event) error {
	ob, _ := a.stores()
	err := ob.Append(ctx, e)
	if err == nil || health.Classify(err) != health.Wait {
		if err != nil {
			a.log.Error("could not record event", "type", e.Type, "err", err)
		}
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.unsent) >= maxUnsent {
		a.log.Error("could not record event: the outbox fails and too many events wait already", "type", e.Type,
			"event_id", e.ID, "waiting", len(a.unsent), "err", err)
		return err
	}
	a.unsent = append(a.unsent, e)
	return nil
}

// retryUnsent offers the outbox the agent's own events it could not take before. One it refuses
// for good (an info event past its hard limit) is logged and given up, as in record.
func (a *Agent) retryUnsent(ctx context.Context) {
	a.mu.Lock()
	events := a.unsent
	a.unsent = nil
	a.mu.Unlock()
	for i, e := range events {
		err := a.outbox.Append(ctx, e)
		switch {
		case err == nil:
		case health.Classify(err) == health.Wait:
			a.mu.Lock()
			a.unsent = append(events[i:], a.unsent...)
			a.mu.Unlock()
			return
		default:
			a.log.Error("could not record event", "type", e.Type, "event_id", e.ID, "err", err)
		}
	}
}

// heartbeats puts a heartbeat every interval until ctx ends.
func (a *Agent) heartbeats(ctx context.Context, interval time.Duration) {
	var seq uint64
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		seq++
		a.heartbeat(ctx, seq)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DesiredReadEvery is how many heartbeat intervals apart the loop reads the desired state when
// nothing nudged it: the safety net under the watch, for a message lost where the agent could
// not see it (a route between NATS servers cut while its server kept the agent's connection).
// Puts are otherwise seen at once (watch message), and on every (re)connect.
const DesiredReadEvery = 6

// loop reads the desired state as desiredPace says, and looks at the runner and the unsent
// events on every heartbeat interval.
func (a *Agent) loop(ctx context.Context, interval time.Duration, nudge <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	desiredPace(ctx, t.C, nudge, DesiredReadEvery, func() (bool, bool) { return a.resync(ctx) }, func() {
		a.retryUnsent(ctx)
		a.runner.Resync(ctx)
	}, time.After)
}

// desiredPace reads the desired state (read) when nudged (a watch message, a reconnect, a
// dropped message), on every every-th tick, and on the tick after a read that failed — level-
// triggered, not edge-triggered, so a missed watch message is caught up. A watch message can
// arrive a moment before its revision is readable: a nudged read that finds nothing newer is
// tried again shortly (after 100 ms, then 200 ms more each time, five reads), rather than at
// the next tick. onTick runs on every tick, and once at the start with the first read.
func desiredPace(ctx context.Context, tick <-chan time.Time, nudge <-chan struct{}, every int,
	read func() (newer, failed bool), onTick func(), after func(time.Duration) <-chan time.Time) {
	ticks, failed := 0, false
	onInterval := func() {
		if ticks%every == 0 || failed {
			_, failed = read()
		}
		ticks++
		onTick()
	}
	onInterval()
	var retry <-chan time.Time
	retries := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			onInterval()
		case <-nudge:
			retries = 0
			var newer bool
			if newer, failed = read(); !newer {
				retry = after(100 * time.Millisecond)
			}
		case <-retry:
			retry = nil
			var newer bool
			if newer, failed = read(); !newer && retries < 4 {
				retries++
				retry = after(time.Duration(retries) * 200 * time.Millisecond)
			}
		}
	}
}

func (a *Agent) heartbeat(ctx context.Context, seq uint64) {
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := bus.PutHeartbeat(hctx, a.nc, a.id.AgentID, wire.Heartbeat{
		AgentID: a.id.AgentID, Version: buildinfo.String(), Seq: seq, SentAt: time.Now().UTC(), System: a.system(),
		Degraded: a.degraded(),
	})
	if err != nil && ctx.Err() == nil && a.nc.IsConnected() {
		a.log.Warn("heartbeat failed", "err", err)
	}
}

// resync reads the desired state and reports whether it was newer than what the agent had, and
// whether the read failed (no key yet is not a failure).
func (a *Agent) resync(ctx context.Context) (newer, failed bool) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, rev, err := bus.GetDesired(gctx, a.nc, a.id.AgentID)
	if errors.Is(err, fault.ErrNotFound) {
		return false, false
	}
	if err != nil {
		if ctx.Err() == nil {
			a.log.Debug("read desired state", "err", err)
		}
		return false, true
	}
	return a.onDesired(v, rev), false
}

// onDesired hands the newest desired state to the runner. A value that does not decode is
// logged and ignored: the runner keeps acting on the last good document.
func (a *Agent) onDesired(v []byte, rev uint64) bool {
	a.mu.Lock()
	if rev != 0 && rev <= a.desiredRev {
		a.mu.Unlock()
		return false
	}
	if rev != 0 {
		a.desiredRev = rev
	}
	a.mu.Unlock()
	var d wire.DesiredState
	if err := json.Unmarshal(v, &d); err != nil {
		a.log.Error("desired state does not decode; keeping the previous one", "revision", rev, "err", err)
		return true
	}
	a.runner.Desired(d)
	return true
}

func (a *Agent) putObserved(ctx context.Context, st wire.ObservedState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = bus.PutObserved(ctx, a.nc, a.id.AgentID, b)
	return err
}

// canStart is false while the agent is degraded: its storage fails (no new work starts until a
// write succeeds again), or its outbox is full (no new work starts until the backlog drains;
// the agent says so once with an agent.outbox_full event).
func (a *Agent) canStart() bool {
	if !a.outbox.Full() {
		a.full.Store(false)
		return a.degraded() == ""
	}
	if !a.full.Swap(true) {
		n, _ := a.outbox.Len()
		a.log.Warn("event outbox is full: not starting new work until it drains", "events", n)
		a.event(context.Background(), wire.EventAgentOutboxFull, wire.SeverityWarning, wire.EventData{
			Message: fmt.Sprintf("event outbox holds %d undelivered events: not starting new work until the hub receives them", n)})
	}
	return false
}
