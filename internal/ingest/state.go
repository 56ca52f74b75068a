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

// loadStates loads, with one store call, the state of every agent of the candidates that the
// cache does not hold: after a start the first batch names most of the fleet, and one round
// trip per agent would keep the batch waiting.
func (i *Ingester) loadStates(ctx context.Context, cands []store.EventState) error {
	var missing []string
	seen := map[string]bool{}
	i.mu.Lock()
	for _, c := range cands {
		a := c.AgentID
		if seen[a] {
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

// candidates returns, per agent of the groups, its newest event overall and per migration, in
// the order the groups first name them. It reads no state, so it runs while the batch before is
// written.
func candidates(groups []group) []store.EventState {
	at := map[stateKey]int{}
	var out []store.EventState
	add := func(c store.EventState) {
		k := stateKey{c.AgentID, c.Migration}
		n, ok := at[k]
		switch {
		case !ok:
			at[k] = len(out)
			out = append(out, c)
		case newer(c, out[n]):
			out[n] = c
		}
	}
	for _, g := range groups {
		it := g[0]
		if it.agent == "" {
			continue
		}
		ev := it.ev
		cand := store.EventState{AgentID: it.agent, LastEventID: ev.ID, LastType: ev.Type,
			LastSeverity: ev.Severity, LastTime: ev.Time}
		add(cand)
		if ev.Data.Migration != "" {
			cand.Migration = ev.Data.Migration
			add(cand)
		}
	}
	return out
}

// advancing returns the candidates that move an agent's state forward: those newer than what
// is known, or of which nothing is known.
func (i *Ingester) advancing(ctx context.Context, cands []store.EventState) ([]store.EventState, error) {
	if err := i.loadStates(ctx, cands); err != nil {
		return nil, err
	}
	out := make([]store.EventState, 0, len(cands))
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, c := range cands {
		// An agent dropped by Rehydrate since loadStates: nothing is known, so its rows are
		// written; the store's conditional upsert keeps the newest.
		if st := i.agents[c.AgentID]; st != nil {
			if cur, ok := st.latest[c.Migration]; ok && !newer(c, cur) {
				continue
			}
		}
		out = append(out, c)
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
