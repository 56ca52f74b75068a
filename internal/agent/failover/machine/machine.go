// Package machine is a failover group member's state machine, pure: no I/O, no goroutines, no
// clock of its own. The member's runtime (package failover) feeds it what happened — a read of
// the group record, the outcome of a heartbeat write, of a health check, of a hook, of a
// promotion — with the local monotonic time, and carries out the actions it returns: run or
// cancel a hook, write the group record by compare-and-set, report a transition.
//
// The promises it keeps, each with a test in machine_test.go:
//
//   - A primary's heartbeat is a compare-and-set on the group record's last revision carrying
//     its true state; a conflict means another member was promoted: it fences at once, before
//     anything else, and never reports itself healthy again under that epoch.
//   - A primary fences after FailureThreshold heartbeat or health-check failures in a row, and
//     in any case when FenceDeadline has passed since the last successful heartbeat was sent
//     (the watchdog; a transient error alone does not fence).
//   - A fenced primary leaves fenced only after RecoveryThreshold successful heartbeats in a
//     row at the same epoch, and then through recovering, whose own write is a compare-and-set.
//   - A replica promotes only by a compare-and-set on the revision it read, after seeing that
//     revision unchanged for FailoverTimeout (plus its rank's delay) on its own clock — never by
//     comparing store times with the local clock — or after seeing the primary report fenced
//     that long; never while paused, not eligible, failed, unhealthy, lagging beyond MaxLag, or
//     on a record it cannot read (a corrupt record fences a primary and fails a replica). An
//     absent record is created at once (by rank) only by a member that never knew a primary;
//     a deleted one is timed like an unchanged one, and fences the primary that sees it.
//   - A returning old primary that sees a newer epoch yields: onDemote, then replica.
//   - Every transition is returned as an event with group, member, from, to, epoch and reason.
package machine

import (
	"fmt"
	"time"
)

// Role is what a member is in its group.
type Role string

// Roles.
const (
	Primary Role = "primary"
	Replica Role = "replica"
)

// State is a member's state; the role says which machine it belongs to.
type State string

// States of both machines (docs/failover.md draws them).
const (
	Initializing State = "initializing"
	// primary
	Healthy     State = "healthy"
	Failed      State = "failed" // also the replica's: not eligible until it recovers
	Fencing     State = "fencing"
	Fenced      State = "fenced"
	FenceFailed State = "fence_failed"
	Recovering  State = "recovering"
	Yielding    State = "yielding"
	Activating  State = "activating" // onPromote runs after a promotion or a reconciliation
	// replica
	Watching  State = "watching"
	Promoting State = "promoting"
)

// Hooks.
const (
	HookHealthCheck = "healthCheck"
	HookOnPromote   = "onPromote"
	HookOnFence     = "onFence"
	HookOnDemote    = "onDemote"
)

// Record is the group record's value: who is primary, under which epoch, in which state.
type Record struct {
	Primary string `json:"primary"`
	// Epoch is the revision of the write that promoted Primary (0 in that write itself).
	Epoch uint64 `json:"epoch,omitempty"`
	State State  `json:"state"`
	// HandoverTo names the member a primary hands over to (switchover, graceful stop): it may
	// promote at once.
	HandoverTo string `json:"handoverTo,omitempty"`
}

// EpochAt is the record's epoch when it was read at revision rev: the promoting write carries
// no epoch (it cannot know its own revision), so its revision is the epoch.
func (r Record) EpochAt(rev uint64) uint64 {
	if r.Epoch == 0 {
		return rev
	}
	return r.Epoch
}

// Observation is one read (or watched entry) of the group record.
type Observation struct {
	Rev     uint64
	Record  Record
	Absent  bool // the key does not exist (never written, or deleted)
	Corrupt bool // the value is not a record this member can read
}

// Config is what the machine needs of the group's spec and the member's entry.
type Config struct {
	Group, Self       string
	FailureThreshold  int
	RecoveryThreshold int
	// FenceDeadline is heartbeatTimeout × failureThreshold: the watchdog.
	FenceDeadline   time.Duration
	FailoverTimeout time.Duration
	// RankDelay is added to FailoverTimeout for a candidate that is not the best one by
	// priority, so that the best promotes first (heartbeatInterval × rank).
	RankDelay time.Duration
	Eligible  bool
	MaxLag    int64 // 0: no limit
	HasHealth bool  // a healthCheck hook is configured
	HasDemote bool
}

// ActionKind says what the runtime must do.
type ActionKind int

// Actions.
const (
	// RunHook runs Hook, after cancelling and waiting for a running hook other than it.
	RunHook ActionKind = iota + 1
	// Promote writes Record by compare-and-set on revision Rev (Create when Rev is 0) now — the
	// watchdog of the term it wins counts from the Tick that asked for it — and reports the
	// outcome with PromoteDone.
	Promote
	// WriteRecord writes Record by compare-and-set on the primary's last revision now (a state
	// change that must be in the store before the machine goes on) and reports with
	// HeartbeatDone.
	WriteRecord
	// Report publishes Transition as a failover.transition event.
	Report
)

// Action is one thing to do.
type Action struct {
	Kind       ActionKind
	Hook       string
	Rev        uint64
	Record     Record
	Transition Transition
}

// Transition is one change of role or state.
type Transition struct {
	Group, Member string
	Role          Role
	From, To      State
	Epoch         uint64
	Reason        string
}

// Machine is one member's state machine. Not safe for concurrent use.
type Machine struct {
	cfg   Config
	role  Role
	state State
	epoch uint64
	// paused: maintenance mode, no automatic promotion.
	paused bool

	failures, successes int
	lastSent            time.Time // primary: send time of the last successful heartbeat
	promoteSent         time.Time // replica: when the Promote being carried out was asked for
	// replica: the revision being timed and since when (local clock)
	seenRev   uint64
	seenAt    time.Time
	seenValid bool
	// replica: since when the primary has reported fenced
	fencedSince time.Time
	lastObs     Observation
	lag         int64
	unhealthy   bool   // replica: the last health check failed
	pending     string // the hook the machine waits for
	handoverTo  string // primary: the member to hand over to once fenced
	confirming  bool   // primary reconciling: its first compare-and-set has not landed yet
}

// New returns a member in initializing; call Start with the first read of the record.
func New(cfg Config) *Machine {
	return &Machine{cfg: cfg, role: Replica, state: Initializing}
}

// Role returns the member's role.
func (m *Machine) Role() Role { return m.role }

// State returns the member's state: what its heartbeat carries.
func (m *Machine) State() State { return m.state }

// Epoch returns the epoch the member knows (its own as primary, the primary's as replica).
func (m *Machine) Epoch() uint64 { return m.epoch }

// SetPaused sets maintenance mode.
func (m *Machine) SetPaused(p bool) { m.paused = p }

// Record is what the primary's heartbeat writes now.
func (m *Machine) Record() Record {
	r := Record{Primary: m.cfg.Self, Epoch: m.epoch, State: m.state}
	if m.state == Fenced {
		r.HandoverTo = m.handoverTo // named only once the fence has landed
	}
	return r
}

// Handover starts a switchover (or a graceful stop with handoverOnStop) of a primary to the
// member to: fence, then write the record naming it, which may then promote at once. A
// primary that is not healthy, or a replica, refuses (ok false).
func (m *Machine) Handover(to, reason string) (acts []Action, ok bool) {
	if m.role != Primary || m.state != Healthy || to == "" || to == m.cfg.Self {
		return nil, false
	}
	m.handoverTo = to
	return m.fence(reason), true
}

func (m *Machine) to(role Role, s State, reason string) []Action {
	from := m.state
	if from == s && m.role == role {
		return nil
	}
	m.role, m.state = role, s
	m.failures, m.successes = 0, 0
	return []Action{{Kind: Report, Transition: Transition{Group: m.cfg.Group, Member: m.cfg.Self, Role: role, From: from, To: s,
		Epoch: m.epoch, Reason: reason}}}
}

func (m *Machine) run(hook string) Action {
	m.pending = hook
	return Action{Kind: RunHook, Hook: hook}
}

// fence moves a primary to fencing and runs onFence, cancelling any running hook (onPromote
// included): nothing a fence races with may land after it.
func (m *Machine) fence(reason string) []Action {
	acts := m.to(Primary, Fencing, reason)
	return append(acts, m.run(HookOnFence))
}

// Fence makes a primary fence itself (a stop without handover): nothing is left serving that
// no one watches. It refuses (ok false) when the member is not a primary or fences already.
func (m *Machine) Fence(reason string) (acts []Action, ok bool) {
	if m.role != Primary || m.state == Fencing || m.state == Fenced || m.state == Yielding {
		return nil, false
	}
	return m.fence(reason), true
}

// Start reconciles from the first read of the group record: the primary of the current epoch
// resumes (health check, then healthy) without waiting for a failover; anyone else joins as
// replica; a corrupt record fails the member and it never promotes on it.
func (m *Machine) Start(o Observation, now time.Time) []Action {
	m.lastObs = o
	switch {
	case o.Corrupt:
		return m.to(Replica, Failed, "the group record cannot be read: not promoting on it")
	case !o.Absent && o.Record.Primary == m.cfg.Self:
		// The record read may be stale by the time anything runs: a replica may be promoting on
		// it right now. Nothing is activated before a compare-and-set on the revision read has
		// landed; losing it is a replacement like any other.
		m.epoch = o.Record.EpochAt(o.Rev)
		m.lastSent = now
		m.confirming = true
		acts := m.to(Primary, Activating, fmt.Sprintf("restarted as the primary of epoch %d: reconciling without a failover", m.epoch))
		return append(acts, Action{Kind: WriteRecord, Record: m.Record()})
	case !o.Absent && m.cfg.HasDemote:
		// Another member is primary: make the workload follow it before watching (a member
		// that was primary before it stopped must not come back serving).
		m.epoch = o.Record.EpochAt(o.Rev)
		m.observe(o, now)
		m.role = Replica
		return []Action{m.run(HookOnDemote)}
	default:
		if !o.Absent {
			m.epoch = o.Record.EpochAt(o.Rev)
		}
		acts := m.to(Replica, Watching, "joined as replica")
		m.observe(o, now)
		return append(acts, m.Tick(now)...)
	}
}

// observe times the record's revision for a replica.
func (m *Machine) observe(o Observation, now time.Time) {
	m.lastObs = o
	if !m.seenValid || o.Rev != m.seenRev {
		m.seenRev, m.seenAt, m.seenValid = o.Rev, now, true
	}
	if !o.Absent && !o.Corrupt {
		m.epoch = max(m.epoch, o.Record.EpochAt(o.Rev))
		if o.Record.State == Fenced {
			if m.fencedSince.IsZero() {
				m.fencedSince = now
			}
		} else {
			m.fencedSince = time.Time{}
		}
	}
}

// Observe takes a read or watched entry of the group record.
func (m *Machine) Observe(o Observation, now time.Time) []Action {
	if m.state == Initializing {
		return nil
	}
	if m.role == Primary {
		switch {
		case o.Corrupt:
			if m.state == Fencing || m.state == Fenced || m.state == FenceFailed || m.state == Yielding {
				return nil
			}
			return m.fence("the group record cannot be read: fencing")
		case o.Absent:
			// The record was deleted or purged (an operator forcing an election): the replicas
			// may promote on it, so this term ends now, as a lease's does, not at the next
			// heartbeat's conflict.
			if m.state == Fencing || m.state == Fenced || m.state == FenceFailed || m.state == Yielding {
				return nil
			}
			return m.fence("the group record was deleted: fencing")
		case o.Record.Primary != m.cfg.Self || o.Record.EpochAt(o.Rev) > m.epoch:
			return m.replaced(o, now)
		}
		return nil
	}
	m.observe(o, now)
	if o.Corrupt && m.state != Failed {
		return m.to(Replica, Failed, "the group record cannot be read: not promoting on it")
	}
	return m.Tick(now)
}

// replaced: another member holds a newer epoch. Fence first, then yield.
func (m *Machine) replaced(o Observation, now time.Time) []Action {
	m.lastObs = o
	switch m.state {
	case Fencing, Yielding:
		return nil
	case Fenced:
		return m.yield(now)
	}
	return m.fence(fmt.Sprintf("replaced: %s holds epoch %d", o.Record.Primary, o.Record.EpochAt(o.Rev)))
}

// yield demotes a fenced old primary: onDemote (if any), then replica.
func (m *Machine) yield(now time.Time) []Action {
	acts := m.to(Primary, Yielding, "a newer epoch exists: demoting")
	if m.cfg.HasDemote {
		return append(acts, m.run(HookOnDemote))
	}
	return append(acts, m.becomeReplica(now, "demoted: joined as replica")...)
}

func (m *Machine) becomeReplica(now time.Time, reason string) []Action {
	m.pending = ""
	m.seenValid = false
	m.fencedSince = time.Time{}
	acts := m.to(Replica, Watching, reason)
	if !m.lastObs.Absent && !m.lastObs.Corrupt {
		m.epoch = m.lastObs.Record.EpochAt(m.lastObs.Rev)
	}
	m.observe(m.lastObs, now)
	return acts
}

// HeartbeatDone takes the outcome of a heartbeat write sent at sent: for a primary the
// compare-and-set of the group record (rev is the new revision), for a replica the write of
// its own member key. conflict: the revision had moved.
func (m *Machine) HeartbeatDone(ok, conflict bool, sent, now time.Time) []Action {
	if m.role == Replica {
		return m.replicaHeartbeat(ok && !conflict)
	}
	if conflict {
		return m.replaced(Observation{Rev: m.lastObs.Rev, Record: Record{Primary: "another member", Epoch: m.epoch + 1}}, now)
	}
	if !ok {
		return m.primaryFailure("heartbeat write failed", now)
	}
	if sent.After(m.lastSent) {
		m.lastSent = sent
	}
	m.failures = 0
	m.successes++
	switch m.state {
	case Activating:
		if m.confirming {
			m.confirming = false
			if m.cfg.HasHealth {
				return []Action{m.run(HookHealthCheck)}
			}
			return []Action{m.run(HookOnPromote)}
		}
	case Fenced:
		if m.successes >= max(m.cfg.RecoveryThreshold, 1) && m.handoverTo == "" {
			acts := m.to(Primary, Recovering, fmt.Sprintf("%d heartbeats in a row at epoch %d", m.cfg.RecoveryThreshold, m.epoch))
			return append(acts, Action{Kind: WriteRecord, Record: m.Record()})
		}
	case Recovering:
		if m.pending == "" {
			return []Action{m.run(HookOnPromote)}
		}
	case Failed:
		// Failed is left only through fencing; a success here changes nothing.
	}
	return nil
}

func (m *Machine) replicaHeartbeat(ok bool) []Action {
	if ok {
		m.failures = 0
		m.successes++
		if m.state == Failed && m.successes >= max(m.cfg.RecoveryThreshold, 1) && !m.lastObs.Corrupt {
			return m.to(Replica, Watching, fmt.Sprintf("%d heartbeats in a row: eligible again", m.cfg.RecoveryThreshold))
		}
		return nil
	}
	m.successes = 0
	m.failures++
	if m.state != Failed && m.failures >= max(m.cfg.FailureThreshold, 1) {
		return m.to(Replica, Failed, fmt.Sprintf("%d heartbeat failures in a row: not eligible", m.failures))
	}
	return nil
}

func (m *Machine) primaryFailure(what string, now time.Time) []Action {
	m.successes = 0
	m.failures++
	switch m.state {
	case Healthy, Activating, Recovering:
		if m.failures >= max(m.cfg.FailureThreshold, 1) {
			acts := m.to(Primary, Failed, fmt.Sprintf("%s %d times in a row", what, m.cfg.FailureThreshold))
			return append(acts, m.fence("failure threshold reached")...)
		}
	}
	return m.watchdog(now)
}

// HealthDone takes a health check's outcome and the lag it reported (0 when none).
func (m *Machine) HealthDone(ok bool, lag int64, now time.Time) []Action {
	if m.pending == HookHealthCheck {
		m.pending = ""
	}
	m.lag = lag
	if m.role == Replica {
		m.unhealthy = !ok
		return m.Tick(now)
	}
	if m.state == Activating && ok {
		if m.confirming || m.pending != "" {
			return nil // not confirmed yet, or onPromote runs already
		}
		return []Action{m.run(HookOnPromote)}
	}
	if !ok {
		return m.primaryFailure("health check failed", now)
	}
	return nil
}

// HookDone takes the end of a hook the machine asked for; ends of hooks it no longer waits
// for (cancelled by a later transition) are ignored.
func (m *Machine) HookDone(hook string, ok bool, now time.Time) []Action {
	if hook != m.pending {
		return nil
	}
	m.pending = ""
	switch {
	case hook == HookOnFence && ok && m.handoverTo != "":
		acts := m.to(Primary, Fenced, "onFence succeeded: handing over to "+m.handoverTo)
		rec := m.Record()
		rec.HandoverTo = m.handoverTo
		return append(acts, Action{Kind: WriteRecord, Record: rec})
	case hook == HookOnFence && ok:
		acts := m.to(Primary, Fenced, "onFence succeeded")
		if m.lastObs.Record.Primary != "" && (m.lastObs.Record.Primary != m.cfg.Self || m.lastObs.Record.EpochAt(m.lastObs.Rev) > m.epoch) {
			return append(acts, m.yield(now)...)
		}
		return acts
	case hook == HookOnFence:
		acts := m.to(Primary, FenceFailed, "onFence failed: retrying; the workload may still be serving")
		return append(acts, m.run(HookOnFence))
	case hook == HookOnPromote && ok && (m.state == Activating || m.state == Recovering):
		return m.to(Primary, Healthy, "onPromote succeeded")
	case hook == HookOnPromote:
		return m.fence("onPromote failed")
	case hook == HookOnDemote && m.state == Initializing:
		if !ok {
			return m.to(Replica, Failed, "onDemote failed at start: not eligible until it recovers")
		}
		return m.becomeReplica(now, "joined as replica (onDemote: following the primary)")
	case hook == HookOnDemote && m.state == Yielding:
		if !ok {
			return m.to(Replica, Failed, "onDemote failed: not eligible until it recovers")
		}
		return m.becomeReplica(now, "onDemote succeeded: joined as replica")
	}
	return nil
}

// PromoteDone takes the outcome of a Promote write: ok with the new revision (the new epoch),
// or lost (the revision moved, or the outcome is unknown: back to watching, the next read
// tells).
func (m *Machine) PromoteDone(ok bool, rev uint64, now time.Time) []Action {
	if m.state != Promoting {
		return nil
	}
	if !ok {
		m.seenValid = false
		return m.to(Replica, Watching, "promotion lost the compare-and-set")
	}
	// The promoting write is the term's first heartbeat: the watchdog counts from when it was
	// sent, not from its answer (which may come back up to a call's deadline later, while the
	// other members time the new revision from when they saw it).
	m.epoch, m.lastSent = rev, now
	if m.promoteSent.Before(now) {
		m.lastSent = m.promoteSent
	}
	m.lastObs = Observation{Rev: rev, Record: Record{Primary: m.cfg.Self, State: Activating}}
	acts := m.to(Primary, Activating, fmt.Sprintf("promoted at epoch %d", rev))
	return append(acts, m.run(HookOnPromote))
}

// Tick lets time pass: the primary's watchdog, the replica's failover timeout.
func (m *Machine) Tick(now time.Time) []Action {
	if m.role == Primary {
		return m.watchdog(now)
	}
	if m.state != Watching || !m.cfg.Eligible || !m.seenValid || m.lastObs.Corrupt {
		return nil
	}
	o := m.lastObs
	wait := m.cfg.FailoverTimeout + m.cfg.RankDelay
	var reason string
	switch {
	case o.Record.HandoverTo == m.cfg.Self && o.Record.State == Fenced && !o.Absent:
		// A switchover or a graceful stop: the primary fenced itself and named this member. It
		// is an operator's or the primary's decision, so a pause does not hold it back.
		reason = fmt.Sprintf("%s handed over", o.Record.Primary)
	case m.paused:
		return nil
	case o.Record.State == FenceFailed && !o.Absent:
		// The old primary could not fence: its workload may still serve, whether it keeps
		// retrying or is cut off (its record unchanged). A person fences it by hand; see
		// docs/failover.md.
		return nil
	case m.cfg.MaxLag > 0 && m.lag > m.cfg.MaxLag:
		return nil
	case m.unhealthy:
		return nil // its own workload failed its health check: not a candidate
	case o.Absent && m.epoch == 0:
		reason = "no primary: bootstrapping"
		if now.Sub(m.seenAt) < m.cfg.RankDelay {
			return nil
		}
	case o.Absent:
		// The record of a known primary was deleted: that primary fences when it sees the
		// delete or its next heartbeat conflicts, or — cut off — by its watchdog; the timing
		// rule bounds all three by failoverTimeout, not by the rank delay alone.
		if now.Sub(m.seenAt) < wait {
			return nil
		}
		reason = fmt.Sprintf("the group record deleted for %s: electing", now.Sub(m.seenAt).Round(time.Millisecond))
	case now.Sub(m.seenAt) >= wait:
		reason = fmt.Sprintf("the primary's record unchanged for %s", now.Sub(m.seenAt).Round(time.Millisecond))
	case !m.fencedSince.IsZero() && now.Sub(m.fencedSince) >= wait:
		reason = fmt.Sprintf("the primary reported fenced for %s", now.Sub(m.fencedSince).Round(time.Millisecond))
	default:
		return nil
	}
	acts := m.to(Replica, Promoting, reason)
	m.promoteSent = now
	return append(acts, Action{Kind: Promote, Rev: o.Rev, Record: Record{Primary: m.cfg.Self, State: Activating}})
}

func (m *Machine) watchdog(now time.Time) []Action {
	switch m.state {
	case Healthy, Activating, Recovering, Failed:
		if now.Sub(m.lastSent) >= m.cfg.FenceDeadline {
			return m.fence(fmt.Sprintf("no heartbeat landed for %s (heartbeatTimeout × failureThreshold)", m.cfg.FenceDeadline))
		}
	}
	return nil
}
