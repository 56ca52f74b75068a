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
	"godwit.dev/godwit/internal/agent/outbox"
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

// Agent is one running agent.
type Agent struct {
	cfg *config.Agent
	log *slog.Logger

	dir    *datadir.Dir
	id     *Identity
	nc     *nats.Conn
	outbox *outbox.Outbox
	runner *runner.Runner
	full   atomic.Bool // outbox full: reported once per episode

	mu         sync.Mutex
	desiredRev uint64
}

// New returns an agent for a validated configuration.
func New(cfg *config.Agent, log *slog.Logger) *Agent { return &Agent{cfg: cfg, log: log} }

// Run enrolls if needed, connects and runs until ctx ends or the hub rejects the agent.
func (a *Agent) Run(ctx context.Context) error {
	var err error
	if a.dir, err = datadir.Open(a.cfg.StateDir, datadir.KindAgent); err != nil {
		return err
	}
	defer a.dir.Close()
	if err := a.ensureIdentity(ctx); err != nil {
		return err
	}
	// Events are journalled before they are sent, so they survive restarts and hub outages.
	a.outbox, err = outbox.Open(a.dir.Join(outboxFile), outbox.Limits{}, a.log.With("component", "outbox"), nil)
	if err != nil {
		return err
	}
	defer a.outbox.Close()
	workDir := a.dir.Join("work")
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return err
	}
	a.runner, err = runner.Open(runner.Config{
		AgentID: a.id.AgentID, JournalPath: a.dir.Join(journalFile), Logger: a.log.With("component", "runner"),
		Events:   a.outbox.Append,
		Observed: a.putObserved,
		System:   func() wire.SystemInfo { return systemInfo(a.dir.Path) },
		WorkDir:  workDir,
		CanStart: a.canStart,
	})
	if err != nil {
		return err
	}
	defer a.runner.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	checker := newRejectionCheck(a.id, a.log, func() { cancel(ErrRejected) })
	// The first connection is retried like any reconnect: an agent that boots while its hub is
	// down waits for it instead of exiting.
	a.nc, err = bus.ConnectAgent(a.id.NATSURLs, a.id.AgentID, a.id.NATSPassword,
		nats.RetryOnFailedConnect(true),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if isAuthError(err) {
				checker.trigger(ctx)
				return
			}
			a.log.Warn("nats", "err", err)
		}),
		nats.ConnectHandler(func(*nats.Conn) { a.log.Info("connected to hub") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				a.log.Warn("disconnected from hub", "err", err)
				if isAuthError(err) {
					checker.trigger(ctx)
				}
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { a.log.Info("reconnected to hub") }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if isAuthError(err) {
				checker.trigger(ctx)
			}
		}),
	)
	if err != nil {
		return fmt.Errorf("connect to hub nats %v: %w", a.id.NATSURLs, err)
	}
	defer a.nc.Close()
	a.log.Info("agent started", "agent", a.id.AgentID, "name", a.id.Name, "nats", strings.Join(a.id.NATSURLs, ","))
	a.event(ctx, wire.EventAgentStarted, wire.SeverityInfo, wire.EventData{Message: "agent " + a.id.Name + " started, version " + buildinfo.String()})
	sent := make(chan error, 1)
	go func() {
		sent <- a.outbox.Run(ctx, func(ctx context.Context, e outbox.Entry) error {
			_, _, err := bus.PublishEvent(ctx, a.nc, a.id.AgentID, e.ID, e.Payload)
			return err
		})
	}()
	ran := make(chan error, 1)
	go func() {
		if err := a.runner.Run(ctx); err != nil {
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
	nudge := make(chan struct{}, 1)
	sub, err := bus.WatchDesired(a.nc, a.id.AgentID, func([]byte, uint64) {
		select {
		case nudge <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("watch desired state: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	interval, err := time.ParseDuration(a.id.HeartbeatInterval)
	if err != nil || interval <= 0 {
		interval = 5 * time.Second
	}
	// Sweeps: answer the hub's consistency checks (internal/agent/sweepcheck). This is the sweep
	// feature's one hook into the agent: Start runs now, and the deferred stop ends running
	// checks when Run returns.
	defer sweepcheck.Start(ctx, sweepcheck.Config{Conn: a.nc, AgentID: a.id.AgentID, WorkDir: workDir, Events: a.outbox.Append,
		System: func() wire.SystemInfo { return systemInfo(a.dir.Path) }, Logger: a.log.With("component", "sweepcheck"), Resync: interval})()
	a.loop(ctx, interval, nudge)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	a.log.Info("agent stopped")
	return nil
}

func (a *Agent) ensureIdentity(ctx context.Context) error {
	id, err := loadIdentity(a.dir)
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
	id, err = enroll(ctx, a.cfg.Hub, wire.EnrollRequest{
		Token: a.cfg.EnrollToken, Name: name, Labels: labels, Version: buildinfo.String(), System: systemInfo(a.dir.Path),
	})
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

// event records an event in the outbox; the sender delivers it when the hub is reachable.
func (a *Agent) event(ctx context.Context, typ, severity string, data wire.EventData) {
	data.AgentID = a.id.AgentID
	if data.System == nil {
		si := systemInfo(a.dir.Path)
		data.System = &si
	}
	if err := a.outbox.Append(ctx, wire.NewEvent(wire.AgentSource(a.id.AgentID), typ, severity, data)); err != nil {
		a.log.Error("could not record event", "type", typ, "err", err)
	}
}

// loop heartbeats every interval and, at the same pace, re-reads the desired state so a missed
// watch message (during a disconnect) is caught up: level-triggered, not edge-triggered.
func (a *Agent) loop(ctx context.Context, interval time.Duration, nudge <-chan struct{}) {
	var seq uint64
	t := time.NewTicker(interval)
	defer t.Stop()
	tick := func() {
		seq++
		a.heartbeat(ctx, seq)
		a.resync(ctx)
		a.runner.Resync(ctx)
	}
	tick()
	// A watch message can arrive a moment before its revision is readable: a read that finds
	// nothing newer is tried again shortly, rather than at the next heartbeat tick.
	var retry <-chan time.Time
	retries := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			tick()
		case <-nudge:
			retries = 0
			if !a.resync(ctx) {
				retry = time.After(100 * time.Millisecond)
			}
		case <-retry:
			retry = nil
			if retries++; !a.resync(ctx) && retries < 5 {
				retry = time.After(time.Duration(retries) * 200 * time.Millisecond)
			}
		}
	}
}

func (a *Agent) heartbeat(ctx context.Context, seq uint64) {
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := bus.PutHeartbeat(hctx, a.nc, a.id.AgentID, wire.Heartbeat{
		AgentID: a.id.AgentID, Version: buildinfo.String(), Seq: seq, SentAt: time.Now().UTC(), System: systemInfo(a.dir.Path),
	})
	if err != nil && ctx.Err() == nil && a.nc.IsConnected() {
		a.log.Warn("heartbeat failed", "err", err)
	}
}

// resync reads the desired state and reports whether it was newer than what the agent had.
func (a *Agent) resync(ctx context.Context) bool {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, rev, err := bus.GetDesired(gctx, a.nc, a.id.AgentID)
	if errors.Is(err, fault.ErrNotFound) {
		return false
	}
	if err != nil {
		if ctx.Err() == nil {
			a.log.Debug("read desired state", "err", err)
		}
		return false
	}
	return a.onDesired(v, rev)
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

// canStart is false while the outbox is full: no new work starts until the backlog drains, and
// the agent says so once with an agent.outbox_full event.
func (a *Agent) canStart() bool {
	if !a.outbox.Full() {
		a.full.Store(false)
		return true
	}
	if !a.full.Swap(true) {
		n, _ := a.outbox.Len()
		a.log.Warn("event outbox is full: not starting new work until it drains", "events", n)
		a.event(context.Background(), wire.EventAgentOutboxFull, wire.SeverityWarning, wire.EventData{
			Message: fmt.Sprintf("event outbox holds %d undelivered events: not starting new work until the hub receives them", n)})
	}
	return false
}
