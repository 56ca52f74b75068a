package ingest

import (
	"context"
	"fmt"
	"time"

	"godwit.dev/godwit/internal/store"
)

// agentState is what the ingester knows of one agent's agent_event_state rows, by migration
// ("" is the latest event overall). It is never ahead of SQL: rows enter it when loaded or
// after the transaction that wrote them has committed.
type agentState struct {
	latest map[string]store.EventState
}

// Rehydrate drops the cached derived state of agentID; its next event reloads it from SQL.
// Use it after the agent's rows were changed outside the ingest (a restore, a manual fix).
func (i *Ingester) Rehydrate(agentID string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	delete(i.agents, agentID)
}

// loadStates loads, with one store call, the state of every agent of the groups that the cache
// does not hold: after a start the first batch names most of the fleet, and one round trip per
// agent would keep the batch waiting.
func (i *Ingester) loadStates(ctx context.Context, groups []group) error {
	var missing []string
	seen := map[string]bool{}
	i.mu.Lock()
	for _, g := range groups {
		a := g[0].agent
		if a == "" || seen[a] {
			continue
		}
		seen[a] = true
		if _, ok := i.agents[a]; !ok {
			missing = append(missing, a)
		}
	}
	i.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	rows, err := i.cfg.Store.AgentEventStates(ctx, missing)
	if err != nil {
		return fmt.Errorf("load event state of %d agents: %w", len(missing), err)
	}
	loaded := make(map[string]*agentState, len(missing))
	for _, a := range missing {
		loaded[a] = &agentState{latest: map[string]store.EventState{}}
	}
	for _, r := range rows {
		if st := loaded[r.AgentID]; st != nil {
			st.latest[r.Migration] = r
		}
	}
	i.mu.Lock()
	for a, st := range loaded {
		if _, ok := i.agents[a]; !ok {
			i.agents[a] = st
		}
	}
	i.mu.Unlock()
	i.m.rehydrations.Add(float64(len(missing)))
	i.log.Debug("ingest: agent state loaded from the store", "agents", len(missing), "rows", len(rows))
	return nil
}

type stateKey struct{ agent, migration string }

// advancing returns the state rows the groups move forward: per agent, the latest event overall
// and per migration, where it is newer than what is known.
func (i *Ingester) advancing(ctx context.Context, groups []group) ([]store.EventState, error) {
	if err := i.loadStates(ctx, groups); err != nil {
		return nil, err
	}
	next := map[stateKey]store.EventState{}
	var order []stateKey
	for _, g := range groups {
		it := g[0]
		if it.agent == "" {
			continue
		}
		i.mu.Lock()
		st := i.agents[it.agent]
		i.mu.Unlock()
		if st == nil {
			// Dropped by Rehydrate since loadStates: nothing is known, so every row is written;
			// the store's conditional upsert keeps the newest.
			st = &agentState{latest: map[string]store.EventState{}}
		}
		ev := it.ev
		cand := store.EventState{AgentID: it.agent, LastEventID: ev.ID, LastType: ev.Type,
			LastSeverity: ev.Severity, LastTime: ev.Time}
		migrations := []string{""}
		if ev.Data.Migration != "" {
			migrations = append(migrations, ev.Data.Migration)
		}
		for _, mig := range migrations {
			k := stateKey{it.agent, mig}
			cand.Migration = mig
			cur, pending := next[k]
			if !pending {
				i.mu.Lock()
				cur, pending = st.latest[mig]
				i.mu.Unlock()
				if !pending || newer(cand, cur) {
					order = append(order, k)
					next[k] = cand
				}
				continue
			}
			if newer(cand, cur) {
				next[k] = cand
			}
		}
	}
	out := make([]store.EventState, 0, len(order))
	for _, k := range order {
		out = append(out, next[k])
	}
	return out, nil
}

// advanced records committed rows in the cache. An agent dropped by Rehydrate meanwhile stays
// dropped.
func (i *Ingester) advanced(rows []store.EventState) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, r := range rows {
		st, ok := i.agents[r.AgentID]
		if !ok {
			continue
		}
		if cur, ok := st.latest[r.Migration]; !ok || newer(r, cur) {
			st.latest[r.Migration] = r
		}
	}
}

// newer orders state rows as the store's conditional upsert does: by time at the store's
// precision (microseconds), then by event id.
func newer(a, b store.EventState) bool {
	ta, tb := a.LastTime.Truncate(time.Microsecond), b.LastTime.Truncate(time.Microsecond)
	if !ta.Equal(tb) {
		return ta.After(tb)
	}
	return a.LastEventID > b.LastEventID
}
