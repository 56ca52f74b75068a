package controller

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// A finished migration is skipped by a pass (idle) until its row's version moves or an agent
// reports a new or changed entry for it. These tests look for a report the skip would lose: one
// that a pass reading every agent's observed state would apply and that no later pass looks at.

// idleSweepFinds returns, for every migration the next pass will skip as idle (same version,
// no new or changed entry pending), what a pass over all its stored assignments and every
// agent's observed state would still change or send: it must be nothing.
func (b *bundle) idleSweepFinds(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	c := b.c
	ms, err := b.store.ListMigrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, m := range ms {
		v, ok := c.idle[m.Name]
		c.mu.Lock()
		woken := c.obsMigrations[m.Name]
		c.mu.Unlock()
		if !ok || v != m.Version || woken {
			continue // the next pass works on it
		}
		as, err := b.store.ListAssignments(ctx, m.Name)
		if err != nil {
			t.Fatal(err)
		}
		p := b.storedPass(c, m, as)
		if !migrationFinal(m.State) {
			found = append(found, m.Name+" is skipped as idle but is "+m.State)
		}
		stats := c.stats
		p.observe()
		c.stats = stats
		for id := range p.dirty {
			found = append(found, fmt.Sprintf("%s/%s: %+v", m.Name, id, *p.latest[id]))
		}
		for _, id := range p.order {
			if _, ok := p.desiredEntry(id); ok {
				found = append(found, m.Name+"/"+id+" is wanted")
			}
		}
	}
	slices.Sort(found)
	return found
}

// finish runs m1 over every agent to its end: each reports the state given (by agent number),
// and passes run until the migration is final and idle.
func (b *bundle) finish(t *testing.T, name string, states map[int]string) {
	t.Helper()
	b.pass(t)
	for i := range b.agents {
		b.report(t, i+1, name, aApplying, "")
	}
	b.pass(t)
	for i := range b.agents {
		st, errText := aSucceeded, ""
		if s, ok := states[i+1]; ok {
			st = s
		}
		if st == aFailed {
			errText = "exit 3"
		}
		b.report(t, i+1, name, st, errText)
	}
	b.pass(t)
	b.pass(t)
	if m := b.migration(t, name); !migrationFinal(m.State) {
		t.Fatalf("%s %s after every agent ended (%s)", name, m.State, m.Reason)
	}
	if _, ok := b.c.idle[name]; !ok {
		t.Fatalf("%s is final and not idle after two passes", name)
	}
}

// entryOf is the agent's observed entry for a migration (the first, as a pass reads it).
func (b *bundle) entryOf(t *testing.T, agent int, migration string) wire.ObservedAssignment {
	t.Helper()
	for _, o := range b.observedOf(t, b.agents[agent-1].ID).Assignments {
		if o.Migration == migration {
			return o
		}
	}
	t.Fatalf("agent-%d reports nothing of %s", agent, migration)
	return wire.ObservedAssignment{}
}

// Random reports about a finished migration — repeated, changed, dropped, doubled, of another
// attempt or generation, sent while a pass runs, replayed by the watcher after the bus came back
// (not live) — among reports of a running one, reachability changes, operator actions, checks
// and new leaders: after every pass, a sweep of every migration the next pass will skip finds
// nothing it would apply or send.
func TestIdleMigrationMissesNothingASweepFinds(t *testing.T) {
	t.Parallel()
	for seed := int64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			const n = 4
			rnd := rand.New(rand.NewSource(seed))
			b := setup(t, n)
			ctx := context.Background()
			hs := &hookStore{Store: b.store}
			b.withStore(t, hs)
			b.apply(t, "m1", "    batchSize: 100%\n    onAgentFailure: leave\n    maxFailures: 4")
			b.finish(t, "m1", map[int]string{2: aFailed})
			b.clock.Add(time.Second)
			b.apply(t, "m2", "    batchSize: 100%\n    onAgentFailure: leave\n    maxFailures: 4")
			b.pass(t)
			// What an agent may report, by what it was asked (as TestPassOverWhatChangedMissesNothingASweepFinds).
			reports := map[string][]string{
				wire.ActionApply:    {aDetecting, aApplying, aVerifying, aSucceeded, aFailed, aNotNeeded},
				wire.ActionRollback: {aRollingBack, aRolledBack, aRollbackFailed},
				wire.ActionCancel:   {aFailed},
			}
			pick := func(action string) string { return reports[action][rnd.Intn(len(reports[action]))] }
			// doc is what agent i might report next: its m2 request's progress, and its m1 entries
			// as it held them, changed or not.
			doc := func(i int) []wire.ObservedAssignment {
				var os []wire.ObservedAssignment
				var prev []wire.ObservedAssignment
				b.c.mu.Lock()
				prev = slices.Clone(b.c.observed[b.agents[i-1].ID].Assignments)
				b.c.mu.Unlock()
				m1 := 0
				for _, o := range prev {
					if o.Migration != "m1" {
						continue
					}
					m1++
					switch rnd.Intn(10) {
					case 0: // dropped
						continue
					case 1:
						o.Error = fmt.Sprintf("note %d", rnd.Intn(3))
					case 2:
						o.State = pick(o.Action)
					case 3: // a late report of an earlier request
						o.Generation--
					case 4:
						o.Attempt += rnd.Intn(3) - 1
					case 5:
						o.Step, o.StepName, o.Applied = 1, "two", []int{0, 1}
					case 6:
						code := rnd.Intn(2)
						o.ExitCode = &code
					case 7: // doubled, the copy changed
						if m1 > 2 {
							break
						}
						cp := o
						cp.State = pick(o.Action)
						os = append(os, o)
						o = cp
					}
					os = append(os, o)
				}
				// What the hub asks of it in every migration (m1 again after a retry or rollback).
				for _, d := range b.desired(t, i).Assignments {
					os = append(os, wire.ObservedAssignment{Migration: d.Migration, Attempt: d.Attempt, Generation: d.Generation,
						Action: d.Action, State: pick(d.Action), StepName: "one", Applied: []int{0}})
				}
				rnd.Shuffle(len(os), func(x, y int) { os[x], os[y] = os[y], os[x] })
				return os
			}
			offline := map[int]bool{}
			for step := range 150 {
				switch k := rnd.Intn(12); {
				case k < 5:
					i := rnd.Intn(n) + 1
					os := doc(i)
					b.observed(i, os...)
					t.Logf("step %d: agent-%d reports %+v", step, i, os)
				case k < 6: // a report while a pass saves
					i := rnd.Intn(n) + 1
					os := doc(i)
					hs.on(fmt.Sprintf("m%d", rnd.Intn(2)+1), func() { b.observed(i, os...) })
					t.Logf("step %d: agent-%d reports during a save %+v", step, i, os)
				case k < 7: // the bus came back: the watcher replays every stored report, not live
					b.c.mu.Lock()
					docs := make([]wire.ObservedState, 0, len(b.c.observed))
					for _, o := range b.c.observed {
						docs = append(docs, o)
					}
					b.c.mu.Unlock()
					i := rnd.Intn(n) + 1
					changed := wire.ObservedState{AgentID: b.agents[i-1].ID, Assignments: doc(i)}
					for _, o := range docs {
						if o.AgentID == changed.AgentID && rnd.Intn(2) == 0 {
							o = changed // it changed while the watch was down
						}
						b.c.observe(o, false)
					}
					t.Logf("step %d: watcher replay", step)
				case k < 8:
					b.toggleReachable(t, rnd, offline, step)
				case k < 9:
					acts := []wire.MigrationAction{wire.MigrationRetry, wire.MigrationRollback, wire.MigrationAbort, wire.MigrationPause,
						wire.MigrationResume}
					name, act := fmt.Sprintf("m%d", rnd.Intn(2)+1), acts[rnd.Intn(len(acts))]
					_, err := b.c.Act(ctx, name, act, "test")
					t.Logf("step %d: %s %s: %v", step, act, name, err)
				case k < 10:
					b.clock.Add(time.Duration(rnd.Intn(90)) * time.Minute)
					if rnd.Intn(2) == 0 {
						if _, err := b.c.Check(ctx); err != nil {
							t.Fatal(err)
						}
					}
				case k < 11: // a new leader, its watcher given every stored report
					next := New(b.c.cfg)
					if err := next.begin(ctx); err != nil {
						t.Fatal(err)
					}
					b.c.mu.Lock()
					for _, o := range b.c.observed {
						next.observe(o, false)
					}
					b.c.mu.Unlock()
					b.c = next
					t.Logf("step %d: new leader", step)
				default: // the pass cannot save
					hs.failing(true)
					t.Logf("step %d: saves fail", step)
				}
				b.clock.Add(time.Second)
				if err := b.c.Pass(ctx); err != nil {
					t.Logf("step %d: pass: %v", step, err)
					hs.failing(false)
					continue
				}
				if found := b.idleSweepFinds(t); len(found) > 0 {
					t.Fatalf("step %d: a sweep of the migrations the next pass skips finds %v", step, found)
				}
				if unobserved, unrendered := b.sweepFinds(t); len(unobserved) > 0 || len(unrendered) > 0 {
					t.Fatalf("step %d: a sweep finds observations left unapplied %v and documents not as rendered %v", step, unobserved, unrendered)
				}
			}
		})
	}
}

// sweptPass runs a pass and fails t if a sweep finds anything it or the next pass leaves out.
func (b *bundle) sweptPass(t *testing.T) {
	t.Helper()
	b.pass(t)
	if found := b.idleSweepFinds(t); len(found) > 0 {
		t.Fatalf("a sweep of the migrations the next pass skips finds %v", found)
	}
	if unobserved, unrendered := b.sweepFinds(t); len(unobserved) > 0 || len(unrendered) > 0 {
		t.Fatalf("a sweep finds observations left unapplied %v and documents not as rendered %v", unobserved, unrendered)
	}
}

// withNote is the agent's document with its first entry for the migration given a new error
// text, the other entries as they were.
func (b *bundle) withNote(t *testing.T, agent int, migration, note string) wire.ObservedState {
	t.Helper()
	o := b.observedOf(t, b.agents[agent-1].ID)
	o.Assignments = slices.Clone(o.Assignments)
	for n := range o.Assignments {
		if o.Assignments[n].Migration == migration {
			o.Assignments[n].Error = note
			return o
		}
	}
	t.Fatalf("agent-%d reports nothing of %s", agent, migration)
	return o
}

// A changed entry of a finished migration that arrives while a pass runs — one that skips the
// migration (it arrives after the pass took what changed), or one that woke it and is saving
// it (after the pass read the agent's earlier report) — is applied by the next pass.
func TestIdleMigrationReportDuringAPass(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	hs := &hookStore{Store: b.store}
	b.withStore(t, hs)
	b.apply(t, "m1", "    batchSize: 100%")
	b.finish(t, "m1", nil)
	b.clock.Add(time.Second)
	b.apply(t, "m2", "    batchSize: 100%")
	b.sweptPass(t)
	// m2 saves (agent-2 reports on it); while it does, agent-1 changes its report of m1.
	b.observed(2, b.entryOf(t, 2, "m1"), obs("m2", 1, aApplying))
	hs.on("m2", func() { b.c.ObserveForTest(b.withNote(t, 1, "m1", "said while m2 was saved")) })
	b.sweptPass(t)
	b.sweptPass(t)
	if got := b.latest(t, "m1")["agent-1"].Error; got != "said while m2 was saved" {
		t.Fatalf("agent-1's error %q; want its report made during the pass that skipped m1 applied", got)
	}
	if _, ok := b.c.idle["m1"]; !ok {
		t.Fatal("m1 not idle again")
	}
	// The report wakes m1; while the pass saves it, agent-1 changes it again.
	b.c.ObserveForTest(b.withNote(t, 1, "m1", "first"))
	hs.on("m1", func() { b.c.ObserveForTest(b.withNote(t, 1, "m1", "second")) })
	b.sweptPass(t)
	if got := b.latest(t, "m1")["agent-1"].Error; got != "first" {
		t.Fatalf("agent-1's error %q after the pass that read its report; want %q", got, "first")
	}
	b.sweptPass(t)
	if got := b.latest(t, "m1")["agent-1"].Error; got != "second" {
		t.Fatalf("agent-1's error %q; want its report made while m1 was saved applied", got)
	}
}

// The watcher started again after the bus came back replays every stored report, not live: the
// reports a finished migration has applied do not wake it, one that changed while the watch was
// down does, and is applied.
func TestIdleMigrationWatcherReplay(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	cs := &countingStore{Store: b.store}
	b.withStore(t, cs)
	b.apply(t, "m1", "    batchSize: 100%")
	b.finish(t, "m1", nil)
	replay := func(changed *wire.ObservedState) {
		b.c.mu.Lock()
		docs := make([]wire.ObservedState, 0, len(b.c.observed))
		for _, o := range b.c.observed {
			docs = append(docs, o)
		}
		b.c.mu.Unlock()
		for _, o := range docs {
			if changed != nil && o.AgentID == changed.AgentID {
				o = *changed
			}
			b.c.observe(o, false)
		}
	}
	replay(nil)
	if _, reads := cs.counted(t, b.c); reads != 0 {
		t.Fatalf("pass after a replay of the reports applied: %d assignment reads, want none", reads)
	}
	changed := b.withNote(t, 3, "m1", "changed while the watch was down")
	replay(&changed)
	if _, reads := cs.counted(t, b.c); reads != 1 {
		t.Fatalf("pass after a replay holding a changed report: %d assignment reads, want 1", reads)
	}
	if got := b.latest(t, "m1")["agent-3"].Error; got != "changed while the watch was down" {
		t.Fatalf("agent-3's error %q; want the replayed report applied", got)
	}
	if found := b.idleSweepFinds(t); len(found) > 0 {
		t.Fatalf("a sweep finds %v", found)
	}
}

// An agent reports on two attempts of a finished migration. A change to the attempt the hub
// has moved past wakes it and changes nothing; a change to the latest attempt is applied.
func TestIdleMigrationEntriesOfTwoAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	ctx := context.Background()
	b.apply(t, "m1", "    batchSize: 100%\n    onAgentFailure: leave\n    maxFailures: 3")
	b.finish(t, "m1", map[int]string{2: aFailed})
	if m := b.migration(t, "m1"); m.State != mPartiallySucceeded {
		t.Fatalf("m1 %s, want %s", m.State, mPartiallySucceeded)
	}
	if _, err := b.c.Act(ctx, "m1", wire.MigrationRetry, "test"); err != nil {
		t.Fatal(err)
	}
	b.sweptPass(t)
	first := b.entryOf(t, 2, "m1")
	second := wire.ObservedAssignment{Migration: "m1", Attempt: 2, Generation: 1, Action: wire.ActionApply, State: aSucceeded,
		StepName: "two", Step: 1, Applied: []int{0, 1}}
	b.observed(2, first, second)
	b.sweptPass(t)
	b.sweptPass(t)
	if m := b.migration(t, "m1"); m.State != mSucceeded {
		t.Fatalf("m1 %s after the retry succeeded (%s)", m.State, m.Reason)
	}
	b.sweptPass(t)
	if _, ok := b.c.idle["m1"]; !ok {
		t.Fatal("m1 not idle after it finished again")
	}
	version := b.migration(t, "m1").Version
	stale := first
	stale.Error = "the first attempt's journal, read again"
	b.observed(2, stale, second)
	b.sweptPass(t)
	if m := b.migration(t, "m1"); m.Version != version {
		t.Fatalf("m1 written (version %d, was %d) for a report of an attempt it moved past", m.Version, version)
	}
	late := second
	late.Error = "a note on the second attempt"
	b.observed(2, stale, late)
	b.sweptPass(t)
	if a := b.latest(t, "m1")["agent-2"]; a.Attempt != 2 || a.Error != "a note on the second attempt" {
		t.Fatalf("agent-2 attempt %d error %q; want the second attempt's report applied", a.Attempt, a.Error)
	}
}

// An agent goes away during a migration and reports while away: a result it reached (settled)
// is applied and lets the migration finish; its coming back wakes nothing and misses nothing.
// Another that is away when the migration is aborted confirms the cancel while still away.
func TestIdleMigrationAgentAwayWhileItFinishes(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	ctx := context.Background()
	b.apply(t, "m1", "    batchSize: 100%")
	b.sweptPass(t)
	for i := 1; i <= 3; i++ {
		b.observed(i, obs("m1", 1, aApplying))
	}
	b.sweptPass(t)
	b.setStatus(t, b.c, wire.StatusOffline, 2, 3)
	b.sweptPass(t)
	// agent-2 reports its result while away; agent-3 only its progress (not news while away).
	b.observed(1, obs("m1", 1, aSucceeded))
	b.observed(2, obs("m1", 1, aSucceeded))
	b.observed(3, wire.ObservedAssignment{Migration: "m1", Attempt: 1, Generation: 1, Action: wire.ActionApply, State: aVerifying,
		Step: 1, StepName: "two", Applied: []int{0, 1}})
	b.sweptPass(t)
	if a := b.latest(t, "m1"); a["agent-2"].State != aSucceeded || a["agent-3"].State != aUnreachable {
		t.Fatalf("agent-2 %s, agent-3 %s; want %s and %s", a["agent-2"].State, a["agent-3"].State, aSucceeded, aUnreachable)
	}
	if _, err := b.c.Act(ctx, "m1", wire.MigrationAbort, "test"); err != nil {
		t.Fatal(err)
	}
	b.sweptPass(t)
	a := b.latest(t, "m1")["agent-3"]
	if a.Action != wire.ActionCancel {
		t.Fatalf("agent-3 %s/%s after the abort; want a cancel", a.State, a.Action)
	}
	// agent-3, still away, confirms the cancel.
	b.observed(3, wire.ObservedAssignment{Migration: "m1", Attempt: 1, Generation: a.Generation, Action: wire.ActionCancel,
		State: aFailed, Error: "cancelled", Step: 1, StepName: "two", Applied: []int{0, 1}})
	b.sweptPass(t)
	b.sweptPass(t)
	if _, ok := b.c.idle["m1"]; !ok {
		t.Fatalf("m1 not idle once agent-3 confirmed the cancel: %+v", b.latest(t, "m1")["agent-3"])
	}
	version := b.migration(t, "m1").Version
	b.setStatus(t, b.c, wire.StatusOnline, 2, 3)
	b.sweptPass(t)
	b.sweptPass(t)
	if m := b.migration(t, "m1"); m.Version != version {
		t.Fatalf("m1 written when its agents came back (version %d, was %d)", m.Version, version)
	}
	if a := b.latest(t, "m1")["agent-3"]; a.State != aFailed || a.AckedGeneration != a.Generation {
		t.Fatalf("agent-3 %s, acked %d of %d; want its confirmed cancel", a.State, a.AckedGeneration, a.Generation)
	}
}

// A report that changed while no controller led is applied by the next leader, whose watcher
// gives it every stored report (not live); a later replay of the same reports wakes nothing.
func TestIdleMigrationNewLeader(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	ctx := context.Background()
	b.apply(t, "m1", "    batchSize: 100%")
	b.finish(t, "m1", nil)
	stored := map[string]wire.ObservedState{}
	b.c.mu.Lock()
	for id, o := range b.c.observed {
		stored[id] = o
	}
	b.c.mu.Unlock()
	stored[b.agents[0].ID] = b.withNote(t, 1, "m1", "said while no controller led")
	cs := &countingStore{Store: b.store}
	cfg := b.c.cfg
	cfg.Store = cs
	next := New(cfg)
	if err := next.begin(ctx); err != nil {
		t.Fatal(err)
	}
	for _, o := range stored {
		next.observe(o, false)
	}
	b.c = next
	b.sweptPass(t)
	if got := b.latest(t, "m1")["agent-1"].Error; got != "said while no controller led" {
		t.Fatalf("agent-1's error %q after the new leader's first pass; want its report applied", got)
	}
	b.sweptPass(t)
	for _, o := range stored {
		b.c.observe(o, false)
	}
	if _, reads := cs.counted(t, b.c); reads != 0 {
		t.Fatalf("pass after a replay of the reports applied: %d assignment reads, want none", reads)
	}
}
