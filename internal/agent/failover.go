package agent

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	member "godwit.dev/godwit/internal/agent/failover"
	"godwit.dev/godwit/internal/bus"
	spec "godwit.dev/godwit/internal/failover"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// membership is the failover member the agent runs for its group (docs/failover.md).
type membership struct {
	a      wire.FailoverAssignment
	m      *member.Member
	cancel context.CancelFunc
	// started is closed when Start returned (the first read of the group record answered).
	started chan struct{}
}

// failover follows the agent's failover assignment until ctx ends: it starts the member runtime
// of its group, and stops it (then starts the new one) when the hub changes or removes it. An
// assignment that names another bucket makes the agent reconnect: its NATS permissions name its
// group's bucket and are fixed when it connects.
func (a *Agent) failover(ctx context.Context, interval time.Duration) {
	nudge := make(chan struct{}, 1)
	sub, err := bus.WatchFailoverAssignment(a.nc, a.id.AgentID, func() {
		select {
		case nudge <- struct{}{}:
		default:
		}
	})
	if err == nil {
		defer func() { _ = sub.Unsubscribe() }()
	}
	var cur *membership
	bucket := ""
	refused := "" // the spec hash of an assignment the policy refused: not tried again
	defer func() { a.stopMember(cur) }()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, _, err := bus.GetFailoverAssignment(gctx, a.nc, a.id.AgentID)
		cancel()
		var next *wire.FailoverAssignment
		switch {
		case errors.Is(err, fault.ErrNotFound):
		case err != nil:
			goto wait // unknown: keep what runs
		default:
			var as wire.FailoverAssignment
			if jerr := json.Unmarshal(v, &as); jerr != nil {
				a.log.Error("failover assignment does not decode; keeping the current one", "err", jerr)
				goto wait
			}
			next = &as
		}
		if cur != nil && (next == nil || next.SpecHash != cur.a.SpecHash || next.Bucket != cur.a.Bucket) {
			a.log.Info("failover membership ends", "group", cur.a.Group)
			a.stopMember(cur)
			cur = nil
		}
		if nb := bucketOf(next); nb != bucket {
			bucket = nb
			// New permissions come with a new connection.
			_ = a.nc.ForceReconnect()
		}
		if cur == nil && next != nil && next.SpecHash != refused {
			var err error
			cur, err = a.startMember(ctx, *next)
			if ref := (*member.HookRefused)(nil); errors.As(err, &ref) {
				// Reported once per spec: the policy is fixed for the agent's life, so only a
				// changed group can be allowed.
				refused = next.SpecHash
				a.failoverRefused(ref)
			}
		}
	wait:
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-nudge:
		}
	}
}

func bucketOf(a *wire.FailoverAssignment) string {
	if a == nil {
		return ""
	}
	return a.Bucket
}

// startMember starts the member runtime of as; nil when the spec cannot be run (logged), with
// the error: a *member.HookRefused when the agent's policy refuses a hook of the group.
func (a *Agent) startMember(ctx context.Context, as wire.FailoverAssignment) (*membership, error) {
	sp, err := spec.SpecOf(wire.FailoverGroup{Name: as.Group, Spec: as.Spec})
	if err != nil {
		a.log.Error("failover assignment: spec does not decode", "group", as.Group, "err", err)
		return nil, err
	}
	m, err := member.New(member.Config{Spec: sp, Self: a.id.AgentID, KV: bus.GroupKV{Conn: a.nc, Bucket: as.Bucket,
		Poll: time.Duration(sp.HeartbeatInterval) * time.Millisecond},
		Logger: a.log.With("component", "failover"), Report: a.failoverEvent, Policy: a.policy})
	if err != nil {
		a.log.Error("failover assignment refused; this agent stays out of the group", "group", as.Group, "err", err)
		return nil, err
	}
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ms := &membership{a: as, m: m, cancel: cancel, started: make(chan struct{})}
	a.log.Info("failover membership starts", "group", as.Group, "bucket", as.Bucket)
	go func() {
		defer close(ms.started)
		_ = m.Start(mctx)
	}()
	return ms, nil
}

// failoverRefused records that the agent's policy refused a hook of a group as a
// failover.policy.refused event naming the hook and the rule: the agent does not run the
// group's member.
func (a *Agent) failoverRefused(ref *member.HookRefused) {
	group := ref.Group
	extra, err := json.Marshal(map[string]string{"group": group, "hook": ref.Hook, "rule": ref.Refusal.Rule,
		"policy": ref.Refusal.Policy, "policy_digest": a.policy.Digest()})
	if err != nil {
		return
	}
	e := wire.NewEvent(wire.AgentSource(a.id.AgentID), wire.EventFailoverPolicyRefused, wire.SeverityError, wire.EventData{
		AgentID: a.id.AgentID, Message: "failover group " + group + ": hook " + ref.Hook + " refused by the agent policy; this agent does not join the group",
		Error: ref.Error(), Extra: extra})
	e.Subject = "failovergroup/" + group
	_ = a.record(context.Background(), e)
}

// stopMember stops a membership: gracefully (a primary with handoverOnStop hands over) within
// the group's failover timeout, then by cancelling what is left.
func (a *Agent) stopMember(ms *membership) {
	if ms == nil {
		return
	}
	select {
	case <-ms.started:
		sp, _ := spec.SpecOf(wire.FailoverGroup{Name: ms.a.Group, Spec: ms.a.Spec})
		sctx, cancel := context.WithTimeout(context.Background(), time.Duration(sp.FailoverTimeout)*time.Millisecond+5*time.Second)
		_ = ms.m.Stop(sctx)
		cancel()
	default:
	}
	ms.cancel()
	<-ms.started
}

// failoverEvent records a member's transition or hook result as a failover.transition event.
func (a *Agent) failoverEvent(t wire.FailoverTransition) {
	extra, err := json.Marshal(t)
	if err != nil {
		return
	}
	sev := wire.SeverityInfo
	if t.HookResult == "failed" || t.HookResult == "timed_out" || t.HookResult == "refused" || t.To == "fence_failed" {
		sev = wire.SeverityError
	}
	msg := "failover group " + t.Group + ": " + t.From + " → " + t.To + ": " + t.Reason
	if t.Hook != "" {
		msg = "failover group " + t.Group + ": hook " + t.Hook + " " + t.HookResult
	}
	e := wire.NewEvent(wire.AgentSource(a.id.AgentID), wire.EventFailoverTransition, sev, wire.EventData{
		AgentID: a.id.AgentID, Message: msg, DurationMS: t.DurationMS, Extra: extra})
	e.Subject = "failovergroup/" + t.Group
	_ = a.record(context.Background(), e)
}
