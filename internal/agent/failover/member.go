package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"godwit.dev/godwit/internal/agent/execute"
	"godwit.dev/godwit/internal/agent/failover/machine"
	"godwit.dev/godwit/internal/agent/policy"
	spec "godwit.dev/godwit/internal/failover"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/lease"
	"godwit.dev/godwit/internal/wire"
)

// hookGrace is how long a cancelled or timed-out hook gets between SIGTERM and SIGKILL.
const hookGrace = 500 * time.Millisecond

// maxRecordBytes bounds a group record this member reads; a larger one is corrupt.
const maxRecordBytes = 4096

// Config is one membership.
type Config struct {
	Spec spec.Canonical
	Self string // the member's agent id
	// KV is the group's bucket (BucketConfig).
	KV lease.KV
	// Report receives every transition and hook result; nil drops them.
	Report func(wire.FailoverTransition)
	Logger *slog.Logger
	Clock  lease.Clock // nil: the monotonic clock
	// Env is added to every hook's environment.
	Env []string
	// Registry gets the membership's metrics (godwit_failover_*); nil keeps them unexported.
	Registry prometheus.Registerer
	// Policy is the agent's policy (docs/security.md, "Agent policy"): New refuses a group
	// whose hooks it refuses, every hook is checked again right before it runs, and hooks run
	// as its runAs with its environment. nil: no policy.
	Policy *policy.Policy
}

// HookRefused is a hook of a group the agent's policy refuses; it unwraps to the
// *policy.Refusal, which names the rule.
type HookRefused struct {
	Group, Hook string
	Refusal     *policy.Refusal
}

func (e *HookRefused) Error() string {
	return fmt.Sprintf("failover group %s: hook %s: %v", e.Group, e.Hook, e.Refusal)
}

func (e *HookRefused) Unwrap() error { return e.Refusal }

// CheckHooks returns nil when the policy allows every hook of s, or the *HookRefused of the
// first it refuses (in policy.HookKinds order).
func CheckHooks(p *policy.Policy, s spec.Canonical) error {
	for _, name := range policy.HookKinds {
		h, ok := s.Hooks[name]
		if !ok {
			continue
		}
		err := p.Check(policy.Command{Kind: name, Script: h.Command, Timeout: time.Duration(h.TimeoutMS) * time.Millisecond})
		var ref *policy.Refusal
		if errors.As(err, &ref) {
			return &HookRefused{Group: s.Name, Hook: name, Refusal: ref}
		} else if err != nil {
			return fmt.Errorf("failover group %s: hook %s: %w", s.Name, name, err)
		}
	}
	return nil
}

// Member runs one membership. Start it once; Stop ends it.
type Member struct {
	cfg   Config
	log   *slog.Logger
	clock lease.Clock
	m     *machine.Machine
	rec   lease.Cell
	own   lease.Cell
	ctl   lease.Cell

	hooks   *hookRunner
	metrics *metrics
	events  chan func()
	stopReq chan chan struct{}
	done    chan struct{}
	cancel  context.CancelFunc

	// owned by the loop
	lastRev    uint64 // primary: the revision of its last write of the record
	ownRev     uint64 // this member's key
	hbInFlight bool
	queued     bool // a record write the machine asked for waits for the write in flight
	unknown    bool // the last record write's outcome is unknown
	// switchover is the last switchover request read from the control key, kept until the
	// primary of its epoch has handed over: one that arrives while that primary is still
	// activating or recovering is carried out once it is healthy (the key is delivered once).
	switchover Control
	// ownLost are the bodies of the writes of this member's key whose outcome is unknown, since
	// the last one known (each may have landed, its revision lost with the answer; distinct
	// bodies only, the status being role, state and epoch).
	ownLost   [][]byte
	stopping  chan struct{}
	startOnce sync.Once
	stopOnce  sync.Once
}

// New prepares a membership. A group whose hooks cfg.Policy refuses is an error wrapping the
// *HookRefused (CheckHooks): the member never starts, so it never promotes.
func New(cfg Config) (*Member, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := CheckHooks(cfg.Policy, cfg.Spec); err != nil {
		return nil, err
	}
	clk := cfg.Clock
	if clk == nil {
		clk = lease.RealClock{}
	}
	s := cfg.Spec
	self, rank, err := standing(s, cfg.Self)
	if err != nil {
		return nil, err
	}
	ms := func(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
	_, hasHealth := s.Hooks[machine.HookHealthCheck]
	_, hasDemote := s.Hooks[machine.HookOnDemote]
	timeout := ms(s.HeartbeatTimeout)
	mb := &Member{cfg: cfg, log: cfg.Logger.With("group", s.Name, "member", cfg.Self), clock: clk,
		m: machine.New(machine.Config{Group: s.Name, Self: cfg.Self, FailureThreshold: s.FailureThreshold,
			RecoveryThreshold: s.RecoveryThreshold, FenceDeadline: ms(s.HeartbeatTimeout) * time.Duration(s.FailureThreshold),
			FailoverTimeout: ms(s.FailoverTimeout), RankDelay: ms(s.HeartbeatInterval) * time.Duration(rank), Eligible: self.Eligible(),
			MaxLag: int64(s.MaxLagOnFailover), HasHealth: hasHealth, HasDemote: hasDemote}),
		rec:     lease.Cell{KV: cfg.KV, Key: KeyRecord, Timeout: timeout, Clock: clk},
		own:     lease.Cell{KV: cfg.KV, Key: MemberKey(cfg.Self), Timeout: timeout, Clock: clk},
		ctl:     lease.Cell{KV: cfg.KV, Key: KeyControl, Timeout: timeout, Clock: clk},
		events:  make(chan func(), 64),
		stopReq: make(chan chan struct{}),
		done:    make(chan struct{}),
	}
	mb.hooks = &hookRunner{member: mb}
	mb.metrics = newMetrics(cfg.Registry, s.Name)
	return mb, nil
}

// standing returns self's settings and its rank among the candidates: how many other eligible
// members have a higher priority (each rank waits one more heartbeat interval before it
// promotes). Both come from the spec's one resolution of member settings (spec.Canonical
// MemberSettings and SettingsOf), whether self was named by id or taken in by a selector.
func standing(s spec.Canonical, self string) (spec.Settings, int, error) {
	me, ok := s.SettingsOf(self)
	if !ok {
		return me, 0, fmt.Errorf("failover group %s: agent %s is not a member: %w", s.Name, self, fault.ErrInvalid)
	}
	rank := 0
	for _, m := range s.MemberSettings() {
		if m.Agent != self && m.Eligible() && m.Priority > me.Priority {
			rank++
		}
	}
	return me, rank, nil
}

// Role and State are the member's, for status pages; safe from any goroutine.
func (mb *Member) Status() (role machine.Role, state machine.State, epoch uint64) {
	ch := make(chan struct{})
	select {
	case mb.events <- func() { role, state, epoch = mb.m.Role(), mb.m.State(), mb.m.Epoch(); close(ch) }:
		select {
		case <-ch:
		case <-mb.done:
		}
	case <-mb.done:
	}
	return role, state, epoch
}

// Start reads the group record (startup reconciliation) and runs the member until ctx ends or
// Stop is called.
func (mb *Member) Start(ctx context.Context) error {
	var err error
	mb.startOnce.Do(func() {
		ctx, mb.cancel = context.WithCancel(ctx)
		var (
			o   machine.Observation
			ctl Control
		)
		o, ctl, err = mb.readStart(ctx)
		for err != nil && ctx.Err() == nil {
			// The store must answer once before anything is decided.
			mb.log.Warn("failover: reading the group record and control key at start", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(mb.interval()):
			}
			o, ctl, err = mb.readStart(ctx)
		}
		if err != nil {
			close(mb.done)
			return
		}
		mb.lastRev = o.Rev
		// A group paused before this member started is paused for it from the start: the
		// machine's first decision (bootstrapping a group without a record) comes before any
		// watched entry.
		mb.m.SetPaused(ctl.Paused)
		mb.switchover = ctl
		now := mb.clock.Now()
		go mb.loop(ctx, o, now)
	})
	return err
}

// Stop ends the membership: a healthy primary with handoverOnStop hands over to the best
// replica first (bounded by ctx), then the running hook is cancelled.
func (mb *Member) Stop(ctx context.Context) error {
	mb.stopOnce.Do(func() {
		ack := make(chan struct{})
		select {
		case mb.stopReq <- ack:
			select {
			case <-ack:
			case <-ctx.Done():
			}
		case <-mb.done:
		}
		if mb.cancel != nil {
			mb.cancel()
		}
	})
	select {
	case <-mb.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (mb *Member) interval() time.Duration {
	return time.Duration(mb.cfg.Spec.HeartbeatInterval) * time.Millisecond
}

// readStart reads what a member decides its start on: the group record and the control key
// (absent: not paused, no switchover; a value that does not parse counts as absent, as the watch
// takes it).
func (mb *Member) readStart(ctx context.Context) (machine.Observation, Control, error) {
	o, err := mb.read(ctx)
	if err != nil {
		return o, Control{}, err
	}
	var c Control
	e, err := mb.ctl.Read(ctx)
	switch {
	case errors.Is(err, fault.ErrNotFound):
	case err != nil:
		return o, c, fmt.Errorf("control key: %w", err)
	case !e.Deleted:
		if json.Unmarshal(e.Value, &c) != nil {
			c = Control{}
		}
	}
	return o, c, nil
}

// read reads the group record into an observation; a value it cannot read is Corrupt.
func (mb *Member) read(ctx context.Context) (machine.Observation, error) {
	e, err := mb.rec.Read(ctx)
	switch {
	case errors.Is(err, fault.ErrNotFound):
		return machine.Observation{Absent: true}, nil
	case err != nil:
		return machine.Observation{}, err
	}
	return observation(e), nil
}

func observation(e lease.Entry) machine.Observation {
	if e.Deleted {
		return machine.Observation{Rev: e.Revision, Absent: true}
	}
	var r machine.Record
	if len(e.Value) > maxRecordBytes || json.Unmarshal(e.Value, &r) != nil || r.Primary == "" || r.Epoch > e.Revision {
		return machine.Observation{Rev: e.Revision, Corrupt: true}
	}
	return machine.Observation{Rev: e.Revision, Record: r}
}

func (mb *Member) loop(ctx context.Context, first machine.Observation, now time.Time) {
	defer close(mb.done)
	defer mb.hooks.stop()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go mb.watch(wctx, KeyRecord)
	go mb.watch(wctx, KeyControl)
	mb.apply(ctx, mb.m.Start(first, now))
	hb := time.NewTicker(mb.interval())
	defer hb.Stop()
	tick := time.NewTicker(max(mb.interval()/5, 10*time.Millisecond))
	defer tick.Stop()
	mb.heartbeat(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case ack := <-mb.stopReq:
			mb.stopGracefully(ctx, ack)
			return
		case f := <-mb.events:
			f()
		case <-hb.C:
			mb.heartbeat(ctx)
		case <-tick.C:
			mb.apply(ctx, mb.m.Tick(mb.clock.Now()))
		}
	}
}

// post runs f on the loop.
func (mb *Member) post(ctx context.Context, f func()) {
	select {
	case mb.events <- f:
	case <-ctx.Done():
	case <-mb.done:
	}
}

// heartbeat starts one heartbeat unless one is in flight: the primary writes the group record
// by compare-and-set on its last revision; a replica writes its own key and reads the record.
// A health check runs beside it when the group has one and no other hook runs.
func (mb *Member) heartbeat(ctx context.Context) {
	if h, ok := mb.cfg.Spec.Hooks[machine.HookHealthCheck]; ok && mb.hooks.idle() && mb.m.State() != machine.Fencing &&
		mb.m.State() != machine.Yielding {
		mb.hooks.run(ctx, machine.HookHealthCheck, h, mb.m.Epoch(), mb.m.Role(), mb.m.State())
	}
	if mb.hbInFlight {
		return
	}
	if mb.m.Role() == machine.Primary {
		mb.writeRecordAsync(ctx)
		return
	}
	mb.hbInFlight = true
	sent := mb.clock.Now()
	status := MemberStatus{Role: string(mb.m.Role()), State: string(mb.m.State()), Epoch: mb.m.Epoch()}
	rev, lost := mb.ownRev, slices.Clone(mb.ownLost)
	body, _ := json.Marshal(status)
	go func() {
		next, err := mb.writeOwn(ctx, rev, body, lost)
		o, rerr := mb.read(ctx)
		mb.post(ctx, func() {
			mb.hbInFlight = false
			if err == nil || errors.Is(err, lease.ErrLate) {
				mb.ownRev = next
			}
			switch {
			case !lease.OutcomeUnknown(err):
				mb.ownLost = nil
			case !slices.ContainsFunc(mb.ownLost, func(l []byte) bool { return bytes.Equal(l, body) }):
				mb.ownLost = append(mb.ownLost, body)
			}
			now := mb.clock.Now()
			if mb.m.Role() != machine.Replica {
				mb.flushQueued(ctx)
				return // promoted meanwhile
			}
			mb.apply(ctx, mb.m.HeartbeatDone(err == nil, errors.Is(err, fault.ErrConflict), sent, now))
			if rerr == nil {
				mb.apply(ctx, mb.m.Observe(o, now))
			}
		})
	}()
}

// writeRecordAsync starts the primary's write of the record as the machine has it now, by
// compare-and-set on the last revision; its outcome comes back to the loop. At most one write
// is in flight: a write asked for meanwhile is queued and made, with the state of then, next.
func (mb *Member) writeRecordAsync(ctx context.Context) {
	mb.hbInFlight = true
	rec, rev, unknown, sent := mb.m.Record(), mb.lastRev, mb.unknown, mb.clock.Now()
	go func() {
		next, err := mb.writeRecord(ctx, rev, rec, unknown)
		mb.post(ctx, func() {
			mb.hbInFlight = false
			mb.recordWritten(ctx, next, err, sent)
			mb.flushQueued(ctx)
		})
	}()
}

func (mb *Member) flushQueued(ctx context.Context) {
	if mb.queued && !mb.hbInFlight {
		mb.queued = false
		if mb.m.Role() == machine.Primary {
			mb.writeRecordAsync(ctx)
		}
	}
}

// writeRecord is the primary's compare-and-set of the record. After a write whose outcome was
// unknown, a conflict is checked with one read: if the record is this member's own write, its
// revision is adopted instead of taking it for a replacement.
func (mb *Member) writeRecord(ctx context.Context, rev uint64, rec machine.Record, unknown bool) (uint64, error) {
	b, _ := json.Marshal(rec)
	next, err := mb.rec.Swap(ctx, rev, b)
	if errors.Is(err, fault.ErrConflict) && unknown {
		if e, rerr := mb.rec.Read(ctx); rerr == nil {
			o := observation(e)
			if !o.Corrupt && !o.Absent && o.Record.Primary == rec.Primary && o.Record.EpochAt(o.Rev) == rec.Epoch {
				return mb.rec.Swap(ctx, e.Revision, b)
			}
		}
	}
	return next, err
}

func (mb *Member) recordWritten(ctx context.Context, next uint64, err error, sent time.Time) {
	if mb.m.Role() != machine.Primary {
		return
	}
	mb.unknown = lease.OutcomeUnknown(err)
	if err == nil || errors.Is(err, lease.ErrLate) {
		mb.lastRev = next
	}
	ok := err == nil
	conflict := errors.Is(err, fault.ErrConflict)
	if conflict {
		// Replaced: fence at once. The read tells the machine by whom.
		mb.apply(ctx, mb.m.HeartbeatDone(false, true, sent, mb.clock.Now()))
		if o, rerr := mb.read(ctx); rerr == nil {
			mb.apply(ctx, mb.m.Observe(o, mb.clock.Now()))
		}
		return
	}
	mb.apply(ctx, mb.m.HeartbeatDone(ok, false, sent, mb.clock.Now()))
}

// writeOwn writes the member's own key: Create the first time, then compare-and-set on its
// own last revision. After writes whose outcome was unknown (lost, the bodies they sent), a
// conflict is checked with one read: if the key holds one of those writes, it landed and its
// revision is adopted — without this, one lost answer (a reply late past heartbeatTimeout, a
// partition healed) would make every later write conflict and keep the member failed for good.
// A key found deleted or purged after a conflict is created again, for the same reason.
func (mb *Member) writeOwn(ctx context.Context, rev uint64, b []byte, lost [][]byte) (uint64, error) {
	if rev == 0 {
		next, err := mb.own.Create(ctx, b)
		if !errors.Is(err, fault.ErrConflict) {
			return next, err
		}
		e, err := mb.own.Read(ctx) // written by an earlier run of this member
		if err != nil {
			return 0, err
		}
		return mb.own.Swap(ctx, e.Revision, b)
	}
	next, err := mb.own.Swap(ctx, rev, b)
	if errors.Is(err, fault.ErrConflict) {
		e, rerr := mb.own.Read(ctx)
		switch {
		case errors.Is(rerr, fault.ErrNotFound):
			// Deleted or purged by hand: only this member writes its key, so it writes it
			// again instead of conflicting with the marker for good.
			return mb.own.Create(ctx, b)
		case rerr == nil && slices.ContainsFunc(lost, func(l []byte) bool { return bytes.Equal(l, e.Value) }):
			return mb.own.Swap(ctx, e.Revision, b)
		}
	}
	return next, err
}

// watch hands entries of key to the loop. For the record it only accelerates (the member read
// it at start and reads it at every heartbeat). The control key is read only at start, so its
// watch delivers the current value first, each time it is made: a change made while a broken
// watch was being made again is not missed.
func (mb *Member) watch(ctx context.Context, key string) {
	var opts []jetstream.WatchOpt
	if key != KeyControl {
		opts = append(opts, jetstream.UpdatesOnly())
	}
	for ctx.Err() == nil {
		w, err := mb.cfg.KV.Watch(ctx, key, opts...)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(mb.interval()):
				continue
			}
		}
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			entry := lease.EntryOf(e)
			mb.post(ctx, func() { mb.watched(ctx, key, entry) })
		}
		_ = w.Stop()
	}
}

func (mb *Member) watched(ctx context.Context, key string, e lease.Entry) {
	now := mb.clock.Now()
	if key == KeyControl {
		var c Control
		if e.Deleted || json.Unmarshal(e.Value, &c) != nil {
			return
		}
		mb.m.SetPaused(c.Paused)
		mb.switchover = c
		mb.trySwitchover(ctx)
		return
	}
	o := observation(e)
	if mb.m.Role() == machine.Primary && o.Rev <= mb.lastRev {
		return // its own write, or older
	}
	mb.apply(ctx, mb.m.Observe(o, now))
}

// trySwitchover hands over as the last switchover request asks, if it is for this member's
// epoch as primary and the primary is healthy; a request for an epoch that is not this
// primary's is dropped.
func (mb *Member) trySwitchover(ctx context.Context) {
	c := mb.switchover
	if c.SwitchoverTo == "" || mb.m.Role() != machine.Primary || c.SwitchoverEpoch != mb.m.Epoch() {
		return
	}
	// The hub refuses these; a primary does not fence for a member that will not promote.
	if to, ok := mb.cfg.Spec.SettingsOf(c.SwitchoverTo); !ok || !to.Eligible() {
		mb.log.Warn("switchover ignored: the member named is not an eligible member", "to", c.SwitchoverTo)
		mb.switchover = Control{}
		return
	}
	if mb.m.State() != machine.Healthy {
		mb.log.Info("switchover waits for the primary to be healthy", "to", c.SwitchoverTo, "state", mb.m.State())
		return
	}
	mb.switchover = Control{}
	if acts, ok := mb.m.Handover(c.SwitchoverTo, "switchover to "+c.SwitchoverTo+" asked by the hub"); ok {
		mb.apply(ctx, acts)
	}
}

// apply carries out the machine's actions.
func (mb *Member) apply(ctx context.Context, acts []machine.Action) {
	for _, a := range acts {
		switch a.Kind {
		case machine.Report:
			t := a.Transition
			if t.Role == machine.Primary && t.To == machine.Healthy {
				defer mb.trySwitchover(ctx)
			}
			mb.log.Info("failover transition", "role", t.Role, "from", t.From, "to", t.To, "epoch", t.Epoch, "reason", t.Reason)
			mb.metrics.transition(t.Role, t.To, t.Epoch)
			mb.report(wire.FailoverTransition{Group: t.Group, Member: t.Member, Role: string(t.Role), From: string(t.From),
				To: string(t.To), Epoch: t.Epoch, Reason: t.Reason})
		case machine.RunHook:
			h, ok := mb.cfg.Spec.Hooks[a.Hook]
			if !ok {
				// A hook the group does not configure succeeds at once.
				hook := a.Hook
				mb.post(ctx, func() { mb.hookEnded(ctx, hook, true, 0) })
				continue
			}
			mb.hooks.run(ctx, a.Hook, h, mb.m.Epoch(), mb.m.Role(), mb.m.State())
		case machine.Promote:
			mb.promote(ctx, a)
		case machine.WriteRecord:
			if mb.hbInFlight {
				mb.queued = true // two writes on one revision would conflict with each other
				continue
			}
			mb.writeRecordAsync(ctx)
		}
	}
}

func (mb *Member) promote(ctx context.Context, a machine.Action) {
	b, _ := json.Marshal(a.Record)
	rev := a.Rev
	go func() {
		var next uint64
		var err error
		if rev == 0 {
			next, err = mb.rec.Create(ctx, b)
		} else {
			next, err = mb.rec.Swap(ctx, rev, b)
		}
		mb.post(ctx, func() {
			ok := err == nil || errors.Is(err, lease.ErrLate)
			if ok {
				mb.lastRev = next
			}
			mb.apply(ctx, mb.m.PromoteDone(ok, next, mb.clock.Now()))
		})
	}()
}

func (mb *Member) report(t wire.FailoverTransition) {
	if mb.cfg.Report != nil {
		mb.cfg.Report(t)
	}
}

// hookEnded runs on the loop when a hook has ended.
func (mb *Member) hookEnded(ctx context.Context, hook string, ok bool, lag int64) {
	now := mb.clock.Now()
	if hook == machine.HookHealthCheck {
		mb.apply(ctx, mb.m.HealthDone(ok, lag, now))
		return
	}
	mb.apply(ctx, mb.m.HookDone(hook, ok, now))
}

// stopGracefully hands over (handoverOnStop) and waits for the record naming the successor.
func (mb *Member) stopGracefully(ctx context.Context, ack chan struct{}) {
	defer close(ack)
	if mb.m.Role() != machine.Primary {
		return
	}
	var acts []machine.Action
	ok := false
	if to := mb.bestReplica(ctx); mb.cfg.Spec.HandoverOnStop && to != "" {
		acts, ok = mb.m.Handover(to, "graceful stop: handing over to "+to)
	}
	if !ok {
		acts, ok = mb.m.Fence("graceful stop without a handover: fencing")
	}
	if !ok {
		return
	}
	mb.apply(ctx, acts)
	deadline := time.After(time.Duration(mb.cfg.Spec.FailoverTimeout) * time.Millisecond)
	for {
		select {
		case f := <-mb.events:
			f()
			if mb.m.State() == machine.Fenced && !mb.hbInFlight && !mb.queued {
				return
			}
		case <-deadline:
			return
		case <-ctx.Done():
			return
		}
	}
}

// bestReplica is the eligible member with the highest priority whose own key says it watches.
func (mb *Member) bestReplica(ctx context.Context) string {
	best, bestPrio := "", -1
	for _, m := range mb.cfg.Spec.MemberSettings() {
		if m.Agent == mb.cfg.Self || !m.Eligible() {
			continue
		}
		c := lease.Cell{KV: mb.cfg.KV, Key: MemberKey(m.Agent), Timeout: mb.own.Timeout, Clock: mb.clock}
		e, err := c.Read(ctx)
		if err != nil {
			continue
		}
		var st MemberStatus
		if json.Unmarshal(e.Value, &st) != nil || st.State != string(machine.Watching) {
			continue
		}
		if m.Priority > bestPrio {
			best, bestPrio = m.Agent, m.Priority
		}
	}
	return best
}

// hookRunner runs one hook at a time.
type hookRunner struct {
	member *Member
	mu     sync.Mutex
	cur    *runningHook
}

type runningHook struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *hookRunner) idle() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur == nil
}

// run starts hook after cancelling, and waiting for, a running hook of another name. A hook
// of the same name already running is left to finish.
func (r *hookRunner) run(ctx context.Context, name string, h spec.CanonicalHook, epoch uint64, role machine.Role, state machine.State) {
	r.mu.Lock()
	cur := r.cur
	r.mu.Unlock()
	if cur != nil {
		if cur.name == name {
			return
		}
		cur.cancel()
		<-cur.done
	}
	mb := r.member
	hctx, cancel := context.WithCancel(ctx)
	rh := &runningHook{name: name, cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	r.cur = rh
	r.mu.Unlock()
	env := append([]string{"GODWIT_FAILOVER_GROUP=" + mb.cfg.Spec.Name, "GODWIT_FAILOVER_MEMBER=" + mb.cfg.Self,
		"GODWIT_FAILOVER_HOOK=" + name, "GODWIT_FAILOVER_EPOCH=" + strconv.FormatUint(epoch, 10),
		"GODWIT_FAILOVER_ROLE=" + string(role)}, mb.cfg.Env...)
	go func() {
		defer cancel()
		cmd := execute.Command{Script: h.Command, Env: env, Timeout: time.Duration(h.TimeoutMS) * time.Millisecond,
			Grace: hookGrace, TailBytes: 1024}
		var res execute.Result
		refused := false
		// New checked every hook; checking again here keeps a hook from running should the
		// spec in hand ever differ from the one checked.
		if err := mb.cfg.Policy.Check(policy.Command{Kind: name, Script: cmd.Script, Timeout: cmd.Timeout}); err != nil {
			mb.log.Error("failover hook refused by the agent policy; not run", "hook", name, "err", err)
			res, refused = execute.Result{ExitCode: -1, StartErr: err, Stderr: err.Error()}, true
		} else {
			mb.cfg.Policy.Prepare(&cmd)
			res = execute.Run(hctx, cmd)
		}
		r.mu.Lock()
		if r.cur == rh {
			r.cur = nil
		}
		r.mu.Unlock()
		close(rh.done)
		result := "succeeded"
		switch {
		case refused:
			result = "refused"
		case res.Cancelled:
			result = "cancelled"
		case res.TimedOut:
			result = "timed_out"
		case !res.OK():
			result = "failed"
		}
		mb.metrics.hook(name, result, res.Duration)
		if name != machine.HookHealthCheck || !res.OK() {
			mb.log.Info("failover hook ended", "hook", name, "result", result, "exit_code", res.ExitCode, "duration", res.Duration)
			mb.report(wire.FailoverTransition{Group: mb.cfg.Spec.Name, Member: mb.cfg.Self, Role: string(role), From: string(state),
				To: string(state), Epoch: epoch, Hook: name, HookResult: result, DurationMS: res.Duration.Milliseconds(),
				Reason: firstLine(res.Stderr)})
		}
		if res.Cancelled {
			return // the transition that cancelled it has moved on
		}
		lag := parseLag(res.Stdout)
		mb.post(ctx, func() { mb.hookEnded(ctx, name, res.OK(), lag) })
	}()
}

func (r *hookRunner) stop() {
	r.mu.Lock()
	cur := r.cur
	r.mu.Unlock()
	if cur != nil {
		cur.cancel()
		<-cur.done
	}
}

// parseLag reads "lag: N" (or lag=N) from a health check's output; 0 when absent.
func parseLag(out string) int64 {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		for _, p := range []string{"lag:", "lag="} {
			if rest, ok := strings.CutPrefix(line, p); ok {
				if n, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64); err == nil && n >= 0 {
					return n
				}
			}
		}
	}
	return 0
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
