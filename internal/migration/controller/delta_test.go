package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// A pass over kept rows looks only at what changed since the last pass. These tests put what
// changes at the awkward moments — during a pass, in a pass cut short, before a dispatch — and
// check that nothing is lost that a pass over every agent would have seen.

// hookStore runs a hook once, inside the next SaveMigration of a migration, before it is
// written; fail makes the SaveMigrations fail while set.
type hookStore struct {
	store.Store
	mu   sync.Mutex
	hook map[string]func()
	fail bool
}

func (h *hookStore) on(migration string, f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hook == nil {
		h.hook = map[string]func(){}
	}
	h.hook[migration] = f
}

func (h *hookStore) failing(v bool) { h.mu.Lock(); defer h.mu.Unlock(); h.fail = v }

func (h *hookStore) SaveMigration(ctx context.Context, f store.Fence, m wire.Migration, as []wire.Assignment) error {
	h.mu.Lock()
	hook := h.hook[m.Name]
	delete(h.hook, m.Name)
	fail := h.fail
	h.mu.Unlock()
	if hook != nil {
		hook()
	}
	if fail {
		return fmt.Errorf("database unreachable (test): %w", fault.ErrUnavailable)
	}
	return h.Store.SaveMigration(ctx, f, m, as)
}

// withStore gives b a new controller over st, leading.
func (b *bundle) withStore(t *testing.T, st store.Store) {
	t.Helper()
	cfg := b.c.cfg
	cfg.Store = st
	b.c = New(cfg)
	if err := b.c.lead(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// observed makes an agent report the given migrations' entries at once, as an agent does (its
// observed document holds every assignment it knows).
func (b *bundle) observed(agent int, os ...wire.ObservedAssignment) {
	b.c.ObserveForTest(wire.ObservedState{AgentID: b.agents[agent-1].ID, Assignments: os})
}

func obs(migration string, gen int, st string) wire.ObservedAssignment {
	return wire.ObservedAssignment{Migration: migration, Attempt: 1, Generation: gen, Action: wire.ActionApply, State: st,
		StepName: "one", Applied: []int{0}}
}

// A report that arrives while a pass runs — here after the pass read the agent's earlier report
// — is applied by the next pass.
func TestReportArrivingDuringAPassIsAppliedByTheNext(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	hs := &hookStore{Store: b.store}
	b.withStore(t, hs)
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	for i := 1; i <= 3; i++ {
		b.observed(i, obs("m1", 1, aApplying))
	}
	b.pass(t)
	b.pass(t)
	b.observed(2, obs("m1", 1, aVerifying))
	hs.on("m1", func() { b.observed(2, obs("m1", 1, aSucceeded)) })
	b.pass(t) // applies verifying; succeeded arrives while it saves
	if st := b.latest(t, "m1")["agent-2"].State; st != aVerifying {
		t.Fatalf("agent-2 %s after the pass that read its report of %s", st, aVerifying)
	}
	b.pass(t)
	if st := b.latest(t, "m1")["agent-2"].State; st != aSucceeded {
		t.Fatalf("agent-2 %s after the pass following its report of %s made during a pass", st, aSucceeded)
	}
}

// A pass cut short (its save refused) after it took an agent's report: the next pass applies
// it, and counts no active time twice.
func TestPassCutShortLosesNoReportAndCountsNoTimeTwice(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	hs := &hookStore{Store: b.store}
	b.withStore(t, hs)
	b.apply(t, "m1", "    batchSize: 100%\n    onAgentFailure: leave")
	b.pass(t)
	b.observed(1, obs("m1", 1, aApplying))
	b.observed(2, obs("m1", 1, aApplying))
	b.pass(t)
	b.pass(t)
	stored := func() int64 { t.Helper(); return b.latest(t, "m1")["agent-1"].ActiveMS }
	for range 5 {
		b.clock.Add(time.Second)
		b.pass(t)
	}
	if ms := stored(); ms != 0 {
		t.Fatalf("agent-1 stored %dms after 5s; want none yet", ms)
	}
	// 5s counted and not stored. The next pass takes agent-2's report and counts a second,
	// then cannot save: neither the report nor that second is kept.
	b.observed(2, obs("m1", 1, aVerifying))
	hs.failing(true)
	b.clock.Add(time.Second)
	if err := b.c.Pass(context.Background()); err == nil {
		t.Fatal("pass with its save refused: no error")
	}
	hs.failing(false)
	b.clock.Add(time.Second)
	b.pass(t) // counts nothing: the last pass got no time through
	if st := b.latest(t, "m1")["agent-2"].State; st != aVerifying {
		t.Fatalf("agent-2 %s after the pass after the one cut short; want its report of %s applied", st, aVerifying)
	}
	var seen []int64
	for range 6 {
		b.clock.Add(time.Second)
		b.pass(t)
		seen = append(seen, stored())
	}
	// 5s before, then 1s a pass: 10s on the 5th pass after.
	if want := []int64{0, 0, 0, 0, 10000, 10000}; fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("agent-1's stored active time after each pass: %v; want %v", seen, want)
	}
}

// An agent's report of a generation the hub had not yet recorded dispatching (a request that
// reached it before the hub's record did) is applied once the hub dispatches, by the pass after.
func TestReportBeforeDispatchIsAppliedAfterIt(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	b.apply(t, "m1", "    batchSize: 1")
	b.pass(t) // batch 1: agent-1
	b.observed(1, obs("m1", 1, aApplying))
	b.pass(t)
	b.pass(t)
	// agent-2, in batch 2, reports the request before the pass that dispatches it.
	b.observed(2, obs("m1", 1, aApplying))
	b.pass(t)
	if a := b.latest(t, "m1")["agent-2"]; !a.DispatchedAt.IsZero() {
		t.Fatalf("agent-2 dispatched before agent-1 finished: %+v", a)
	}
	b.observed(1, obs("m1", 1, aSucceeded))
	b.pass(t) // agent-1 done: batch 2 dispatched
	if a := b.latest(t, "m1")["agent-2"]; a.DispatchedAt.IsZero() {
		t.Fatalf("agent-2 not dispatched after agent-1 succeeded: %+v", a)
	}
	b.pass(t)
	if a := b.latest(t, "m1")["agent-2"]; a.State != aApplying || a.AckedGeneration != 1 {
		t.Fatalf("agent-2 %s (acked %d) after its dispatch; want its report of %s applied", a.State, a.AckedGeneration, aApplying)
	}
}

// An agent goes away, reports while away, and is found back by the index's resync alone (no
// liveness report): its report is applied.
func TestAgentFoundBackByResyncHasItsReportApplied(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	ctx := context.Background()
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	for i := 1; i <= 3; i++ {
		b.observed(i, obs("m1", 1, aApplying))
	}
	b.pass(t)
	b.setStatus(t, b.c, wire.StatusOffline, 2)
	b.pass(t)
	b.observed(2, wire.ObservedAssignment{Migration: "m1", Attempt: 1, Generation: 1, Action: wire.ActionApply, State: aVerifying,
		Step: 1, StepName: "two", Applied: []int{0, 1}})
	b.pass(t)
	if a := b.latest(t, "m1")["agent-2"]; a.State != aUnreachable || a.StepName != "one" {
		t.Fatalf("agent-2 %s at step %q while away", a.State, a.StepName)
	}
	if err := b.store.UpdateLiveness(ctx, []store.Liveness{{AgentID: b.agents[1].ID, Status: wire.StatusOnline}}); err != nil {
		t.Fatal(err)
	}
	b.pass(t)
	b.c.resyncAgents()
	b.pass(t)
	if a := b.latest(t, "m1")["agent-2"]; a.State != aVerifying || a.StepName != "two" || a.Applied != 2 {
		t.Fatalf("agent-2 %s at step %q (%d applied) once the resync found it back; want %s at step two (2), as it reported while away",
			a.State, a.StepName, a.Applied, aVerifying)
	}
}

// An agent in two migrations: when one finishes, its document keeps the other's request; when
// that one finishes too, it is sent an empty document.
func TestTwoMigrationsOneAgentDocument(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	b.apply(t, "m1", "    batchSize: 100%")
	b.clock.Add(time.Second)
	b.apply(t, "m2", "    batchSize: 100%")
	b.pass(t)
	migrations := func(agent int) string {
		t.Helper()
		var out []string
		for _, a := range b.desired(t, agent).Assignments {
			out = append(out, a.Migration+"/"+a.Action)
		}
		return fmt.Sprint(out)
	}
	if got := migrations(1); got != "[m1/apply m2/apply]" {
		t.Fatalf("agent-1's document: %s", got)
	}
	for i := 1; i <= 2; i++ {
		b.observed(i, obs("m1", 1, aApplying), obs("m2", 1, aApplying))
	}
	b.pass(t)
	b.pass(t)
	for i := 1; i <= 2; i++ {
		b.observed(i, obs("m1", 1, aSucceeded), obs("m2", 1, aApplying))
	}
	b.pass(t)
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mSucceeded {
		t.Fatalf("m1 %s", m.State)
	}
	for i := 1; i <= 2; i++ {
		if got := migrations(i); got != "[m2/apply]" {
			t.Fatalf("agent-%d's document once m1 finished: %s; want m2's request alone", i, got)
		}
	}
	// m2 changes for agent-1 alone: its document is rendered again, and keeps nothing of m1.
	b.observed(1, obs("m1", 1, aSucceeded), obs("m2", 1, aVerifying))
	b.pass(t)
	if got := migrations(1); got != "[m2/apply]" {
		t.Fatalf("agent-1's document after an m2 report: %s", got)
	}
	// m2 is aborted: both are told to stop it, and once they confirm, get an empty document.
	if _, err := b.c.Act(context.Background(), "m2", wire.MigrationAbort, "test"); err != nil {
		t.Fatal(err)
	}
	b.pass(t)
	for i := 1; i <= 2; i++ {
		if got := migrations(i); got != "[m2/cancel]" {
			t.Fatalf("agent-%d's document once m2 was aborted: %s", i, got)
		}
	}
	for i := 1; i <= 2; i++ {
		b.observed(i, obs("m1", 1, aSucceeded), wire.ObservedAssignment{Migration: "m2", Attempt: 1, Generation: 2,
			Action: wire.ActionCancel, State: aFailed, Error: "cancelled"})
	}
	b.pass(t)
	b.pass(t)
	for i := 1; i <= 2; i++ {
		d := b.desired(t, i)
		if d.Epoch == 0 || len(d.Assignments) != 0 {
			t.Fatalf("agent-%d's document once both migrations ended: %+v; want an empty one", i, d)
		}
	}
}

// switchKV refuses writes of one key while set.
type switchKV struct {
	jetstream.KeyValue
	mu   sync.Mutex
	key  string
	down bool
}

func (k *switchKV) set(down bool) { k.mu.Lock(); defer k.mu.Unlock(); k.down = down }

func (k *switchKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	k.mu.Lock()
	down := k.down && key == k.key
	k.mu.Unlock()
	if down {
		return 0, nats.ErrMaxPayload
	}
	return k.KeyValue.Put(ctx, key, value)
}

// An agent's document that could not be put, and that changed again before it could: the newest
// is put once the bus takes it; an empty one that could not be put is put later too.
func TestDesiredPutFailsThenTheDocumentChanges(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	kv := &switchKV{KeyValue: b.kv, key: b.agents[0].ID}
	b.c.cfg.Desired = kv
	b.apply(t, "m1", "    batchSize: 100%")
	kv.set(true)
	_ = b.c.Pass(context.Background()) // agent-1's request refused
	if d := b.desired(t, 1); d.Epoch != 0 {
		t.Fatalf("agent-1's document was put: %+v", d)
	}
	_ = b.c.Pass(context.Background())
	if _, err := b.c.Act(context.Background(), "m1", wire.MigrationAbort, "test"); err != nil {
		t.Fatal(err)
	}
	_ = b.c.Pass(context.Background()) // now a cancel, still refused
	for range 2 {
		_ = b.c.Pass(context.Background()) // nothing changes
	}
	kv.set(false)
	b.pass(t)
	if d := b.desired(t, 1); len(d.Assignments) != 1 || d.Assignments[0].Action != wire.ActionCancel {
		t.Fatalf("agent-1's document once the bus takes it: %+v; want the cancel", d)
	}
	// agent-1 confirms; its empty document is refused, then put.
	kv.set(true)
	b.observed(1, wire.ObservedAssignment{Migration: "m1", Attempt: 1, Generation: 2, Action: wire.ActionCancel, State: aFailed, Error: "cancelled"})
	_ = b.c.Pass(context.Background())
	for range 2 {
		_ = b.c.Pass(context.Background())
	}
	kv.set(false)
	b.pass(t)
	if d := b.desired(t, 1); len(d.Assignments) != 0 {
		t.Fatalf("agent-1's document once its empty one could be put: %+v", d)
	}
}

// A new leader writes every agent's document under its epoch, though nothing changed.
func TestNewLeaderWritesEveryDocumentUnderItsEpoch(t *testing.T) {
	t.Parallel()
	const n = 4
	b := setup(t, n)
	ctx := context.Background()
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	for i := 1; i <= n; i++ {
		b.observed(i, obs("m1", 1, aApplying))
	}
	b.pass(t)
	b.pass(t)
	first := b.desired(t, 1).Epoch
	// The same controller leads again (Start after Stop, or after it was deposed).
	if err := b.c.begin(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		b.observed(i, obs("m1", 1, aApplying))
	}
	b.pass(t)
	b.pass(t)
	for i := 1; i <= n; i++ {
		if d := b.desired(t, i); d.Epoch <= first || len(d.Assignments) != 1 {
			t.Fatalf("agent-%d's document under the new leader: %+v; want it under an epoch above %d", i, d, first)
		}
	}
}

// The desired writer, busy, is offered an agent's document and then its empty one: it puts the
// empty one (the agent had a document); offers for different agents all get written.
func TestDesiredWriterMergesOffers(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	id := func(i int) string { return b.agents[i-1].ID }
	doc := func(i int, gen int) []byte {
		return []byte(fmt.Sprintf(`{"agent_id":%q,"epoch":1,"assignments":[{"migration":"m1","attempt":1,"generation":%d,"action":"cancel"}]}`, id(i), gen))
	}
	w := newDesiredWriter()
	w.offer(map[string][]byte{id(1): doc(1, 2), id(2): doc(2, 2)})
	w.offer(map[string][]byte{id(1): nil, id(3): doc(3, 2)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx, b.c) }()
	defer func() { cancel(); <-done }()
	want := func(i, n, gen int) bool {
		d := b.desired(t, i)
		return len(d.Assignments) == n && (n == 0 || d.Assignments[0].Generation == gen)
	}
	for deadline := time.Now().Add(10 * time.Second); !(want(1, 0, 0) && want(2, 1, 2) && want(3, 1, 2)); {
		if time.Now().After(deadline) {
			t.Fatalf("documents after two offers: agent-1 %+v, agent-2 %+v, agent-3 %+v; want empty, the second generation, the second generation",
				b.desired(t, 1), b.desired(t, 2), b.desired(t, 3))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sweepFinds returns what a full sweep would still find after the last pass: per migration whose
// rows the controller kept, the agents a look at every agent's observed state would change and
// that the next pass would not look at (its recheck); and the agents whose desired document,
// rendered from every stored assignment, differs from what the bucket holds.
func (b *bundle) sweepFinds(t *testing.T) (unobserved, unrendered []string) {
	t.Helper()
	ctx := context.Background()
	c := b.c
	ms, err := b.store.ListMigrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	epoch := c.epoch
	c.mu.Unlock()
	entries := map[string][]entry{}
	for _, m := range ms {
		as, err := b.store.ListAssignments(ctx, m.Name)
		if err != nil {
			t.Fatal(err)
		}
		p := b.storedPass(c, m, as)
		for _, id := range p.order {
			if e, ok := p.desiredEntry(id); ok {
				entries[id] = append(entries[id], e)
			}
		}
		r, kept := c.rows[m.Name]
		if !kept || r.version != m.Version {
			continue // read again by the next pass, and looked at in full
		}
		stats := c.stats
		p.observe()
		c.stats = stats
		c.mu.Lock()
		pending := maps.Clone(c.obsChanged) // what the next pass looks at besides
		for _, ch := range c.agentChanges {
			pending[ch.id] = true
		}
		resync := c.resync
		c.mu.Unlock()
		for id := range p.dirty {
			if !slices.Contains(r.recheck, id) && !pending[id] && !resync {
				unobserved = append(unobserved, m.Name+"/"+id)
			}
		}
	}
	for _, a := range b.agents {
		var have []byte
		if e, err := b.kv.Get(ctx, a.ID); err == nil {
			have = e.Value()
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatal(err)
		}
		es := entries[a.ID]
		if len(es) == 0 {
			// An agent the controller has no record of sending a document is not sent an empty
			// one, as before passes looked at what changed: a new leader knows nothing of what
			// its predecessor sent, and the check drops its record to send one again (the agent
			// may confirm its request before that is done).
			c.mu.Lock()
			_, sent := c.written[a.ID]
			c.mu.Unlock()
			if have == nil || !sent {
				continue
			}
			if d := b.desiredOf(t, have); len(d.Assignments) > 0 && d.Epoch == epoch {
				unrendered = append(unrendered, a.Name+" (should have nothing)")
			}
			continue
		}
		want, _ := fit(a.ID, epoch, es, 0)
		if string(want) != string(have) {
			unrendered = append(unrendered, fmt.Sprintf("%s: have %s, want %s", a.Name, have, want))
		}
	}
	slices.Sort(unobserved)
	return unobserved, unrendered
}

func (b *bundle) desiredOf(t *testing.T, doc []byte) wire.DesiredState {
	t.Helper()
	var d wire.DesiredState
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// Random reports, comings and goings, operator actions and clock steps: after every pass, a
// sweep over every agent finds nothing the pass left out — no observation that applies and that
// the next pass would not look at, and no desired document that differs from the one the
// stored assignments make.
func TestPassOverWhatChangedMissesNothingASweepFinds(t *testing.T) {
	t.Parallel()
	for seed := int64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			const n = 5
			rnd := rand.New(rand.NewSource(seed))
			b := setup(t, n)
			ctx := context.Background()
			hs := &hookStore{Store: b.store}
			kv := &switchKV{KeyValue: b.kv}
			b.c.cfg.Desired = kv
			b.withStore(t, hs)
			b.apply(t, "m1", "    batchSize: 2\n    onAgentFailure: leave\n    maxFailures: 5")
			b.clock.Add(time.Second)
			b.apply(t, "m2", "    batchSize: 100%")
			// What an agent may report, by what it was asked.
			reports := map[string][]string{
				wire.ActionApply:    {aDetecting, aApplying, aVerifying, aSucceeded, aFailed, aNotNeeded},
				wire.ActionRollback: {aRollingBack, aRolledBack, aRollbackFailed},
				wire.ActionCancel:   {aFailed},
			}
			pick := func(action string) string { return reports[action][rnd.Intn(len(reports[action]))] }
			offline := map[int]bool{}
			for step := range 200 {
				switch k := rnd.Intn(10); {
				case k < 4: // an agent reports on what its document asks, in every migration at once
					i := rnd.Intn(n) + 1
					var os []wire.ObservedAssignment
					for _, d := range b.desired(t, i).Assignments {
						st := pick(d.Action)
						gen := d.Generation
						if rnd.Intn(4) == 0 && gen > 1 {
							gen-- // a late report of the request before
						}
						os = append(os, wire.ObservedAssignment{Migration: d.Migration, Attempt: d.Attempt, Generation: gen, Action: d.Action,
							State: st, Step: rnd.Intn(2), StepName: "one", Applied: []int{0}})
					}
					b.observed(i, os...)
					t.Logf("step %d: agent-%d reports %+v", step, i, os)
				case k < 6: // an agent goes away or comes back, told or found by a resync
					b.toggleReachable(t, rnd, offline, step)
				case k < 7:
					acts := []wire.MigrationAction{wire.MigrationPause, wire.MigrationResume, wire.MigrationRetry, wire.MigrationRollback,
						wire.MigrationAbort, wire.MigrationApprove}
					name, act := fmt.Sprintf("m%d", rnd.Intn(2)+1), acts[rnd.Intn(len(acts))]
					_, err := b.c.Act(ctx, name, act, "test")
					t.Logf("step %d: %s %s: %v", step, act, name, err)
				case k < 8:
					b.clock.Add(time.Duration(rnd.Intn(20)) * time.Minute)
				case k < 9:
					switch rnd.Intn(5) {
					case 0: // the pass cannot save
						hs.failing(true)
						t.Logf("step %d: saves fail", step)
					case 1: // an agent reports while the pass saves
						i := rnd.Intn(n) + 1
						var os []wire.ObservedAssignment
						for _, d := range b.desired(t, i).Assignments {
							os = append(os, wire.ObservedAssignment{Migration: d.Migration, Attempt: d.Attempt, Generation: d.Generation,
								Action: d.Action, State: pick(d.Action), StepName: "one", Applied: []int{0}})
						}
						hs.on(fmt.Sprintf("m%d", rnd.Intn(2)+1), func() { b.observed(i, os...) })
						t.Logf("step %d: agent-%d reports during a save %+v", step, i, os)
					case 2: // an agent's document cannot be put for a while
						kv.mu.Lock()
						kv.key, kv.down = b.agents[rnd.Intn(n)].ID, true
						kv.mu.Unlock()
					case 3: // the check runs
						b.clock.Add(time.Minute)
						if _, err := b.c.Check(ctx); err != nil {
							t.Fatal(err)
						}
					case 4: // a new leader
						next := New(b.c.cfg)
						if err := next.begin(ctx); err != nil {
							t.Fatal(err)
						}
						b.c.mu.Lock()
						for _, o := range b.c.observed {
							next.ObserveForTest(o)
						}
						b.c.mu.Unlock()
						b.c = next
						t.Logf("step %d: new leader", step)
					}
				}
				b.clock.Add(time.Second)
				if err := b.c.Pass(ctx); err != nil {
					t.Logf("step %d: pass: %v", step, err)
					hs.failing(false)
					kv.set(false)
					continue
				}
				if unobserved, unrendered := b.sweepFinds(t); len(unobserved) > 0 || len(unrendered) > 0 {
					t.Fatalf("step %d: a sweep finds observations left unapplied %v and documents not as rendered %v", step, unobserved, unrendered)
				}
			}
		})
	}
}

// toggleReachable takes a random agent offline, or back online when it is offline: told by
// liveness, or (one time in three) stored only and found by the index's resync.
func (b *bundle) toggleReachable(t *testing.T, rnd *rand.Rand, offline map[int]bool, step int) {
	t.Helper()
	i := rnd.Intn(len(b.agents)) + 1
	st := wire.StatusOffline
	if offline[i] {
		st = wire.StatusOnline
	}
	offline[i] = !offline[i]
	if rnd.Intn(3) == 0 {
		if err := b.store.UpdateLiveness(context.Background(), []store.Liveness{{AgentID: b.agents[i-1].ID, Status: st}}); err != nil {
			t.Fatal(err)
		}
		b.c.resyncAgents()
	} else {
		b.setStatus(t, b.c, st, i)
	}
	t.Logf("step %d: agent-%d %s", step, i, st)
}

// storedPass is a pass of c over m's stored assignments as (their latest attempts), seeing the
// agents as c does: what a sweep over every agent starts from.
func (b *bundle) storedPass(c *Controller, m wire.Migration, as []wire.Assignment) *pass {
	sp, _ := c.parsedSpec(m)
	p := &pass{c: c, m: m, orig: m, sp: sp, latest: map[string]*wire.Assignment{}, dirty: map[string]bool{}, now: b.clock.Now(),
		view: &view{c: c, agents: c.agents, recovered: c.recoveredAt, obs: map[string]seenState{}}}
	for _, a := range latestOf(as) {
		p.latest[a.AgentID] = &a
		p.order = append(p.order, a.AgentID)
	}
	slices.Sort(p.order)
	return p
}
