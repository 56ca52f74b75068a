package wire

import (
	"encoding/json"
	"time"
)

// FailoverGroup is the hub's record of a failover group.
type FailoverGroup struct {
	Name string `json:"name"`
	// Spec is the canonical form of the applied document (failover.Canonical, JSON), with the
	// members' settings as resolved when the group was applied (its "resolved" field).
	Spec     json.RawMessage `json:"spec"`
	SpecHash string          `json:"spec_hash"`
	// Members are the member agents' ids in the order of the spec (selectors resolved when the
	// group was applied).
	Members []string `json:"members"`
	// Paused is maintenance mode: no automatic failover while it is set.
	Paused      bool      `json:"paused"`
	PauseReason string    `json:"pause_reason,omitempty"`
	Version     int64     `json:"version"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// FailoverApplyResult answers POST /api/v1/failovergroups.
type FailoverApplyResult struct {
	Name     string        `json:"name"`
	Outcome  string        `json:"outcome"` // created | configured | unchanged | valid (dry run)
	Group    FailoverGroup `json:"group"`
	Warnings []string      `json:"warnings,omitempty"`
}

// FailoverTransition is the data of a failover.transition event: a member's state machine moved,
// or one of its hooks ended (Hook set, From and To equal).
type FailoverTransition struct {
	Group  string `json:"group"`
	Member string `json:"member"`
	Role   string `json:"role"` // primary | replica
	From   string `json:"from"`
	To     string `json:"to"`
	Epoch  uint64 `json:"epoch"`
	Reason string `json:"reason"`
	// Hook names the hook whose result this is (onFence, ...), with its outcome.
	Hook       string `json:"hook,omitempty"`
	HookResult string `json:"hook_result,omitempty"` // succeeded | failed | timed_out | cancelled | refused (by the agent policy; not run)
	DurationMS int64  `json:"duration_ms,omitempty"`
}

// FailoverPauseRequest is the optional body of POST /api/v1/failovergroups/{name}/pause.
type FailoverPauseRequest struct {
	Reason string `json:"reason,omitempty"`
}

// FailoverGroupDetail answers GET /api/v1/failovergroups/{name}: the group and the timeline of
// its members' transitions and hook results, newest first.
type FailoverGroupDetail struct {
	FailoverGroup
	Timeline []FailoverTimelineEntry `json:"timeline"`
}

// FailoverTimelineEntry is one event of the group's timeline: a failover.transition (a
// transition, or a hook result when Hook is set), or a failover.policy.refused — a member agent
// whose policy refused a hook of the group, and which so does not join it (Hook names the hook,
// HookResult is "refused", Rule and Policy name what refused it, Reason says it in words; no
// role, state or epoch).
type FailoverTimelineEntry struct {
	Time time.Time `json:"time"`
	// Event is the event type: failover.transition or failover.policy.refused.
	Event string `json:"event"`
	FailoverTransition
	Rule   string `json:"rule,omitempty"`
	Policy string `json:"policy,omitempty"`
}

// FailoverAssignment is the value of an agent's key in BucketFailover: the group it is a member
// of. The hub writes it when a group is applied, paused, resumed or deleted; an agent in no group
// has no key.
type FailoverAssignment struct {
	Group string `json:"group"`
	// Bucket is the group's KV bucket; the agent's NATS permissions name it, so an agent whose
	// bucket changes reconnects to get them.
	Bucket   string          `json:"bucket"`
	Spec     json.RawMessage `json:"spec"` // failover.Canonical
	SpecHash string          `json:"spec_hash"`
}

// FailoverSwitchoverRequest is the body of POST /api/v1/failovergroups/{name}/switchover.
type FailoverSwitchoverRequest struct {
	To string `json:"to"` // the member agent id to promote
}

// FailoverSwitchoverResult answers it: the request was written to the group's control key; the
// primary From of Epoch fences and hands over to To (watch the timeline).
type FailoverSwitchoverResult struct {
	Group string `json:"group"`
	From  string `json:"from"`
	To    string `json:"to"`
	Epoch uint64 `json:"epoch"`
}
