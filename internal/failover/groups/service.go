// Package groups is the hub's side of failover groups: apply (validate, resolve members to
// enrolled agents, refuse an agent of another group naming the field, store), read, pause and
// resume, delete. The document itself is package failover's.
package groups

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"godwit.dev/godwit/internal/failover"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Publisher hands a group's canonical spec and pause to its members (the group's bucket); nil
// in a hub without a bus. Publish must be idempotent: Apply and Pause call it after every
// stored change, and a hub that starts calls it for every group.
type Publisher interface {
	Publish(ctx context.Context, g wire.FailoverGroup) error
}

// Service is the hub's side of failover groups: apply (validate, resolve members, store),
// read, pause and resume, delete. Every replica of the hub serves it; the store's versions make
// concurrent changes safe.
type Service struct {
	Store     store.Store
	Publisher Publisher        // nil: nothing is published
	Now       func() time.Time // nil: time.Now
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Apply parses, validates and stores a FailoverGroup document. Members are resolved to enrolled,
// unrevoked agents (a selector to the agents it matches now); an unknown agent, a selector that
// matches nothing, an agent named twice and an agent of another group are refused naming the
// member's field, and nothing is stored. A dry run stops before storing (outcome "valid").
func (s *Service) Apply(ctx context.Context, data []byte, dryRun bool) (wire.FailoverApplyResult, error) {
	sp, err := failover.Parse(data)
	if err != nil {
		return wire.FailoverApplyResult{}, err
	}
	if err := sp.Validate(); err != nil {
		return wire.FailoverApplyResult{}, err
	}
	resolved, err := s.resolve(ctx, sp)
	if err != nil {
		return wire.FailoverApplyResult{}, err
	}
	members := make([]string, 0, len(resolved))
	for _, m := range resolved {
		members = append(members, m.Agent)
	}
	res := wire.FailoverApplyResult{Name: sp.Name, Warnings: sp.Warnings()}
	if len(members) < 2 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the group has %d member: there is no replica to fail over to", len(members)))
	}
	c := sp.Canonical()
	c.Resolved = resolved
	spec, err := json.Marshal(c)
	if err != nil {
		return res, err
	}
	existing, err := s.Store.GetFailoverGroup(ctx, sp.Name)
	found := err == nil
	if err != nil && !errors.Is(err, fault.ErrNotFound) {
		return res, err
	}
	now := s.now()
	g := wire.FailoverGroup{Name: sp.Name, Spec: spec, SpecHash: c.Hash(), Members: members, CreatedAt: now, UpdatedAt: now}
	if found {
		g.Version, g.CreatedAt, g.Paused, g.PauseReason = existing.Version, existing.CreatedAt, existing.Paused, existing.PauseReason
	}
	switch {
	case found && existing.SpecHash == g.SpecHash && slices.Equal(existing.Members, members):
		res.Outcome, res.Group = "unchanged", existing
		return res, nil
	case dryRun:
		res.Outcome, res.Group = "valid", g
		return res, nil
	}
	stored, err := s.Store.PutFailoverGroup(ctx, g)
	if err != nil {
		return res, err
	}
	res.Group, res.Outcome = stored, "created"
	if found {
		res.Outcome = "configured"
	}
	return res, s.publish(ctx, stored)
}

func (s *Service) publish(ctx context.Context, g wire.FailoverGroup) error {
	if s.Publisher == nil {
		return nil
	}
	if err := s.Publisher.Publish(ctx, g); err != nil {
		return fmt.Errorf("failover group %s is stored, but its members could not be told yet (the hub retries at its next start, or apply again): %w", g.Name, err)
	}
	return nil
}

// resolve resolves the members to enrolled, unrevoked agents with their settings
// (failover.Spec.Resolve), refusing an agent of another group.
func (s *Service) resolve(ctx context.Context, sp *failover.Spec) ([]failover.Settings, error) {
	agents, err := s.Store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	groups, err := s.Store.ListFailoverGroups(ctx)
	if err != nil {
		return nil, err
	}
	owner := map[string]string{}
	for _, g := range groups {
		if g.Name == sp.Name {
			continue
		}
		for _, id := range g.Members {
			owner[id] = g.Name
		}
	}
	var cands []failover.Candidate
	for _, a := range agents {
		if a.RevokedAt == nil {
			cands = append(cands, failover.Candidate{ID: a.ID, Labels: a.Labels})
		}
	}
	return sp.Resolve(cands, func(id string) string { return owner[id] })
}

// Get returns a stored group.
func (s *Service) Get(ctx context.Context, name string) (wire.FailoverGroup, error) {
	return s.Store.GetFailoverGroup(ctx, name)
}

// List returns every group by name.
func (s *Service) List(ctx context.Context) ([]wire.FailoverGroup, error) {
	return s.Store.ListFailoverGroups(ctx)
}

// Delete removes a group; its members stop acting on it when they see their assignment gone.
func (s *Service) Delete(ctx context.Context, name string) error {
	if err := s.Store.DeleteFailoverGroup(ctx, name); err != nil {
		return err
	}
	return s.publish(ctx, wire.FailoverGroup{Name: name})
}

// maxPauseReason bounds the reason a group is paused with.
const maxPauseReason = 1024

// SetPaused sets or clears maintenance mode (no automatic failover while paused) and tells the
// members. It returns the group as stored.
func (s *Service) SetPaused(ctx context.Context, name string, paused bool, reason string) (wire.FailoverGroup, error) {
	// Shown with the group and stored: no control or bidirectional formatting characters, no
	// NUL (PostgreSQL cannot store one).
	if err := wire.CheckText("reason", reason, maxPauseReason); err != nil {
		return wire.FailoverGroup{}, err
	}
	for attempt := 1; ; attempt++ {
		g, err := s.Store.GetFailoverGroup(ctx, name)
		if err != nil {
			return g, err
		}
		if g.Paused == paused && (!paused || g.PauseReason == reason) {
			return g, s.publish(ctx, g)
		}
		g.Paused, g.PauseReason, g.UpdatedAt = paused, reason, s.now()
		if !paused {
			g.PauseReason = ""
		}
		stored, err := s.Store.PutFailoverGroup(ctx, g)
		if errors.Is(err, fault.ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return g, err
		}
		return stored, s.publish(ctx, stored)
	}
}

// Switcher asks a group's primary to hand over (Bus implements it).
type Switcher interface {
	Switchover(ctx context.Context, g wire.FailoverGroup, to string) (wire.FailoverSwitchoverResult, error)
}

// Switchover asks the group's current primary to fence and hand over to the member to: a
// planned switchover, with no failover timeout to wait. to must be an eligible member (not
// noFailover); a paused group switches over all the same (it is an operator's act).
func (s *Service) Switchover(ctx context.Context, name, to string) (wire.FailoverSwitchoverResult, error) {
	g, err := s.Store.GetFailoverGroup(ctx, name)
	if err != nil {
		return wire.FailoverSwitchoverResult{}, err
	}
	if !slices.Contains(g.Members, to) {
		return wire.FailoverSwitchoverResult{}, fault.Invalid("to", "%q is not a member of failover group %s (members: %v)", to, name, g.Members)
	}
	c, err := failover.SpecOf(g)
	if err != nil {
		return wire.FailoverSwitchoverResult{}, err
	}
	if m, ok := c.SettingsOf(to); ok && !m.Eligible() {
		entry := "a selector entry"
		if m.Entry >= 0 {
			entry = fmt.Sprintf("spec.members[%d]", m.Entry)
		}
		return wire.FailoverSwitchoverResult{}, fault.Invalid("to", "member %s is noFailover (through %s): it never becomes primary", to, entry)
	}
	sw, ok := s.Publisher.(Switcher)
	if !ok {
		return wire.FailoverSwitchoverResult{}, fmt.Errorf("switchover needs the bus: %w", fault.ErrUnavailable)
	}
	return sw.Switchover(ctx, g, to)
}
