package controller

import (
	"context"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// The controller judges reachability from an index of the agents it keeps in memory, not from a
// read of every agent row on every pass. The index is read from SQL once per run (at the first
// pass after taking the lead, and again after resyncEvery as a safety net: a revocation made
// through another hub replica reaches the leader as the agent going offline, since its
// connections are closed), and kept up to date from the stored changes of status liveness
// reports (AgentStatus) and the revocations this hub makes (AgentRevoked). A pass applies the
// changes reported since the last one: its cost grows with what changed, not with the fleet.

// agentEntry is what a pass needs of an agent.
type agentEntry struct {
	online  bool
	revoked bool
}

func (e agentEntry) reachable() bool { return e.online && !e.revoked }

// agentChange is one reported change, applied by the next pass.
type agentChange struct {
	id      string
	status  string // "" leaves the status as it is
	revoked bool
}

// AgentStatus tells the controller that an agent's stored liveness status changed (package
// liveness reports each change once it is written). It does not block.
func (c *Controller) AgentStatus(id, status string) {
	c.mu.Lock()
	c.agentChanges = append(c.agentChanges, agentChange{id: id, status: status})
	c.mu.Unlock()
	c.Nudge()
}

// AgentRevoked tells the controller that an agent was revoked (stored). It does not block.
func (c *Controller) AgentRevoked(id string) {
	c.mu.Lock()
	c.agentChanges = append(c.agentChanges, agentChange{id: id, revoked: true})
	c.mu.Unlock()
	c.Nudge()
}

// reachability brings the index up to date (reading it from SQL if this run has not yet, or a
// resync is due) and returns it, with the agents whose entry changed (reported, or found by a
// resync), or read set when this run read it for the first time (any agent may have changed).
// Only the pass's goroutine reads or changes the index.
func (c *Controller) reachability(ctx context.Context) (idx map[string]agentEntry, touched []string, read bool, err error) {
	c.mu.Lock()
	rebuild := c.agents == nil || c.resync
	c.resync = false
	if rebuild {
		// What is reported from here on is applied on top of what the read returns: a change
		// is reported after it is stored, so it is never older than the row read.
		c.agentChanges = nil
	}
	c.mu.Unlock()
	if rebuild {
		// The lean read: status and revocation are all the index keeps. A whole agent row
		// (system facts, labels of its own) held 278 MiB at 100,000 agents while it was built.
		rows, err := c.cfg.Store.AgentStates(ctx, nil)
		if err != nil {
			// The changes reported meanwhile were dropped above: the next pass reads it all.
			c.mu.Lock()
			c.resync = true
			c.mu.Unlock()
			return nil, nil, false, err
		}
		idx := make(map[string]agentEntry, len(rows))
		for _, a := range rows {
			idx[a.ID] = agentEntry{online: a.Status == wire.StatusOnline, revoked: a.Revoked}
		}
		if c.agents == nil {
			read = true
		} else {
			// A resync: what differs from the index kept is what changed unreported.
			for id, e := range idx {
				if old, ok := c.agents[id]; !ok || old != e {
					touched = append(touched, id)
				}
			}
			for id := range c.agents {
				if _, ok := idx[id]; !ok {
					touched = append(touched, id)
				}
			}
		}
		c.agents = idx
		c.log.Debug("migration controller: agent index read", "agents", len(idx))
	}
	c.mu.Lock()
	changes := c.agentChanges
	c.agentChanges = nil
	c.mu.Unlock()
	for _, ch := range changes {
		e := c.agents[ch.id]
		if ch.status != "" {
			e.online = ch.status == wire.StatusOnline
		}
		if ch.revoked {
			e.revoked = true
		}
		c.agents[ch.id] = e
		touched = append(touched, ch.id)
	}
	return c.agents, touched, read, nil
}

// resyncAgents drops the index: the next pass reads it again from SQL.
func (c *Controller) resyncAgents() {
	c.mu.Lock()
	c.resync = true
	c.mu.Unlock()
}

// takeObserved returns (and forgets) the agents whose observed state arrived since the last
// pass, and the migrations with an entry in them that is new or changed (see observe); it
// numbers the pass that takes them (Controller.seq).
func (c *Controller) takeObserved() (agents, migrations map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	agents, migrations = c.obsChanged, c.obsMigrations
	c.obsChanged, c.obsMigrations = map[string]bool{}, map[string]bool{}
	c.seq++
	return agents, migrations
}

// view is what a pass sees of the agents: their reachability from the index, and their observed
// state and whether they were heard from again, each read from the watcher's live maps the first
// time the pass asks and kept for the rest of the pass, so that a pass costs what it reads.
type view struct {
	c         *Controller
	agents    map[string]agentEntry
	recovered time.Time
	obs       map[string]seenState
}

type seenState struct {
	doc   wire.ObservedState
	ok    bool
	heard bool
}

func (v *view) reachable(id string) bool { return v.agents[id].reachable() }

func (v *view) seen(id string) seenState {
	if s, ok := v.obs[id]; ok {
		return s
	}
	v.c.mu.Lock()
	doc, ok := v.c.observed[id]
	at, heard := v.c.heardAt[id]
	v.c.mu.Unlock()
	s := seenState{doc: doc, ok: ok, heard: heard && !at.Before(v.recovered)}
	v.obs[id] = s
	return s
}
