package liveness

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// countingStore is the real store, with what liveness reads and writes counted.
type countingStore struct {
	store.Store
	mu      sync.Mutex
	lists   int
	gets    map[string]int              // agent rows read one by one
	batches int                         // UpdateLiveness calls with at least one row
	rows    map[string][]store.Liveness // per agent, every row written
}

func (s *countingStore) ListAgents(ctx context.Context) ([]wire.Agent, error) {
	s.mu.Lock()
	s.lists++
	s.mu.Unlock()
	return s.Store.ListAgents(ctx)
}

func (s *countingStore) GetAgent(ctx context.Context, id string) (wire.Agent, error) {
	s.mu.Lock()
	s.gets[id]++
	s.mu.Unlock()
	return s.Store.GetAgent(ctx, id)
}

func (s *countingStore) UpdateLiveness(ctx context.Context, updates []store.Liveness) error {
	if err := s.Store.UpdateLiveness(ctx, updates); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(updates) > 0 {
		s.batches++
	}
	for _, u := range updates {
		s.rows[u.AgentID] = append(s.rows[u.AgentID], u)
	}
	return nil
}

func (s *countingStore) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists, s.gets, s.batches, s.rows = 0, map[string]int{}, 0, map[string][]store.Liveness{}
}

func (s *countingStore) written(id string) []store.Liveness {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rows[id]
}

// Liveness writes what changed, not every agent every tick: each change of status once, and the
// last-seen times of agents that keep heartbeating in batches, at most one per agent per
// LastSeenEvery of store time. The agents are read from SQL once per run; an agent enrolled since
// is read alone, when it first heartbeats.
func TestWritesTransitionsAndBoundedLastSeen(t *testing.T) {
	t.Parallel()
	const n = 40
	f := newFleet(t, n)
	cs := &countingStore{Store: f.store}
	cs.reset()
	f.store = cs
	c := f.controller()
	f.store = cs.Store // what the test reads is not counted
	all := make([]int, n)
	for i := range all {
		all[i] = i + 1
	}
	ctx := context.Background()

	// Ten minutes of heartbeats every 5 s (120 ticks): each agent goes online once, then its
	// last-seen time is written every LastSeenEvery (30 s), all agents in the same batch.
	f.run(c, 10*time.Minute, all...)
	if cs.lists != 1 {
		t.Fatalf("agents listed %d times over 120 ticks, want once (the run's index)", cs.lists)
	}
	maxRows := 1 + int(10*time.Minute/DefaultLastSeenEvery)
	for i, a := range f.agents {
		rows := cs.written(a.ID)
		if len(rows) == 0 || rows[0].Status != wire.StatusOnline {
			t.Fatalf("agent-%d: first write %+v, want it online", i+1, rows)
		}
		if len(rows) > maxRows {
			t.Fatalf("agent-%d: %d writes in 10 minutes of heartbeats, want at most %d (one per %s)", i+1, len(rows), maxRows, DefaultLastSeenEvery)
		}
		for j := 1; j < len(rows); j++ {
			if rows[j].LastSeen.Sub(rows[j-1].LastSeen) < DefaultLastSeenEvery {
				t.Fatalf("agent-%d: write %d (last seen %s) follows one of last seen %s", i+1, j, rows[j].LastSeen, rows[j-1].LastSeen)
			}
			// A last-seen write carries the status, version and system description (the store
			// sets the status column only where the stored one differs), not the degraded
			// reason, which stays.
			if rows[j].Status != wire.StatusOnline || rows[j].Version != "test" || rows[j].Degraded != nil || rows[j].System == nil {
				t.Fatalf("agent-%d: last-seen write %d is %+v, want online, its version and system description, no degraded reason", i+1, j, rows[j])
			}
		}
		if a, err := f.store.GetAgent(ctx, a.ID); err != nil || a.Status != wire.StatusOnline {
			t.Fatalf("agent-%d: stored as %s (%v), want online", i+1, a.Status, err)
		}
		// Batched, not dropped: the stored time follows the heartbeats within LastSeenEvery.
		if lag := f.now.Sub(f.agentLastSeen(t, i)); lag > DefaultLastSeenEvery {
			t.Fatalf("agent-%d: stored last seen %s behind its heartbeats", i+1, lag)
		}
	}
	if cs.batches > maxRows {
		t.Fatalf("%d write batches, want the agents written together (at most %d)", cs.batches, maxRows)
	}

	// agent-1 falls silent for an hour: one write (offline, with its last heartbeat), then none.
	cs.reset()
	f.run(c, time.Hour, all[1:]...)
	rows := cs.written(f.agents[0].ID)
	if len(rows) != 1 || rows[0].Status != wire.StatusOffline {
		t.Fatalf("agent-1 silent for an hour: writes %+v, want one, offline", rows)
	}
	if got := f.agentLastSeen(t, 0); got.IsZero() || f.now.Sub(got) < time.Hour {
		t.Fatalf("agent-1's stored last seen %s is not its last heartbeat", got)
	}
	if cs.lists != 0 {
		t.Fatalf("agents listed %d times within the run", cs.lists)
	}

	// Nothing beats and nothing changes: a tick writes nothing.
	f.run(c, time.Hour)
	cs.reset()
	f.run(c, time.Minute)
	if cs.batches != 0 {
		t.Fatalf("%d writes while every agent stays offline", cs.batches)
	}

	// agent-1 is back: one write, online; the event says how long it was silent.
	f.run(c, 5*time.Second, 1)
	if rows := cs.written(f.agents[0].ID); len(rows) != 1 || rows[0].Status != wire.StatusOnline {
		t.Fatalf("agent-1 back: writes %+v, want one, online", rows)
	}
	msgs := f.messages()
	if last := msgs[len(msgs)-1]; !strings.Contains(last, "agent-1 is online again after 2h1m5s") {
		t.Fatalf("last event %q", last)
	}

	// An agent enrolled while the run goes on is read alone when it first heartbeats.
	cs.reset()
	tok := credential.New(credential.PrefixEnroll)
	if err := f.store.CreateEnrollToken(ctx, wire.EnrollToken{ID: "t2", MaxUses: 1, ExpiresAt: f.now.Add(time.Hour), CreatedAt: f.now}, credential.Hash(tok)); err != nil {
		t.Fatal(err)
	}
	late := wire.Agent{ID: fmt.Sprintf("0196a000-0000-7000-8000-%012d", n+1), Name: "late", EnrolledAt: f.now}
	if err := f.store.Enroll(ctx, credential.Hash(tok), f.now, late, "x"); err != nil {
		t.Fatal(err)
	}
	f.agents = append(f.agents, late)
	f.run(c, time.Minute, n+1)
	if a, _ := f.store.GetAgent(ctx, late.ID); a.Status != wire.StatusOnline {
		t.Fatalf("agent enrolled during the run: %s, want online", a.Status)
	}
	if cs.lists != 0 || cs.gets[late.ID] != 1 {
		t.Fatalf("agent enrolled during the run: %d listings and %v reads, want 0 and 1 of it", cs.lists, cs.gets)
	}
}

// The bound is a setting: with LastSeenEvery at 2 minutes an agent heartbeating for 10 minutes
// has its last-seen time written at most 5 times after it went online.
func TestLastSeenEverySetting(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1)
	cs := &countingStore{Store: f.store}
	cs.reset()
	c := New(Config{Store: cs, Logger: logging.Discard(), Interval: 5 * time.Second, Grace: 20 * time.Second, LastSeenEvery: 2 * time.Minute,
		Now: func(context.Context) (time.Time, error) { f.mu.Lock(); defer f.mu.Unlock(); return f.now, nil }})
	_ = c.begin(context.Background())
	f.run(c, 10*time.Minute, 1)
	rows := cs.written(f.agents[0].ID)
	if len(rows) < 2 || len(rows) > 1+5 {
		t.Fatalf("%d writes in 10 minutes with LastSeenEvery 2m, want 2..6", len(rows))
	}
}

// The index is what this run wrote, not the only writer of the rows: a replica that led before
// and has not yet stopped (paused past its lease, then blind to the bus) marks the agents it saw
// online unknown after the new leader read them, and writes an older heartbeat's version. The
// agent keeps heartbeating; within LastSeenEvery its row is right again, as it was when every
// last-seen write carried the status and version.
func TestRowRightAgainAfterAnotherWriter(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1)
	ctx := context.Background()
	id := f.agents[0].ID
	prev := f.controller()
	f.run(prev, time.Minute, 1)
	next := f.controller()
	f.run(next, 10*time.Second, 1)

	f.mu.Lock()
	f.blind = true
	f.mu.Unlock()
	prev.lastOK = time.Now().Add(-time.Hour)
	prev.tick(ctx)
	f.mu.Lock()
	f.blind = false
	f.mu.Unlock()
	if err := f.store.UpdateLiveness(ctx, []store.Liveness{{AgentID: id, Version: "0.9"}}); err != nil {
		t.Fatal(err)
	}
	if a, _ := f.store.GetAgent(ctx, id); a.Status != wire.StatusUnknown || a.Version != "0.9" {
		t.Fatalf("after the other replica's writes: %s %s, want unknown 0.9", a.Status, a.Version)
	}

	f.run(next, 2*DefaultLastSeenEvery, 1)
	if a, err := f.store.GetAgent(ctx, id); err != nil || a.Status != wire.StatusOnline || a.Version != "test" {
		t.Fatalf("heartbeating for %s since: stored %s, version %q (%v), want online, test", 2*DefaultLastSeenEvery, a.Status, a.Version, err)
	}
}
