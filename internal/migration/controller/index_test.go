package controller

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// countingStore counts the agent rows and the assignment reads that go through it.
type countingStore struct {
	store.Store
	agentRows   atomic.Int64 // rows returned by ListAgents, AgentStates and GetAgent
	wholeRows   atomic.Int64 // of which whole agent rows (ListAgents): a pass and the check read none
	assignReads atomic.Int64 // ListAssignments calls
	assignRows  atomic.Int64 // the assignment rows they returned
	savedRows   atomic.Int64 // assignment rows written by SaveMigration
}

func (s *countingStore) ListAgents(ctx context.Context) ([]wire.Agent, error) {
	as, err := s.Store.ListAgents(ctx)
	s.agentRows.Add(int64(len(as)))
	s.wholeRows.Add(int64(len(as)))
	return as, err
}

func (s *countingStore) AgentStates(ctx context.Context, ids []string) ([]store.AgentState, error) {
	as, err := s.Store.AgentStates(ctx, ids)
	s.agentRows.Add(int64(len(as)))
	return as, err
}

func (s *countingStore) GetAgent(ctx context.Context, id string) (wire.Agent, error) {
	a, err := s.Store.GetAgent(ctx, id)
	if err == nil {
		s.agentRows.Add(1)
	}
	return a, err
}

func (s *countingStore) SaveMigration(ctx context.Context, f store.Fence, m wire.Migration, as []wire.Assignment) error {
	err := s.Store.SaveMigration(ctx, f, m, as)
	if err == nil {
		s.savedRows.Add(int64(len(as)))
	}
	return err
}

func (s *countingStore) ListAssignments(ctx context.Context, m string) ([]wire.Assignment, error) {
	s.assignReads.Add(1)
	as, err := s.Store.ListAssignments(ctx, m)
	s.assignRows.Add(int64(len(as)))
	return as, err
}

// counted runs one pass and returns the agent rows and assignment reads it made (see also
// assignRows).
func (s *countingStore) counted(t *testing.T, c *Controller) (agentRows, assignReads int64) {
	t.Helper()
	s.agentRows.Store(0)
	s.assignReads.Store(0)
	s.assignRows.Store(0)
	if err := c.Pass(context.Background()); err != nil {
		t.Fatalf("Pass: %v", err)
	}
	return s.agentRows.Load(), s.assignReads.Load()
}

// A pass reads the agents from SQL once per run (the index), and from then on works from what
// changed: an agent's report, its going offline and coming back, cost no agent row, and a
// running migration's assignments are read again only after someone else wrote it; a finished
// migration with nothing left to send is not read at all until one of its agents reports; a
// restarted controller reads the index again, with what changed while no controller ran.
func TestPassWorksFromWhatChanged(t *testing.T) {
	t.Parallel()
	const n = 12
	b := setup(t, n)
	ctx := context.Background()
	cs := &countingStore{Store: b.store}
	cfg := b.c.cfg
	cfg.Store = cs
	b.c = New(cfg)
	if err := b.c.lead(ctx); err != nil {
		t.Fatal(err)
	}
	state := func(agent int) string {
		t.Helper()
		return b.latest(t, "m1")[fmt.Sprintf("agent-%d", agent)].State
	}
	b.apply(t, "m1", "    batchSize: 100%")
	cs.wholeRows.Store(0)
	if rows, reads := cs.counted(t, b.c); rows != n || reads != 1 || cs.assignRows.Load() != n {
		t.Fatalf("first pass of the run read %d agent rows and %d assignment rows in %d reads, want the index of %d and the %d assignments once",
			rows, cs.assignRows.Load(), reads, n, n)
	}
	// The index and the consistency check read what they need of an agent (id, status,
	// revocation), never whole rows: at 100,000 agents those held 278 MiB at once.
	if _, err := b.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if w := cs.wholeRows.Load(); w != 0 {
		t.Fatalf("the first pass and a check read %d whole agent rows, want none", w)
	}
	for i := 1; i <= n; i++ {
		b.report(t, i, "m1", aApplying, "")
	}
	if rows, reads := cs.counted(t, b.c); rows != 0 || reads != 0 || state(n) != aApplying {
		t.Fatalf("pass after %d reports: %d agent rows and %d assignment reads (want none), agent-%d %s", n, rows, reads, n, state(n))
	}
	b.report(t, 3, "m1", aSucceeded, "")
	if rows, reads := cs.counted(t, b.c); rows != 0 || reads != 0 || state(3) != aSucceeded {
		t.Fatalf("pass after one report: %d agent rows and %d assignment reads (want none), agent-3 %s", rows, reads, state(3))
	}
	// An operator's write moves the migration's version: the next pass reads its assignments
	// again, and the one after that does not.
	for _, act := range []wire.MigrationAction{wire.MigrationPause, wire.MigrationResume} {
		if _, err := b.c.Act(ctx, "m1", act, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, reads := cs.counted(t, b.c); reads != 1 {
		t.Fatalf("pass after an operator's pause and resume made %d assignment reads, want 1", reads)
	}
	if _, reads := cs.counted(t, b.c); reads != 0 {
		t.Fatalf("pass after that made %d assignment reads, want none", reads)
	}

	// Liveness reports agent-5 offline, then back: the pass follows without reading agents.
	b.setStatus(t, b.c, wire.StatusOffline, 5)
	if rows, _ := cs.counted(t, b.c); rows != 0 || state(5) != aUnreachable || state(6) != aApplying {
		t.Fatalf("after agent-5 went offline: %d agent rows read (want 0), agent-5 %s, agent-6 %s", rows, state(5), state(6))
	}
	b.setStatus(t, b.c, wire.StatusOnline, 5)
	if rows, _ := cs.counted(t, b.c); rows != 0 || state(5) != aApplying {
		t.Fatalf("after agent-5 came back: %d agent rows read (want 0), agent-5 %s", rows, state(5))
	}

	// While no controller runs, agent-7 goes offline (stored, nobody told). The next leader reads
	// the index again and sees it.
	if err := b.store.UpdateLiveness(ctx, []store.Liveness{{AgentID: b.agents[6].ID, Status: wire.StatusOffline}}); err != nil {
		t.Fatal(err)
	}
	next := New(cfg)
	if err := next.begin(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range b.agents { // the observed watcher's initial values
		b.c.mu.Lock()
		o, ok := b.c.observed[a.ID]
		b.c.mu.Unlock()
		if ok {
			next.ObserveForTest(o)
		}
	}
	b.c = next
	if rows, _ := cs.counted(t, b.c); rows != n || state(7) != aUnreachable || state(5) != aApplying {
		t.Fatalf("first pass after the restart: %d agent rows read (want %d), agent-7 %s, agent-5 %s", rows, n, state(7), state(5))
	}
	b.setStatus(t, b.c, wire.StatusOnline, 7)

	// Everyone finishes; then the finished migration costs nothing until an agent reports.
	for i := 1; i <= n; i++ {
		if i != 3 {
			b.report(t, i, "m1", aSucceeded, "")
		}
	}
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mSucceeded {
		t.Fatalf("migration %s after every agent succeeded (%s)", m.State, m.Reason)
	}
	for range 3 {
		if rows, reads := cs.counted(t, b.c); rows != 0 || reads != 0 {
			t.Fatalf("pass over a finished migration with nothing changed: %d agent rows, %d assignment reads; want none", rows, reads)
		}
	}
	// What agents send as a matter of course does not wake it: a report sent again as it was
	// (agents republish every minute, or after reconnecting), a report of another migration
	// beside it, a report without it (an agent drops a finished migration from its document).
	b.c.mu.Lock()
	o := b.c.observed[b.agents[0].ID]
	b.c.mu.Unlock()
	b.c.ObserveForTest(o)
	other := o
	other.AgentID = b.agents[1].ID
	other.Assignments = append([]wire.ObservedAssignment{{Migration: "m2", Attempt: 1, Generation: 1, Action: wire.ActionApply,
		State: aApplying}}, b.observedOf(t, b.agents[1].ID).Assignments...)
	b.c.ObserveForTest(other)
	b.c.ObserveForTest(wire.ObservedState{AgentID: b.agents[2].ID, Assignments: []wire.ObservedAssignment{}})
	if rows, reads := cs.counted(t, b.c); rows != 0 || reads != 0 {
		t.Fatalf("pass after agents repeated, added to and dropped from their reports of a finished migration: %d agent rows, %d assignment reads; want none", rows, reads)
	}
	// A changed entry for it wakes it: the pass reads its assignments once, and applies what
	// applies (a finished attempt's step is news, not a reason to run anything).
	changed := b.observedOf(t, b.agents[3].ID)
	changed.Assignments = slices.Clone(changed.Assignments)
	changed.Assignments[0].Error = "a note added after the fact"
	b.c.ObserveForTest(changed)
	if rows, reads := cs.counted(t, b.c); rows != 0 || reads != 1 {
		t.Fatalf("pass after an agent of a finished migration changed its report of it: %d agent rows, %d assignment reads; want 0 and 1", rows, reads)
	}
	if got := b.latest(t, "m1")["agent-4"].Error; got != "a note added after the fact" {
		t.Fatalf("agent-4's error %q after it reported a change; want the report applied", got)
	}
	if rows, reads := cs.counted(t, b.c); rows != 0 || reads != 0 {
		t.Fatalf("pass after that: %d agent rows, %d assignment reads; want none", rows, reads)
	}
}

// observedOf is the observed document the controller holds for an agent.
func (b *bundle) observedOf(t *testing.T, id string) wire.ObservedState {
	t.Helper()
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	o, ok := b.c.observed[id]
	if !ok {
		t.Fatalf("no observed document for %s", id)
	}
	return o
}

// Counting active time writes an in-flight assignment once per activeFlush of it, not on every
// pass; the deadline is judged from the time counted, stored or not, and a new leader starts
// from the stored time (its deadline comes later, never sooner).
func TestActiveTimeStoredInSteps(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.apply(t, "m1", "    batchSize: 1\n    onAgentFailure: leave")
	b.pass(t)
	b.report(t, 1, "m1", aApplying, "")
	b.pass(t)
	stored := func() int64 { t.Helper(); return b.latest(t, "m1")["agent-1"].ActiveMS }
	var seen []int64
	for range 25 {
		b.clock.Add(time.Second)
		b.pass(t)
		seen = append(seen, stored())
	}
	want := []int64{0, 0, 0, 0, 0, 0, 0, 0, 0, 10000}
	if !slices.Equal(seen[:10], want) || seen[19] != 20000 || seen[24] != 20000 {
		t.Fatalf("stored active time after each 1s pass: %v; want it written at 10s and 20s only", seen)
	}
	// The deadline counts the unsaved time: 1h minus 25s more counted, then 1s over it.
	b.clock.Add(time.Hour - 25*time.Second)
	b.pass(t)
	if a := b.latest(t, "m1")["agent-1"]; a.State != aApplying {
		t.Fatalf("at exactly the deadline: %s (%dms)", a.State, a.ActiveMS)
	}
	b.clock.Add(time.Second)
	b.pass(t)
	if a := b.latest(t, "m1")["agent-1"]; a.State != aTimedOut || a.ActiveMS != time.Hour.Milliseconds()+1000 {
		t.Fatalf("1s past the deadline: %s (%dms)", a.State, a.ActiveMS)
	}
}

// A pass over a running migration costs what changed: when k of its agents reported, it looks
// at the observed state of those k, renders their k desired documents and writes their k rows,
// not every agent's. Active time alone writes at most activeFlushRate rows a second, the longest
// unwritten first, so every assignment gets its turn.
func TestPassCostFollowsWhatChanged(t *testing.T) {
	t.Parallel()
	const n, k = 1200, 5
	b := setup(t, n)
	ctx := context.Background()
	cs := &countingStore{Store: b.store}
	cfg := b.c.cfg
	cfg.Store = cs
	b.c = New(cfg)
	if err := b.c.lead(ctx); err != nil {
		t.Fatal(err)
	}
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	report := func(i int, st string) {
		b.c.ObserveForTest(wire.ObservedState{AgentID: b.agents[i-1].ID, Assignments: []wire.ObservedAssignment{{
			Migration: "m1", Attempt: 1, Generation: 1, Action: wire.ActionApply, State: st, StepName: "one", Applied: []int{0}}}})
	}
	for i := 1; i <= n; i++ {
		report(i, aApplying)
	}
	b.pass(t)
	b.pass(t) // looks again at the agents the last pass wrote
	type cost struct{ observed, rendered, written int64 }
	counted := func() cost {
		t.Helper()
		cs.savedRows.Store(0)
		cs.counted(t, b.c)
		return cost{int64(b.c.stats.observed), int64(b.c.stats.rendered), cs.savedRows.Load()}
	}
	if got := counted(); got != (cost{}) {
		t.Fatalf("pass with nothing changed: %+v; want nothing looked at", got)
	}
	for i := 1; i <= k; i++ {
		report(i, aVerifying)
	}
	b.clock.Add(time.Second)
	if got, want := counted(), (cost{k, k, k}); got != want {
		t.Fatalf("pass after %d of %d agents reported: %+v; want %+v", k, n, got, want)
	}
	if st := b.latest(t, "m1")["agent-1"].State; st != aVerifying {
		t.Fatalf("agent-1 %s after it reported %s", st, aVerifying)
	}
	// The next pass looks again at the agents the last one wrote, and at nothing else.
	if got, want := counted(), (cost{observed: k}); got != want {
		t.Fatalf("pass after that: %+v; want %+v", got, want)
	}

	// An agent goes offline, reports while away (not news), and comes back: its report is
	// applied when it is reachable again, though it sent nothing new.
	b.setStatus(t, b.c, wire.StatusOffline, 10)
	b.pass(t)
	b.c.ObserveForTest(wire.ObservedState{AgentID: b.agents[9].ID, Assignments: []wire.ObservedAssignment{{
		Migration: "m1", Attempt: 1, Generation: 1, Action: wire.ActionApply, State: aVerifying, Step: 1, StepName: "two", Applied: []int{0, 1}}}})
	b.pass(t)
	if a := b.latest(t, "m1")["agent-10"]; a.State != aUnreachable || a.StepName != "one" {
		t.Fatalf("agent-10 %s at step %q while away; want %s at the step it reported before", a.State, a.StepName, aUnreachable)
	}
	b.setStatus(t, b.c, wire.StatusOnline, 10)
	b.pass(t)
	if a := b.latest(t, "m1")["agent-10"]; a.State != aVerifying || a.StepName != "two" || a.Applied != 2 {
		t.Fatalf("agent-10 %s at step %q (%d applied) once back; want %s at step two (2), as it reported while away", a.State, a.StepName, a.Applied, aVerifying)
	}
	b.pass(t)

	// An agent goes offline unreported: the index's resync finds it, and the pass looks at
	// that agent alone.
	if err := b.store.UpdateLiveness(ctx, []store.Liveness{{AgentID: b.agents[19].ID, Status: wire.StatusOffline}}); err != nil {
		t.Fatal(err)
	}
	b.c.resyncAgents()
	if got, want := counted(), (cost{1, 1, 1}); got != want {
		t.Fatalf("pass after a resync found agent-20 offline: %+v; want %+v", got, want)
	}
	if st := b.latest(t, "m1")["agent-20"].State; st != aUnreachable {
		t.Fatalf("agent-20 %s after the resync found it offline", st)
	}
	b.pass(t)

	// Past activeFlush of unsaved time, the k that reported are written with theirs, and a
	// second's worth of others for their time alone; no agent hears about those.
	b.clock.Add(activeFlush)
	for i := 2*k + 1; i <= 3*k; i++ {
		report(i, aVerifying)
	}
	if got, want := counted(), (cost{k, k, k + activeFlushRate}); got != want {
		t.Fatalf("pass after %s more with %d reports: %+v; want %+v", activeFlush, k, got, want)
	}
	// A pass right after writes none for its time alone (no time went by), and the others follow
	// a second's worth a second, and then every row holds its time.
	var written []int64
	for _, d := range []time.Duration{0, time.Second, time.Second, time.Second} {
		b.clock.Add(d)
		written = append(written, counted().written)
	}
	// (agent-20 is away: it counts no time.)
	if want := []int64{0, activeFlushRate, n - 2*activeFlushRate - k - 1, 0}; !slices.Equal(written, want) {
		t.Fatalf("rows written for their time alone by the next passes: %v; want %v", written, want)
	}
	for name, a := range b.latest(t, "m1") {
		if a.ActiveMS < activeFlush.Milliseconds() && name != "agent-20" {
			t.Fatalf("%s stored %dms of active time; want at least %s", name, a.ActiveMS, activeFlush)
		}
	}
}
