package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/agent"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/state"
	"godwit.dev/godwit/internal/wire"
)

// requestTimeout bounds one request of a simulated agent, as the real agent's do.
const requestTimeout = 10 * time.Second

// fleetStats are counted by every simulated agent.
type fleetStats struct {
	heartbeats, heartbeatErrors     atomic.Int64
	desiredReads, desiredReadErrors atomic.Int64
	observedPuts, observedRetries   atomic.Int64
	events, eventRetries            atomic.Int64 // events acknowledged; publishes retried
	eventPublishes                  atomic.Int64 // messages that carried them (batches and single events)
	connectRetries                  atomic.Int64 // first connections that failed and were made again
	finished                        atomic.Int64 // assignments an agent finished and reported
	firstDesired, lastFinished      atomic.Int64 // unix nanoseconds

	// Latency of each successful request (retries included), as the agents saw it.
	putLatency, eventLatency latencies
	// When agents first read an assignment (since applied, unix nanoseconds), and how long each
	// took from then until it reported the assignment finished.
	applied            atomic.Int64
	gotWork, workTimes latencies
	// Watch messages whose read found no newer revision than the agent had.
	staleNudges atomic.Int64
}

// latencies collects request durations for percentiles.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// String is "p50 … p90 … p99 … max …" of what was collected.
func (l *latencies) String() string {
	l.mu.Lock()
	d := slices.Clone(l.d)
	l.mu.Unlock()
	if len(d) == 0 {
		return "none"
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	r := func(x time.Duration) time.Duration { return x.Round(100 * time.Microsecond) }
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s", r(at(0.5)), r(at(0.9)), r(at(0.99)), r(d[len(d)-1]))
}

// requests is how many requests the agents made so far that were answered: heartbeat and
// observed-state puts, desired-state reads and event publishes (a batch counts once).
func (s *fleetStats) requests() int64 {
	return s.heartbeats.Load() + s.desiredReads.Load() - s.desiredReadErrors.Load() + s.observedPuts.Load() + s.eventPublishes.Load()
}

func (s *fleetStats) noteFirstDesired(t time.Time) {
	s.firstDesired.CompareAndSwap(0, t.UnixNano())
}

func (s *fleetStats) noteFinished(t time.Time) {
	s.finished.Add(1)
	for {
		cur := s.lastFinished.Load()
		if t.UnixNano() <= cur || s.lastFinished.CompareAndSwap(cur, t.UnixNano()) {
			return
		}
	}
}

// simAgent speaks the agent protocol over NATS as a real agent does, with no journal and no
// commands: each step of an assignment "runs" at once and succeeds. It heartbeats and re-reads
// its desired state every interval, re-reads it on every watch message, reports each transition
// as observed state and publishes the events the runner would. As in the real agent, neither
// waits on the steps: the observed state goes out from its own goroutine, latest first (a
// transition made while a put is in flight is sent once that put is over, together with any
// later one, as the runner's publisher does), and the events from another, in order, what has
// queued meanwhile in one batch message, as the outbox sends them.
type simAgent struct {
	id       string
	nc       *nats.Conn
	interval time.Duration
	sys      wire.SystemInfo
	stats    *fleetStats

	nudge      chan struct{}
	seq        uint64
	rev        uint64
	epoch      int64
	desired    map[string]bool
	records    map[string]*wire.ObservedAssignment // migration → latest attempt
	lastPub    time.Time
	pubDirty   bool
	readFailed bool // the last read of the desired state failed

	bg     sync.WaitGroup // the observed-state publisher and the event sender, while they run
	outMu  sync.Mutex
	obsDoc []byte       // the observed state waiting to be put (nil: none)
	queue  []wire.Event // events waiting to be sent, oldest first
	obsRun bool         // the publisher runs
	evRun  bool         // the sender runs
}

func newSimAgent(id string, nc *nats.Conn, interval time.Duration, stats *fleetStats) *simAgent {
	return &simAgent{id: id, nc: nc, interval: interval, stats: stats, nudge: make(chan struct{}, 1),
		desired: map[string]bool{}, records: map[string]*wire.ObservedAssignment{},
		sys: wire.SystemInfo{OS: "linux", Arch: "amd64", Kernel: "6.1.0-18-amd64", Hostname: "sim-" + id[len(id)-12:],
			AgentVersion: "bench", FreeDiskBytes: 48_318_382_080}}
}

// watch subscribes to the agent's desired-state key; a message is only a nudge to re-read it.
func (a *simAgent) watch() (*nats.Subscription, error) {
	return bus.WatchDesired(a.nc, a.id, func([]byte, uint64) {
		select {
		case a.nudge <- struct{}{}:
		default:
		}
	})
}

// run heartbeats and follows the desired state until ctx ends. The first tick comes at a random
// point of the first interval, so that the fleet does not beat in step.
//
// The agent.started event waits for that first tick too: a fleet that starts (or reconnects)
// together would otherwise publish all its agent.started events in the same instant, more than
// the events stream takes in at once, and every publish the server drops comes back as a retry.
func (a *simAgent) run(ctx context.Context) {
	defer a.bg.Wait()
	first := time.NewTimer(rand.N(a.interval))
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	}
	a.event(ctx, wire.EventAgentStarted, wire.EventData{Message: "agent " + a.id + " started, version bench"})
	t := time.NewTicker(a.interval)
	defer t.Stop()
	// As in the agent's loop: a watch message whose read finds nothing newer yet is read again
	// shortly (100 ms, then 200 ms more each time, five reads at most), not at the next tick.
	var retry <-chan time.Time
	retries := 0
	for ticks := 0; ; ticks++ {
		a.heartbeat(ctx)
		// As the agent does (desiredPace): the desired state is read every
		// agent.DesiredReadEvery-th interval, or on the one after a read that failed, besides the
		// reads on watch messages.
		if ticks%agent.DesiredReadEvery == 0 || a.readFailed {
			a.resync(ctx, false)
		}
		if a.pubDirty || (len(a.records) > 0 && time.Since(a.lastPub) >= time.Minute) {
			a.publishObserved(ctx)
		}
		for tick := false; !tick; {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				tick = true
			case <-a.nudge:
				retries = 0
				if !a.resync(ctx, true) {
					retry = time.After(100 * time.Millisecond)
				}
			case <-retry:
				retry = nil
				if retries++; !a.resync(ctx, false) && retries < 5 {
					retry = time.After(time.Duration(retries) * 200 * time.Millisecond)
				}
			}
		}
	}
}

func (a *simAgent) heartbeat(ctx context.Context) {
	a.seq++
	hctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	_, err := bus.PutHeartbeat(hctx, a.nc, a.id, wire.Heartbeat{AgentID: a.id, Version: "bench", Seq: a.seq,
		SentAt: time.Now().UTC(), System: a.sys})
	if err != nil && ctx.Err() == nil {
		a.stats.heartbeatErrors.Add(1)
		return
	}
	a.stats.heartbeats.Add(1)
}

// resync reads the desired state (a direct get) and acts on it when it is new; it reports
// whether it was. A read after a watch message that still finds the previous revision (the
// stream had not stored the put yet) is counted.
func (a *simAgent) resync(ctx context.Context, nudged bool) bool {
	gctx, cancel := context.WithTimeout(ctx, requestTimeout)
	v, rev, err := bus.GetDesired(gctx, a.nc, a.id)
	cancel()
	a.stats.desiredReads.Add(1)
	if errors.Is(err, fault.ErrNotFound) || (err == nil && rev <= a.rev) {
		if nudged {
			a.stats.staleNudges.Add(1)
		}
		return false
	}
	a.readFailed = err != nil && !errors.Is(err, fault.ErrNotFound)
	if err != nil {
		if ctx.Err() == nil {
			a.stats.desiredReadErrors.Add(1)
		}
		return false
	}
	a.rev = rev
	var d wire.DesiredState
	if json.Unmarshal(v, &d) != nil || d.Epoch < a.epoch {
		return true // a real agent keeps acting on the previous document
	}
	a.epoch = d.Epoch
	if len(d.Assignments) > 0 {
		a.stats.noteFirstDesired(time.Now())
	}
	a.follow(ctx, d)
	return true
}

// follow acts on a desired-state document as the runner does: a new attempt runs, a higher
// generation of a finished attempt is recorded, duplicates and stale requests are ignored.
func (a *simAgent) follow(ctx context.Context, d wire.DesiredState) {
	clear(a.desired)
	for _, want := range d.Assignments {
		a.desired[want.Migration] = true
	}
	a.pubDirty = true // the set of migrations reported may have changed
	for _, want := range d.Assignments {
		rec := a.records[want.Migration]
		switch {
		case rec == nil || want.Attempt > rec.Attempt:
			rec = &wire.ObservedAssignment{Migration: want.Migration, Attempt: want.Attempt, Generation: want.Generation,
				Action: want.Action, Step: 0, Applied: []int{}}
			a.records[want.Migration] = rec
			switch want.Action {
			case wire.ActionApply:
				start := time.Now()
				if at := a.stats.applied.Load(); at != 0 {
					a.stats.gotWork.add(start.Sub(time.Unix(0, at)))
				}
				a.apply(ctx, rec, want)
				a.stats.workTimes.add(time.Since(start))
			case wire.ActionRollback:
				a.finish(ctx, rec, "rolled_back", wire.EventRollbackSucceeded, want, "rolled back: nothing to undo")
			default:
				rec.Error = "cancelled by operator"
				a.finish(ctx, rec, "failed", wire.EventMigrationStepCancelled, want, "cancelled before it started")
			}
		case want.Attempt < rec.Attempt || want.Generation <= rec.Generation:
			// a duplicate or a stale request: the observed state already answers it
		case want.Action == wire.ActionRollback:
			rec.Generation, rec.Action = want.Generation, want.Action
			a.finish(ctx, rec, "rolled_back", wire.EventRollbackSucceeded, want, "rolled back (no-op steps)")
		default:
			rec.Generation, rec.Action = want.Generation, want.Action
		}
	}
	if a.pubDirty {
		a.publishObserved(ctx)
	}
}

// apply "runs" every step: detect (needed), run, verify, each reported as the runner reports it.
func (a *simAgent) apply(ctx context.Context, rec *wire.ObservedAssignment, want wire.DesiredAssignment) {
	for i, s := range want.Steps {
		rec.Step, rec.StepName = i, s.Name
		if s.Detect != "" {
			a.transition(ctx, rec, "detecting")
			a.stepEvent(ctx, rec, want, wire.EventDetectionSucceeded, "detect", i, fmt.Sprintf("step %d (%s) is needed", i, s.Name))
		}
		rec.Applied = append(rec.Applied, i)
		a.transition(ctx, rec, "applying")
		a.stepEvent(ctx, rec, want, wire.EventMigrationStepStarted, "run", i, fmt.Sprintf("run command of step %d (%s) started", i, s.Name))
		if s.Verify != "" {
			a.transition(ctx, rec, "verifying")
			a.stepEvent(ctx, rec, want, wire.EventVerificationSucceeded, "verify", i, fmt.Sprintf("step %d (%s) verified", i, s.Name))
		}
	}
	a.finish(ctx, rec, "succeeded", wire.EventExecutionSucceeded, want,
		fmt.Sprintf("applied %d of %d steps", len(rec.Applied), len(want.Steps)))
}

func (a *simAgent) finish(ctx context.Context, rec *wire.ObservedAssignment, state, typ string, want wire.DesiredAssignment, msg string) {
	a.transition(ctx, rec, state)
	if ctx.Err() == nil {
		a.stats.noteFinished(time.Now())
	}
	a.stepEvent(ctx, rec, want, typ, "", -1, msg)
}

// transition records a new state and publishes the observed state.
func (a *simAgent) transition(ctx context.Context, rec *wire.ObservedAssignment, state string) {
	rec.State, rec.UpdatedAt = state, time.Now().UTC()
	a.publishObserved(ctx)
}

// publishObserved hands the observed state to the publisher: the latest attempt of every
// migration that is desired or unfinished. The publisher puts the newest document it has, each
// retried until it succeeds or ctx ends.
func (a *simAgent) publishObserved(ctx context.Context) {
	st := wire.ObservedState{AgentID: a.id, Assignments: []wire.ObservedAssignment{}, UpdatedAt: time.Now().UTC()}
	for m, rec := range a.records {
		if a.desired[m] || !state.AssignmentState(rec.State).Final() {
			st.Assignments = append(st.Assignments, *rec)
		}
	}
	slices.SortFunc(st.Assignments, func(x, y wire.ObservedAssignment) int { return strings.Compare(x.Migration, y.Migration) })
	b, err := json.Marshal(st)
	if err != nil {
		return
	}
	a.pubDirty, a.lastPub = false, time.Now()
	a.outMu.Lock()
	a.obsDoc = b
	start := !a.obsRun
	a.obsRun = true
	a.outMu.Unlock()
	if start {
		a.bg.Go(func() { a.publisher(ctx) })
	}
}

// publisher puts the newest observed document until none is waiting.
func (a *simAgent) publisher(ctx context.Context) {
	for {
		a.outMu.Lock()
		b := a.obsDoc
		a.obsDoc = nil
		if b == nil || ctx.Err() != nil {
			a.obsRun = false
			a.outMu.Unlock()
			return
		}
		a.outMu.Unlock()
		t := time.Now()
		if retry(ctx, &a.stats.observedRetries, func(ctx context.Context) error {
			_, err := bus.PutObserved(ctx, a.nc, a.id, b)
			return err
		}) == nil {
			a.stats.putLatency.add(time.Since(t))
			a.stats.observedPuts.Add(1)
		}
	}
}

func (a *simAgent) stepEvent(ctx context.Context, rec *wire.ObservedAssignment, want wire.DesiredAssignment, typ, phase string, step int, msg string) {
	extra := map[string]any{"generation": rec.Generation, "action": rec.Action, "state": rec.State}
	data := wire.EventData{Migration: rec.Migration, Attempt: rec.Attempt, Message: msg, FromVersion: want.FromVersion,
		ToVersion: want.ToVersion}
	subject := "migration/" + rec.Migration
	if step >= 0 {
		data.Step = want.Steps[step].Name
		extra["step_index"], extra["phase"] = step, phase
		subject += "/step/" + strconv.Itoa(step)
		code := 0
		data.ExitCode, data.DurationMS = &code, 3
	} else {
		extra["applied"] = rec.Applied
	}
	data.Extra, _ = json.Marshal(extra)
	a.publish(ctx, typ, subject, data)
}

func (a *simAgent) event(ctx context.Context, typ string, data wire.EventData) {
	a.publish(ctx, typ, "", data)
}

// publish queues one event for the sender.
func (a *simAgent) publish(ctx context.Context, typ, subject string, data wire.EventData) {
	data.AgentID, data.System = a.id, &a.sys
	e := wire.Event{SpecVersion: "1.0", ID: uuid.Must(uuid.NewV7()).String(), Source: wire.AgentSource(a.id), Type: typ,
		Time: time.Now().UTC(), Subject: subject, Severity: wire.SeverityInfo, Data: data}
	a.outMu.Lock()
	a.queue = append(a.queue, e)
	start := !a.evRun
	a.evRun = true
	a.outMu.Unlock()
	if start {
		a.bg.Go(func() { a.sender(ctx) })
	}
}

// sender sends the queued events in order, as the outbox does: what has queued (up to
// wire.MaxBatchEvents) in one publish (bus.SendEvents: a lone event as a single-event message,
// several as one batch), waiting for the stream's acknowledgement and retried until it is
// delivered or ctx ends.
func (a *simAgent) sender(ctx context.Context) {
	for {
		a.outMu.Lock()
		if len(a.queue) == 0 || ctx.Err() != nil {
			a.evRun = false
			a.outMu.Unlock()
			return
		}
		batch := a.queue[:min(len(a.queue), wire.MaxBatchEvents)]
		a.queue = a.queue[len(batch):]
		a.outMu.Unlock()
		ids := make([]string, 0, len(batch))
		payloads := make([][]byte, 0, len(batch))
		for _, e := range batch {
			b, err := json.Marshal(e)
			if err != nil {
				continue
			}
			ids, payloads = append(ids, e.ID), append(payloads, b)
		}
		if len(ids) == 0 {
			continue
		}
		t := time.Now()
		var sent int
		if retry(ctx, &a.stats.eventRetries, func(ctx context.Context) error {
			var err error
			sent, err = bus.SendEvents(ctx, a.nc, a.id, ids, payloads)
			return err
		}) == nil {
			a.stats.eventLatency.add(time.Since(t))
			a.stats.events.Add(int64(len(ids)))
			a.stats.eventPublishes.Add(int64(sent))
		}
	}
}
