package failover

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/manifest"
	"godwit.dev/godwit/internal/wire"
)

// Kind is the kind of a failover group document (apiVersion godwit.dev/v1).
const Kind = "FailoverGroup"

// Spec defaults and limits.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultHeartbeatTimeout  = 2 * time.Second
	DefaultFailureThreshold  = 3
	DefaultFailoverTimeout   = 15 * time.Second
	DefaultSafetyMargin      = 3 * time.Second
	DefaultRecoveryThreshold = 3
	// MaxMembers bounds a group: every member watches every other's key.
	MaxMembers = 16
	// MaxPriority bounds a member's priority; 0 is the lowest priority that may still promote.
	MaxPriority = 1000
	// MaxSpecBytes bounds a failover group document.
	MaxSpecBytes = 64 << 10
	// MaxHookTimeout bounds every hook's timeout.
	MaxHookTimeout = time.Hour
)

var kind = manifest.Kind{Name: Kind, MaxBytes: MaxSpecBytes}

// Spec is a parsed failover group document.
//
//	apiVersion: godwit.dev/v1
//	kind: FailoverGroup
//	metadata: {name: pg-main}
//	spec:
//	  members:                       # each an agent id or a selector, not both; an agent taken in by two entries is refused
//	    - {agent: 0f0e…, priority: 100}
//	    - {selector: {matchLabels: {site: b, role: db}}, priority: 50, noFailover: false}
//	  heartbeatInterval: 1s          # between two heartbeats of a member
//	  heartbeatTimeout: 2s           # deadline of one heartbeat write
//	  failureThreshold: 3            # heartbeat or health-check failures in a row: the primary fences
//	  failoverTimeout: 15s           # a replica promotes after seeing the primary's record unchanged this long
//	  safetyMargin: 3s               # failoverTimeout > heartbeatTimeout × failureThreshold + safetyMargin
//	  recoveryThreshold: 3           # successes in a row to leave fenced (or failed)
//	  maxLagOnFailover: 0            # a replica reporting more lag than this does not promote; 0: no limit
//	  handoverOnStop: true           # a primary that is stopped hands over to the best replica
//	  hooks:
//	    healthCheck: {command: "pg_isready -q", timeout: 2s}
//	    onPromote: {command: "pg_ctl promote -D ...", timeout: 60s}
//	    onFence: {command: "pg_ctl stop -m fast -D ...", timeout: 2s}   # at most safetyMargin
//	    onDemote: {command: "./refollow.sh", timeout: 10m}
type Spec struct {
	APIVersion string
	Kind       string
	manifest.Metadata
	Members           []Member
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	FailureThreshold  int
	FailoverTimeout   time.Duration
	SafetyMargin      time.Duration
	RecoveryThreshold int
	MaxLagOnFailover  int
	HandoverOnStop    *bool
	Hooks             Hooks

	lines manifest.Lines
}

// Member names one agent by id, or the agents a selector matches, with their eligibility.
type Member struct {
	Agent    string
	Selector manifest.LabelSelector
	// Priority orders candidates: among eligible replicas the highest priority promotes first
	// (the others wait one heartbeat interval per step of rank).
	Priority int
	// NoFailover: the member is never promoted (Patroni's nofailover tag).
	NoFailover *bool
}

// Hooks are the commands a member runs on its node. Each has a required timeout: a hook that
// hangs is killed at it and counts as failed.
type Hooks struct {
	HealthCheck Hook
	OnPromote   Hook
	OnFence     Hook
	OnDemote    Hook
}

// Hook is one command and its timeout.
type Hook struct {
	Command string
	Timeout time.Duration
}

// Set reports whether the hook has a command.
func (h Hook) Set() bool { return strings.TrimSpace(h.Command) != "" }

// Parse reads one failover group document strictly (manifest.Kind.Decode: unknown fields, wrong
// shapes, aliases and a second document are errors naming the field and its line) and fills the
// defaults. Call Validate next.
func Parse(data []byte) (*Spec, error) {
	s := &Spec{HeartbeatInterval: DefaultHeartbeatInterval, HeartbeatTimeout: DefaultHeartbeatTimeout,
		FailureThreshold: DefaultFailureThreshold, FailoverTimeout: DefaultFailoverTimeout,
		SafetyMargin: DefaultSafetyMargin, RecoveryThreshold: DefaultRecoveryThreshold}
	hook := func(name string, h *Hook) manifest.Field {
		return manifest.Object(name, manifest.String("command", &h.Command), manifest.Duration("timeout", &h.Timeout))
	}
	lines, err := kind.Decode(data, &s.Metadata,
		manifest.List("members", func(v manifest.Value) {
			var m Member
			v.Mapping(
				manifest.String("agent", &m.Agent),
				manifest.Selector("selector", &m.Selector),
				manifest.Int("priority", &m.Priority),
				manifest.Bool("noFailover", &m.NoFailover),
			)
			s.Members = append(s.Members, m)
		}),
		manifest.Duration("heartbeatInterval", &s.HeartbeatInterval),
		manifest.Duration("heartbeatTimeout", &s.HeartbeatTimeout),
		manifest.Int("failureThreshold", &s.FailureThreshold),
		manifest.Duration("failoverTimeout", &s.FailoverTimeout),
		manifest.Duration("safetyMargin", &s.SafetyMargin),
		manifest.Int("recoveryThreshold", &s.RecoveryThreshold),
		manifest.Int("maxLagOnFailover", &s.MaxLagOnFailover),
		manifest.Bool("handoverOnStop", &s.HandoverOnStop),
		manifest.Object("hooks",
			hook("healthCheck", &s.Hooks.HealthCheck),
			hook("onPromote", &s.Hooks.OnPromote),
			hook("onFence", &s.Hooks.OnFence),
			hook("onDemote", &s.Hooks.OnDemote),
		),
	)
	if err != nil {
		return nil, err
	}
	s.APIVersion, s.Kind, s.lines = manifest.APIVersion, Kind, lines
	return s, nil
}

// FenceDeadline is how long after its last successful heartbeat was sent a primary that can no
// longer write its heartbeat has fenced itself at the latest: heartbeatTimeout × failureThreshold.
func (s *Spec) FenceDeadline() time.Duration {
	return s.HeartbeatTimeout * time.Duration(s.FailureThreshold)
}

// Validate checks the spec's semantics: name, members, timings and the timing rule, hooks. Whether
// the members exist and belong to no other group is for the caller to check (it needs the store).
func (s *Spec) Validate() error {
	r := manifest.Report{Lines: s.lines}
	r.Header(Kind, s.APIVersion, s.Kind, s.Metadata)
	switch {
	case len(s.Members) == 0:
		r.Fail("spec.members", "is required: at least one agent id or selector (a group needs two agents to fail over)")
	case len(s.Members) > MaxMembers:
		r.Fail("spec.members", "has %d entries, at most %d are allowed", len(s.Members), MaxMembers)
	}
	seen := map[string]int{}
	for i, m := range s.Members {
		p := fmt.Sprintf("spec.members[%d]", i)
		switch {
		case m.Agent != "" && !m.Selector.Empty():
			r.Fail(p, "has both agent and selector: give one")
		case m.Agent == "" && m.Selector.Empty():
			r.Fail(p, "needs agent (an agent id) or selector")
		case m.Agent != "":
			if !bus.ValidAgentID(m.Agent) {
				r.Fail(p+".agent", "%q is not an agent id (a lower-case UUID, as `godwit get agents -o wide` shows)", m.Agent)
			} else if j, dup := seen[m.Agent]; dup {
				r.Fail(p+".agent", "agent %s is already spec.members[%d]", m.Agent, j)
			} else {
				seen[m.Agent] = i
			}
		default:
			r.Selector(p+".selector", m.Selector)
		}
		if m.Priority < 0 || m.Priority > MaxPriority {
			r.Fail(p+".priority", "must be between 0 and %d, not %d", MaxPriority, m.Priority)
		}
	}
	r.Within("spec.heartbeatInterval", s.HeartbeatInterval, 50*time.Millisecond, time.Minute)
	r.Within("spec.heartbeatTimeout", s.HeartbeatTimeout, 50*time.Millisecond, time.Minute)
	if s.HeartbeatInterval > s.HeartbeatTimeout {
		r.Fail("spec.heartbeatInterval", "must be at most heartbeatTimeout (%s), not %s: failureThreshold attempts must fit in heartbeatTimeout × failureThreshold",
			manifest.FormatDuration(s.HeartbeatTimeout), manifest.FormatDuration(s.HeartbeatInterval))
	}
	if s.FailureThreshold < 1 || s.FailureThreshold > 100 {
		r.Fail("spec.failureThreshold", "must be between 1 and 100, not %d", s.FailureThreshold)
	}
	if s.RecoveryThreshold < 1 || s.RecoveryThreshold > 100 {
		r.Fail("spec.recoveryThreshold", "must be between 1 and 100, not %d", s.RecoveryThreshold)
	}
	r.Within("spec.safetyMargin", s.SafetyMargin, 50*time.Millisecond, time.Hour)
	r.Within("spec.failoverTimeout", s.FailoverTimeout, 100*time.Millisecond, 24*time.Hour)
	if s.FailureThreshold >= 1 && s.FailoverTimeout > 0 && s.SafetyMargin > 0 {
		if floor := s.FenceDeadline() + s.SafetyMargin; s.FailoverTimeout <= floor {
			r.Fail("spec.failoverTimeout", "must be longer than heartbeatTimeout × failureThreshold + safetyMargin = %s × %d + %s = %s, not %s: the primary must have fenced itself before a replica may promote",
				manifest.FormatDuration(s.HeartbeatTimeout), s.FailureThreshold, manifest.FormatDuration(s.SafetyMargin),
				manifest.FormatDuration(floor), manifest.FormatDuration(s.FailoverTimeout))
		}
	}
	if s.MaxLagOnFailover < 0 {
		r.Fail("spec.maxLagOnFailover", "must be 0 (no limit) or a positive lag, not %d", s.MaxLagOnFailover)
	}
	for _, h := range []struct {
		name     string
		hook     Hook
		required bool
	}{
		{"healthCheck", s.Hooks.HealthCheck, false},
		{"onPromote", s.Hooks.OnPromote, true},
		{"onFence", s.Hooks.OnFence, true},
		{"onDemote", s.Hooks.OnDemote, false},
	} {
		p := "spec.hooks." + h.name
		switch {
		case !h.hook.Set() && h.required:
			r.Fail(p+".command", "is required: the command a member runs %s", hookPurpose[h.name])
		case !h.hook.Set() && h.hook.Timeout != 0:
			r.Fail(p+".command", "is required with a timeout")
		case h.hook.Set():
			r.Command(p+".command", h.hook.Command)
			if h.hook.Timeout == 0 {
				r.Fail(p+".timeout", "is required: a hook that hangs is killed at its timeout")
			} else {
				r.Within(p+".timeout", h.hook.Timeout, 100*time.Millisecond, MaxHookTimeout)
			}
		}
	}
	if t := s.Hooks.OnFence.Timeout; t > 0 && s.SafetyMargin > 0 && t > s.SafetyMargin {
		r.Fail("spec.hooks.onFence.timeout", "must be at most safetyMargin (%s), not %s: a fence must have ended before a replica may promote",
			manifest.FormatDuration(s.SafetyMargin), manifest.FormatDuration(t))
	}
	if t := s.Hooks.HealthCheck.Timeout; t > 0 && s.HeartbeatTimeout > 0 && t > s.HeartbeatTimeout {
		r.Fail("spec.hooks.healthCheck.timeout", "must be at most heartbeatTimeout (%s), not %s: a health check runs once per heartbeat",
			manifest.FormatDuration(s.HeartbeatTimeout), manifest.FormatDuration(t))
	}
	return r.Err()
}

var hookPurpose = map[string]string{
	"onPromote": "when it becomes primary",
	"onFence":   "to stop serving as primary (stop the service or make it read-only)",
}

// Handover reports spec.handoverOnStop (default true).
func (s *Spec) Handover() bool { return s.HandoverOnStop == nil || *s.HandoverOnStop }

// Eligible reports whether the member may be promoted.
func (m Member) Eligible() bool { return m.NoFailover == nil || !*m.NoFailover }

// Canonical is the spec with its defaults, in a fixed shape: what the hub stores and serves, what
// agents read, and what the hash covers.
type Canonical struct {
	Name              string                   `json:"name"`
	Description       string                   `json:"description,omitempty"`
	Members           []CanonicalMember        `json:"members"`
	HeartbeatInterval int64                    `json:"heartbeatIntervalMS"`
	HeartbeatTimeout  int64                    `json:"heartbeatTimeoutMS"`
	FailureThreshold  int                      `json:"failureThreshold"`
	FailoverTimeout   int64                    `json:"failoverTimeoutMS"`
	SafetyMargin      int64                    `json:"safetyMarginMS"`
	RecoveryThreshold int                      `json:"recoveryThreshold"`
	MaxLagOnFailover  int                      `json:"maxLagOnFailover"`
	HandoverOnStop    bool                     `json:"handoverOnStop"`
	Hooks             map[string]CanonicalHook `json:"hooks"`
	// Resolved are the member agents with their settings, as the hub resolved the entries when
	// it applied the group (Spec.Resolve); absent from a document's own canonical form. The hash
	// covers it: an agent whose settings change restarts its membership.
	Resolved []Settings `json:"resolved,omitempty"`
}

// CanonicalMember is one member entry.
type CanonicalMember struct {
	Agent      string                  `json:"agent,omitempty"`
	Selector   *manifest.LabelSelector `json:"selector,omitempty"`
	Priority   int                     `json:"priority"`
	NoFailover bool                    `json:"noFailover"`
}

// CanonicalHook is one hook.
type CanonicalHook struct {
	Command   string `json:"command"`
	TimeoutMS int64  `json:"timeoutMS"`
}

// Canonical returns the canonical form.
func (s *Spec) Canonical() Canonical {
	c := Canonical{Name: s.Name, Description: s.Description, HeartbeatInterval: s.HeartbeatInterval.Milliseconds(),
		HeartbeatTimeout: s.HeartbeatTimeout.Milliseconds(), FailureThreshold: s.FailureThreshold,
		FailoverTimeout: s.FailoverTimeout.Milliseconds(), SafetyMargin: s.SafetyMargin.Milliseconds(),
		RecoveryThreshold: s.RecoveryThreshold, MaxLagOnFailover: s.MaxLagOnFailover, HandoverOnStop: s.Handover(),
		Hooks: map[string]CanonicalHook{}, Members: []CanonicalMember{}}
	for _, m := range s.Members {
		cm := CanonicalMember{Agent: m.Agent, Priority: m.Priority, NoFailover: !m.Eligible()}
		if m.Agent == "" {
			sel := m.Selector.Canonical()
			cm.Selector = &sel
		}
		c.Members = append(c.Members, cm)
	}
	for name, h := range map[string]Hook{"healthCheck": s.Hooks.HealthCheck, "onPromote": s.Hooks.OnPromote,
		"onFence": s.Hooks.OnFence, "onDemote": s.Hooks.OnDemote} {
		if h.Set() {
			c.Hooks[name] = CanonicalHook{Command: h.Command, TimeoutMS: h.Timeout.Milliseconds()}
		}
	}
	return c
}

// Hash is the hex SHA-256 of the canonical form (manifest.Hash).
func (s *Spec) Hash() string { return s.Canonical().Hash() }

// Hash is the hex SHA-256 of the canonical form (manifest.Hash), resolution included.
func (c Canonical) Hash() string { return manifest.Hash(c) }

// Warnings are worth showing when the spec is applied.
func (s *Spec) Warnings() []string {
	var out []string
	if !s.Hooks.HealthCheck.Set() {
		out = append(out, "no healthCheck hook: a primary is judged only by its heartbeats, and lag is not reported")
	}
	if !s.Hooks.OnDemote.Set() {
		out = append(out, "no onDemote hook: a returning old primary joins as replica without re-following its new primary")
	}
	return out
}

// Document writes a canonical spec out as a FailoverGroup document (to marshal as YAML or JSON):
// what `godwit get failovergroup G -o yaml` prints, and what applies back unchanged.
func Document(c Canonical) map[string]any {
	ms := func(v int64) string { return manifest.FormatDuration(time.Duration(v) * time.Millisecond) }
	members := []map[string]any{}
	for _, m := range c.Members {
		e := map[string]any{"priority": m.Priority, "noFailover": m.NoFailover}
		if m.Agent != "" {
			e["agent"] = m.Agent
		}
		if m.Selector != nil {
			exprs := []map[string]any{}
			for _, r := range m.Selector.MatchExpressions {
				x := map[string]any{"key": r.Key, "operator": string(r.Operator)}
				if r.Values != nil {
					x["values"] = r.Values
				}
				exprs = append(exprs, x)
			}
			e["selector"] = map[string]any{"matchLabels": m.Selector.MatchLabels, "matchExpressions": exprs}
		}
		members = append(members, e)
	}
	hooks := map[string]any{}
	for name, h := range c.Hooks {
		hooks[name] = map[string]any{"command": h.Command, "timeout": ms(h.TimeoutMS)}
	}
	meta := map[string]any{"name": c.Name}
	if c.Description != "" {
		meta["description"] = c.Description
	}
	return map[string]any{
		"apiVersion": manifest.APIVersion, "kind": Kind, "metadata": meta,
		"spec": map[string]any{
			"members": members, "heartbeatInterval": ms(c.HeartbeatInterval), "heartbeatTimeout": ms(c.HeartbeatTimeout),
			"failureThreshold": c.FailureThreshold, "failoverTimeout": ms(c.FailoverTimeout), "safetyMargin": ms(c.SafetyMargin),
			"recoveryThreshold": c.RecoveryThreshold, "maxLagOnFailover": c.MaxLagOnFailover, "handoverOnStop": c.HandoverOnStop,
			"hooks": hooks,
		},
	}
}

// Line returns the line a field path was read from (or its closest parent's), 0 when unknown:
// for errors about the document found outside Validate.
func (s *Spec) Line(path string) int { return s.lines.Of(path) }

// SpecOf decodes a stored group's canonical spec.
func SpecOf(g wire.FailoverGroup) (Canonical, error) {
	var c Canonical
	if err := json.Unmarshal(g.Spec, &c); err != nil {
		return c, fmt.Errorf("failover group %s: stored spec: %w", g.Name, err)
	}
	return c, nil
}
