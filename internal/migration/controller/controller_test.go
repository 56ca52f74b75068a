package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/lease/leasetest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time      { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) Add(d time.Duration) { f.mu.Lock(); defer f.mu.Unlock(); f.now = f.now.Add(d) }

type noAuth struct{}

func (noAuth) AgentCredential(context.Context, string) (string, bool, error) {
	return "", false, fault.ErrNotFound
}

type bundle struct {
	c      *Controller
	store  store.Store
	clock  *fakeClock
	kv     jetstream.KeyValue
	srv    *bus.Server
	nc     *nats.Conn   // the buckets' connection
	agents []wire.Agent // in name order: agent-1 …
	mu     sync.Mutex
	events []wire.Event
}

// setup gives a leading controller over n online agents, a real SQLite store and real buckets.
func setup(t testing.TB, n int) *bundle {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return setupOn(t, n, st)
}

// setupOn is setup on the store st (empty).
func setupOn(t testing.TB, n int, st store.Store) *bundle {
	t.Helper()
	ctx := context.Background()
	srv, err := bus.StartServer(bus.ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: noAuth{}, Logger: logging.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	nc, err := srv.ConnectHub("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	bk, err := bus.EnsureBuckets(ctx, js, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{store: st, clock: &fakeClock{now: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)}, kv: bk.Desired, srv: srv, nc: nc}
	tok := credential.New(credential.PrefixEnroll)
	if err := st.CreateEnrollToken(ctx, wire.EnrollToken{ID: "t", MaxUses: n, ExpiresAt: b.clock.Now().Add(time.Hour), CreatedAt: b.clock.Now()}, credential.Hash(tok)); err != nil {
		t.Fatal(err)
	}
	var live []store.Liveness
	for i := 1; i <= n; i++ {
		a := wire.Agent{ID: fmt.Sprintf("0196a000-0000-7000-8000-%012d", i), Name: fmt.Sprintf("agent-%d", i),
			Labels: map[string]string{"role": "db"}, EnrolledAt: b.clock.Now()}
		if err := st.Enroll(ctx, credential.Hash(tok), b.clock.Now(), a, "x"); err != nil {
			t.Fatal(err)
		}
		b.agents = append(b.agents, a)
		live = append(live, store.Liveness{AgentID: a.ID, Status: wire.StatusOnline, LastSeen: b.clock.Now()})
	}
	if err := st.UpdateLiveness(ctx, live); err != nil {
		t.Fatal(err)
	}
	b.c = New(Config{Store: st, Desired: bk.Desired, Observed: bk.Observed, Logger: logging.Discard(), Clock: b.clock, HubID: "test",
		Settle: -1, // judged from the first pass; TestSettling covers the settle time
		Leader: leasetest.StoreEpoch{Store: st, Name: LeadershipName, Holder: "test"},
		Publish: func(_ context.Context, e wire.Event) error {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.events = append(b.events, e)
			return nil
		}})
	if err := b.c.lead(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

const specTmpl = `apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: %s
spec:
  toVersion: "2"
  selector:
    matchLabels: {role: db}
  steps:
    - name: one
      run: "true"
      rollback: "true"
    - name: two
      run: "true"
  rollout:
%s
  timeouts:
    assignment: 1h
`

func (b *bundle) apply(t testing.TB, name, rollout string) wire.MigrationApplyResult {
	t.Helper()
	res, err := b.c.Apply(context.Background(), []byte(fmt.Sprintf(specTmpl, name, rollout)), false)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return res
}

// setStatus stores the agents' liveness status and tells c, as package liveness does in a hub.
func (b *bundle) setStatus(t *testing.T, c *Controller, status string, agents ...int) {
	t.Helper()
	var ls []store.Liveness
	for _, n := range agents {
		ls = append(ls, store.Liveness{AgentID: b.agents[n-1].ID, Status: status})
	}
	if err := b.store.UpdateLiveness(context.Background(), ls); err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		c.AgentStatus(l.AgentID, l.Status)
	}
}

func (b *bundle) pass(t testing.TB) {
	t.Helper()
	if err := b.c.Pass(context.Background()); err != nil {
		t.Fatalf("Pass: %v", err)
	}
}

func (b *bundle) migration(t *testing.T, name string) wire.Migration {
	t.Helper()
	m, err := b.store.GetMigration(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// latest returns each agent's latest attempt, by agent name.
func (b *bundle) latest(t *testing.T, name string) map[string]wire.Assignment {
	t.Helper()
	as, err := b.store.ListAssignments(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]string{}
	for _, a := range b.agents {
		byID[a.ID] = a.Name
	}
	out := map[string]wire.Assignment{}
	for _, a := range latestOf(as) {
		out[byID[a.AgentID]] = a
	}
	return out
}

// desired reads the agent's desired document from the bucket.
func (b *bundle) desired(t *testing.T, agent int) wire.DesiredState {
	t.Helper()
	e, err := b.kv.Get(context.Background(), b.agents[agent-1].ID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return wire.DesiredState{}
	}
	if err != nil {
		t.Fatal(err)
	}
	var d wire.DesiredState
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// report makes an agent report a state for the generation it was last asked to act on.
func (b *bundle) report(t *testing.T, agent int, migration, st, errText string) {
	t.Helper()
	id := b.agents[agent-1].ID
	d := b.desired(t, agent)
	for _, a := range d.Assignments {
		if a.Migration == migration {
			b.c.ObserveForTest(wire.ObservedState{AgentID: id, Assignments: []wire.ObservedAssignment{{
				Migration: migration, Attempt: a.Attempt, Generation: a.Generation, Action: a.Action, State: st, Error: errText,
				StepName: "one", Applied: []int{0}}}})
			return
		}
	}
	t.Fatalf("agent-%d has no desired assignment for %s (desired %+v)", agent, migration, d)
}

func dispatched(as map[string]wire.Assignment) []string {
	var out []string
	for n := 1; n <= 10; n++ {
		name := fmt.Sprintf("agent-%d", n)
		if a, ok := as[name]; ok && !a.DispatchedAt.IsZero() {
			out = append(out, name)
		}
	}
	return out
}

func TestCanaryThenBatches(t *testing.T) {
	t.Parallel()
	b := setup(t, 5)
	res := b.apply(t, "m1", "    canary: 1\n    batchSize: 2")
	if res.Outcome != "created" || len(res.Batches) != 3 || len(res.Batches[0]) != 1 {
		t.Fatalf("apply: %+v", res)
	}
	b.pass(t)
	if got := dispatched(b.latest(t, "m1")); strings.Join(got, ",") != "agent-1" {
		t.Fatalf("after first pass dispatched %v, want only the canary", got)
	}
	if d := b.desired(t, 1); len(d.Assignments) != 1 || d.Assignments[0].Generation != 1 || d.Assignments[0].Action != wire.ActionApply || len(d.Assignments[0].Steps) != 2 {
		t.Fatalf("canary desired state: %+v", d)
	}
	if d := b.desired(t, 2); len(d.Assignments) != 0 {
		t.Fatalf("agent-2 got work before the canary finished: %+v", d)
	}
	b.report(t, 1, "m1", aSucceeded, "")
	b.pass(t)
	if got := dispatched(b.latest(t, "m1")); strings.Join(got, ",") != "agent-1,agent-2,agent-3" {
		t.Fatalf("after canary dispatched %v", got)
	}
	if d := b.desired(t, 1); len(d.Assignments) != 0 {
		t.Fatalf("finished canary still has desired work: %+v", d)
	}
	b.report(t, 2, "m1", aSucceeded, "")
	b.pass(t)
	if got := dispatched(b.latest(t, "m1")); len(got) != 3 {
		t.Fatalf("batch 2 dispatched before batch 1 finished: %v", got)
	}
	b.report(t, 3, "m1", aNotNeeded, "")
	b.pass(t)
	b.report(t, 4, "m1", aSucceeded, "")
	b.report(t, 5, "m1", aSucceeded, "")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mSucceeded || m.FinishedAt.IsZero() {
		t.Fatalf("migration = %+v, want succeeded", m)
	}
}

func TestFailureBudgetPauses(t *testing.T) {
	t.Parallel()
	b := setup(t, 5)
	b.apply(t, "m1", "    batchSize: 100%\n    maxFailures: 1\n    onFailure: pause")
	b.pass(t)
	b.report(t, 1, "m1", aFailed, "disk full on /dev/sda1")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mRunning {
		t.Fatalf("one failure within budget: %s", m.State)
	}
	b.report(t, 2, "m1", aFailed, "disk full on /dev/sda7")
	b.pass(t)
	m := b.migration(t, "m1")
	if m.State != mPaused || !strings.Contains(m.Reason, "failure budget exceeded: 2 agents failed, 1 allowed") {
		t.Fatalf("migration = %s %q, want paused by the budget", m.State, m.Reason)
	}
	d, err := b.c.Describe(context.Background(), "m1")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Failures) != 1 || d.Failures[0].Count != 2 || d.Failures[0].Signature != "disk full on /dev/sdaN" {
		t.Fatalf("failure groups: %+v", d.Failures)
	}
	if len(d.Assignments) != 5 || d.Budget != 1 || len(d.Batches) != 1 || d.Batches[0].Total != 5 || d.Batches[0].States[aRollingBack] != 2 {
		t.Fatalf("description: %d assignments, budget %d, batches %+v", len(d.Assignments), d.Budget, d.Batches)
	}
	// The same counts and groups with only the failed agents, or no assignments.
	for which, want := range map[wire.AssignmentsShown][]string{wire.AssignmentsFailed: {"0196a000-0000-7000-8000-000000000001", "0196a000-0000-7000-8000-000000000002"}, wire.AssignmentsNone: nil} {
		dw, err := b.c.DescribeWith(context.Background(), "m1", which)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range dw.Assignments {
			got = append(got, a.AgentID)
		}
		if !slices.Equal(got, want) || !reflect.DeepEqual(dw.Batches, d.Batches) || !reflect.DeepEqual(dw.Failures, d.Failures) || dw.Budget != d.Budget {
			t.Errorf("DescribeWith(%s): agents %v, batches %+v, failures %+v; want agents %v and the rest as Describe's", which, got, dw.Batches, dw.Failures, want)
		}
	}
	if _, err := b.c.DescribeWith(context.Background(), "m1", "some"); !errors.Is(err, fault.ErrInvalid) {
		t.Errorf("DescribeWith(some) = %v, want invalid", err)
	}
}

func TestRetryFailedMakesNewLinkedAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	b.apply(t, "m1", "    maxFailures: 5")
	b.pass(t)
	b.report(t, 1, "m1", aFailed, "boom")
	b.report(t, 2, "m1", aSucceeded, "")
	b.pass(t)
	// By default the failed agent's applied steps are undone before the migration settles.
	if a1 := b.latest(t, "m1")["agent-1"]; a1.State != aRollingBack || a1.Failure != "boom" {
		t.Fatalf("failed agent: %+v, want rolling back with its failure kept", a1)
	}
	if d := b.desired(t, 1); len(d.Assignments) != 1 || d.Assignments[0].Action != wire.ActionRollback {
		t.Fatalf("failed agent's desired state: %+v", d)
	}
	b.report(t, 1, "m1", aRolledBack, "")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mPartiallySucceeded {
		t.Fatalf("state %s, want partially_succeeded", m.State)
	}
	b.act(t, "m1", wire.MigrationRetry)
	b.pass(t)
	a1 := b.latest(t, "m1")["agent-1"]
	if a1.Attempt != 2 || a1.PreviousAttempt != 1 || a1.State != aPending {
		t.Fatalf("retry attempt: %+v", a1)
	}
	if a2 := b.latest(t, "m1")["agent-2"]; a2.Attempt != 1 {
		t.Fatalf("succeeded agent was retried: %+v", a2)
	}
	// A late report about attempt 1 is stale and changes nothing.
	b.c.ObserveForTest(wire.ObservedState{AgentID: b.agents[0].ID, Assignments: []wire.ObservedAssignment{{Migration: "m1", Attempt: 1, Generation: 1, State: aSucceeded}}})
	b.pass(t)
	if a1 := b.latest(t, "m1")["agent-1"]; a1.State != aPending {
		t.Fatalf("stale report moved attempt 2 to %s", a1.State)
	}
	b.report(t, 1, "m1", aSucceeded, "")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mSucceeded {
		t.Fatalf("after retry: %s", m.State)
	}
}

func TestRollbackAfterSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	b.report(t, 1, "m1", aSucceeded, "")
	b.report(t, 2, "m1", aSucceeded, "")
	b.report(t, 3, "m1", aNotNeeded, "")
	b.pass(t)
	b.act(t, "m1", wire.MigrationRollback)
	b.pass(t)
	for _, n := range []int{1, 2} {
		d := b.desired(t, n)
		if len(d.Assignments) != 1 || d.Assignments[0].Action != wire.ActionRollback || d.Assignments[0].Generation != 2 {
			t.Fatalf("agent-%d desired after rollback: %+v", n, d)
		}
	}
	if d := b.desired(t, 3); len(d.Assignments) != 0 {
		t.Fatalf("agent that needed nothing was asked to roll back: %+v", d)
	}
	b.report(t, 1, "m1", aRolledBack, "")
	b.report(t, 2, "m1", aRollbackFailed, "rollback: permission denied")
	b.pass(t)
	m := b.migration(t, "m1")
	if m.State != mFailed || !strings.Contains(m.Reason, "rollback failed on 1 agents") {
		t.Fatalf("after a failed rollback: %s %q", m.State, m.Reason)
	}
	// Rollback can always resume: a new request goes only to the agent whose rollback failed.
	b.act(t, "m1", wire.MigrationRollback)
	b.pass(t)
	if d := b.desired(t, 2); len(d.Assignments) != 1 || d.Assignments[0].Generation != 3 || d.Assignments[0].Action != wire.ActionRollback {
		t.Fatalf("resumed rollback desired: %+v", d)
	}
	if d := b.desired(t, 1); len(d.Assignments) != 0 {
		t.Fatalf("rolled-back agent asked again: %+v", d)
	}
	b.report(t, 2, "m1", aRolledBack, "")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mRolledBack {
		t.Fatalf("after resumed rollback: %s %q", m.State, m.Reason)
	}
}

func TestManualApproval(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	b.apply(t, "m1", "    batchSize: 2\n    approval: manual")
	b.pass(t)
	b.report(t, 1, "m1", aSucceeded, "")
	b.report(t, 2, "m1", aSucceeded, "")
	b.pass(t)
	m := b.migration(t, "m1")
	if m.State != mPaused || !strings.Contains(m.Reason, "waiting for approval of batch 2 of 2") {
		t.Fatalf("after batch 0: %s %q", m.State, m.Reason)
	}
	if got := dispatched(b.latest(t, "m1")); len(got) != 2 {
		t.Fatalf("dispatched without approval: %v", got)
	}
	b.act(t, "m1", wire.MigrationApprove)
	b.pass(t)
	if got := dispatched(b.latest(t, "m1")); len(got) != 4 {
		t.Fatalf("after approval dispatched %v", got)
	}
}

func TestApplyIdempotentAndChangedSpecRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	b.apply(t, "m1", "    batchSize: 1")
	again := b.apply(t, "m1", "    batchSize: 1")
	if again.Outcome != "unchanged" {
		t.Fatalf("same spec twice: %+v", again)
	}
	_, err := b.c.Apply(context.Background(), []byte(fmt.Sprintf(specTmpl, "m1", "    batchSize: 2")), false)
	if !errors.Is(err, fault.ErrConflict) || !strings.Contains(err.Error(), "different spec") {
		t.Fatalf("changed spec: %v", err)
	}
	dry, err := b.c.Apply(context.Background(), []byte(strings.Replace(fmt.Sprintf(specTmpl, "m2", "    batchSize: 1"), "role: db", "role: web", 1)), true)
	if err != nil || dry.Matched != 0 || len(dry.Warnings) == 0 {
		t.Fatalf("dry run matching nothing: %+v %v", dry, err)
	}
	_, err = b.c.Apply(context.Background(), []byte(strings.Replace(fmt.Sprintf(specTmpl, "m2", "    batchSize: 1"), "role: db", "role: web", 1)), false)
	if !errors.Is(err, fault.ErrInvalid) {
		t.Fatalf("apply matching nothing: %v", err)
	}
	if _, err := b.store.GetMigration(context.Background(), "m2"); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("a migration matching nothing was stored: %v", err)
	}
}

func TestDeposedControllerIsFenced(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.apply(t, "m1", "    batchSize: 1")
	if _, err := b.store.AcquireEpoch(context.Background(), LeadershipName, "other-hub", b.clock.Now()); err != nil {
		t.Fatal(err)
	}
	err := b.c.Pass(context.Background())
	if !errors.Is(err, fault.ErrFenced) {
		t.Fatalf("pass after losing the epoch: %v, want ErrFenced", err)
	}
	if m := b.migration(t, "m1"); m.State != mPending {
		t.Fatalf("deposed controller changed the migration to %s", m.State)
	}
}

// Under the active policy an assignment's deadline counts only time its agent is reachable.
func TestActiveDeadlineIgnoresUnreachableTime(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.apply(t, "m1", "    batchSize: 1\n    onAgentFailure: leave")
	b.pass(t)
	b.setStatus(t, b.c, wire.StatusOffline, 1)
	for range 4 { // four hours of hub up-time with the agent away
		b.clock.Add(time.Hour)
		b.pass(t)
	}
	if a := b.latest(t, "m1")["agent-1"]; a.State != aUnreachable || a.ActiveMS != 0 {
		t.Fatalf("after 4h unreachable: %s, %dms counted; want agent_unreachable and nothing counted", a.State, a.ActiveMS)
	}
	b.setStatus(t, b.c, wire.StatusOnline, 1)
	b.clock.Add(30 * time.Minute)
	b.pass(t)
	if a := b.latest(t, "m1")["agent-1"]; a.State != aPending {
		t.Fatalf("after 30m reachable of a 1h deadline: %s, want pending again", a.State)
	}
	b.clock.Add(31 * time.Minute)
	b.pass(t)
	a := b.latest(t, "m1")["agent-1"]
	if a.State != aTimedOut || a.Action != wire.ActionCancel || !strings.Contains(a.Error, "deadline") {
		t.Fatalf("after 61m reachable: %+v", a)
	}
	if d := b.desired(t, 1); len(d.Assignments) != 1 || d.Assignments[0].Action != wire.ActionCancel {
		t.Fatalf("timed-out assignment not cancelled on the agent: %+v", d)
	}
}

// outageStore is the store with a switch: while down, the calls of one kind fail as those of an
// unreachable database do.
type outageStore struct {
	store.Store
	mu   sync.Mutex
	down string // "read": listing migrations fails; "save": saving one fails; "": none
}

func (o *outageStore) set(down string) { o.mu.Lock(); defer o.mu.Unlock(); o.down = down }

func (o *outageStore) fails(kind string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down == kind {
		return fmt.Errorf("database unreachable (test): %w", fault.ErrUnavailable)
	}
	return nil
}

func (o *outageStore) ListMigrations(ctx context.Context) ([]wire.Migration, error) {
	if err := o.fails("read"); err != nil {
		return nil, err
	}
	return o.Store.ListMigrations(ctx)
}

func (o *outageStore) SaveMigration(ctx context.Context, f store.Fence, m wire.Migration, as []wire.Assignment) error {
	if err := o.fails("save"); err != nil {
		return err
	}
	return o.Store.SaveMigration(ctx, f, m, as)
}

// Under the active policy, time while the store is away counts nothing, whenever the clock moves
// relative to the passes that fail: here the last failed pass read the clock before a 4h jump,
// and the first pass after the outage must not count the jump — nor must a pass that read the
// store but could not save what it counted hand its time on.
func TestActiveDeadlineIgnoresStoreOutage(t *testing.T) {
	t.Parallel()
	for _, down := range []string{"read", "save"} {
		t.Run(down, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 1)
			ctx := context.Background()
			st := &outageStore{Store: b.store}
			cfg := b.c.cfg
			cfg.Store = st
			c := New(cfg)
			if err := c.lead(ctx); err != nil {
				t.Fatal(err)
			}
			pass := func(wantErr bool) {
				t.Helper()
				if err := c.Pass(ctx); (err != nil) != wantErr {
					t.Fatalf("Pass: %v, want an error: %v", err, wantErr)
				}
			}
			b.apply(t, "m1", "    batchSize: 1\n    onAgentFailure: leave")
			pass(false) // dispatched
			b.clock.Add(10 * time.Minute)
			pass(false)
			if a := b.latest(t, "m1")["agent-1"]; a.ActiveMS != (10 * time.Minute).Milliseconds() {
				t.Fatalf("before the outage: %dms counted, want 10m", a.ActiveMS)
			}

			st.set(down)
			b.clock.Add(time.Minute)
			pass(true) // reads the clock before the jump, then fails
			b.clock.Add(4 * time.Hour)
			st.set("")
			pass(false)
			a := b.latest(t, "m1")["agent-1"]
			if a.State == aTimedOut || a.ActiveMS != (10*time.Minute).Milliseconds() {
				t.Fatalf("after a 4h outage of the store: %s, %dms counted; want 10m counted and no deadline", a.State, a.ActiveMS)
			}

			// Counting goes on from the first pass that got through.
			b.clock.Add(45 * time.Minute)
			pass(false)
			if a := b.latest(t, "m1")["agent-1"]; a.State == aTimedOut || a.ActiveMS != (55*time.Minute).Milliseconds() {
				t.Fatalf("45m after the outage: %s, %dms counted; want 55m", a.State, a.ActiveMS)
			}
			b.clock.Add(10 * time.Minute)
			pass(false)
			if a := b.latest(t, "m1")["agent-1"]; a.State != aTimedOut {
				t.Fatalf("65m of up-time against a 1h deadline: %s, %dms counted; want timed out", a.State, a.ActiveMS)
			}
		})
	}
}

func TestSignature(t *testing.T) {
	cases := map[string]string{
		"write /var/lib/x: no space left on device (errno 28)": "write /var/lib/x: no space left on device (errno N)",
		"step failed\nERROR: disk full at 98%\n\n":             "ERROR: disk full at N%",
		"agent 0196a000-0000-7000-8000-000000000001 lost":      "agent <id> lost",
		"":                                   "(no error text)",
		"checksum deadbeefdeadbeef mismatch": "checksum <hex> mismatch",
		// The cause, not the hint printed after it.
		"libssl.so.3: cannot open shared object file\nhint: install libssl3": "libssl.so.N: cannot open shared object file",
	}
	for in, want := range cases {
		if got := Signature(in); got != want {
			t.Errorf("Signature(%q) = %q, want %q", in, got, want)
		}
	}
}

// The consistency check resends a request a reachable agent never acknowledged, and reports
// work the hub has no record of.
func TestCheckFindsAndFixesDrift(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	ctx := context.Background()
	// agent-1 reports nothing about its request; agent-2 works on a migration the hub never made.
	b.c.ObserveForTest(wire.ObservedState{AgentID: b.agents[1].ID, Assignments: []wire.ObservedAssignment{
		{Migration: "m1", Attempt: 1, Generation: 1, State: aApplying},
		{Migration: "ghost", Attempt: 3, Generation: 1, State: aApplying}}})
	if fs, err := b.c.Check(ctx); err != nil || len(fs) != 1 || fs[0].Kind != wire.FindingUnknownWork || fs[0].Migration != "ghost" {
		t.Fatalf("before the resend delay: %+v %v", fs, err)
	}
	b.clock.Add(time.Minute)
	b.pass(t) // writes the minute of active time: the resend below is the check's doing alone
	fs, err := b.c.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, f := range fs {
		kinds[f.AgentID+"/"+f.Migration] = f.Kind
	}
	if kinds[b.agents[0].ID+"/m1"] != wire.FindingNeverReceived || kinds[b.agents[1].ID+"/ghost"] != wire.FindingUnknownWork || len(fs) != 2 {
		t.Fatalf("findings %+v", fs)
	}
	// The fix: agent-1's desired state is written again on the next pass.
	if err := b.kv.Delete(ctx, b.agents[0].ID); err != nil {
		t.Fatal(err)
	}
	b.pass(t)
	if d := b.desired(t, 1); len(d.Assignments) != 1 || d.Assignments[0].Migration != "m1" {
		t.Fatalf("desired state not re-sent: %+v", d)
	}
	// Each finding is one event when it is first found, though two checks found the ghost.
	if got := b.findingEvents(); got != "found unknown_work ghost; found never_received m1" {
		t.Fatalf("finding events: %s", got)
	}
	// Found again a minute later: still the same findings, no new event.
	b.clock.Add(time.Minute)
	if fs, err := b.c.Check(ctx); err != nil || len(fs) != 2 {
		t.Fatalf("third check: %+v %v", fs, err)
	}
	if got := b.findingEvents(); got != "found unknown_work ghost; found never_received m1" {
		t.Fatalf("finding events after a third check: %s", got)
	}
	// agent-1 acts on its request and the ghost is gone: each finding is resolved, once.
	b.report(t, 1, "m1", aApplying, "")
	b.c.ObserveForTest(wire.ObservedState{AgentID: b.agents[1].ID, Assignments: []wire.ObservedAssignment{
		{Migration: "m1", Attempt: 1, Generation: 1, State: aApplying}}})
	for range 2 {
		b.clock.Add(time.Minute)
		if fs, err := b.c.Check(ctx); err != nil || len(fs) != 0 {
			t.Fatalf("check after the fixes: %+v %v", fs, err)
		}
	}
	if got := b.findingEvents(); got != "found unknown_work ghost; found never_received m1; resolved unknown_work ghost; resolved never_received m1" {
		t.Fatalf("finding events after the fixes: %s", got)
	}
}

// findingEvents lists the hub.check.finding events so far: status, kind and migration.
func (b *bundle) findingEvents() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, e := range b.events {
		if e.Type != wire.EventCheckFinding {
			continue
		}
		var x struct{ Kind, Status string }
		_ = json.Unmarshal(e.Data.Extra, &x)
		out = append(out, x.Status+" "+x.Kind+" "+e.Data.Migration)
	}
	return strings.Join(out, "; ")
}

// A restarted controller says how long it was away, and each change it adopts from the agents
// becomes an event.
func TestResumeRecordsDowntimeAndReconciliations(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	// The hub goes away for four hours; meanwhile the agent finishes.
	b.clock.Add(4 * time.Hour)
	b.report(t, 1, "m1", aSucceeded, "")
	obs := b.c.observed[b.agents[0].ID]
	next := New(b.c.cfg)
	next.ObserveForTest(obs)
	if err := next.lead(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := next.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := b.migration(t, "m1"); m.State != mSucceeded {
		t.Fatalf("after resuming: %s %q", m.State, m.Reason)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var resumed, reconciled bool
	for _, e := range b.events {
		switch {
		case e.Type == wire.EventControllerResumed && strings.Contains(e.Data.Message, "after 4h0m0s"):
			resumed = true
		case e.Type == wire.EventAssignmentReconciled && strings.Contains(e.Data.Message, "reports succeeded"):
			reconciled = true
		}
	}
	if !resumed || !reconciled {
		t.Fatalf("events: resumed=%v reconciled=%v (%d events)", resumed, reconciled, len(b.events))
	}
}

// After taking the lead a controller judges no deadline for the settle time, and starts no new
// work for a migration whose deadline has passed, until agents could report what they did
// while nobody listened; then the deadline is judged.
func TestSettling(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	wall := strings.Replace(fmt.Sprintf(specTmpl, "m1", "    batchSize: 1"), "    assignment: 1h\n",
		"    assignment: 1h\n    migration: 2h\n  deadlinePolicy: wall\n  onTimeout: rollback\n", 1)
	if _, err := b.c.Apply(context.Background(), []byte(wall), false); err != nil {
		t.Fatal(err)
	}
	b.clock.Add(3 * time.Hour) // the hub was away past the 2h wall deadline
	cfg := b.c.cfg
	cfg.Settle = time.Minute
	c := New(cfg)
	if err := c.lead(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := dispatched(b.latest(t, "m1")); len(got) != 0 {
		t.Fatalf("dispatched %v past the deadline while settling", got)
	}
	if m := b.migration(t, "m1"); m.State == mRollingBack {
		t.Fatalf("deadline judged while settling: %s", m.Reason)
	}
	b.clock.Add(2 * time.Minute)
	if err := c.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := b.migration(t, "m1"); m.State != mRolledBack && m.State != mRollingBack {
		t.Fatalf("after the settle time: %s %q, want the deadline's rollback", m.State, m.Reason)
	}
	if got := dispatched(b.latest(t, "m1")); len(got) != 0 {
		t.Fatalf("work started past the deadline: %v", got)
	}
}

// A rollback requested hours after a failure runs with a fresh timer (it is not "already
// late"), and after it is itself interrupted — here by its own deadline — it can be resumed.
func TestRollbackRequestedHoursLater(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.apply(t, "m1", "    batchSize: 1\n    maxFailures: 1\n    onAgentFailure: leave")
	b.pass(t)
	b.report(t, 1, "m1", aFailed, "boom")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mPartiallySucceeded {
		t.Fatalf("after the failure: %s", m.State)
	}
	b.clock.Add(5 * time.Hour) // the operator comes back hours later
	b.act(t, "m1", wire.MigrationRollback)
	b.pass(t)
	b.clock.Add(30 * time.Minute)
	b.pass(t)
	a := b.latest(t, "m1")["agent-1"]
	if a.State != aRollingBack || a.Action != wire.ActionRollback {
		t.Fatalf("rollback 30m after a request made 5h after the failure: %+v — its timer must start at the request", a)
	}
	// The agent never finishes: the rollback's own 1h deadline stops it…
	b.clock.Add(31 * time.Minute)
	b.pass(t)
	a = b.latest(t, "m1")["agent-1"]
	if a.State != aRollbackFailed || !strings.Contains(a.Error, "rollback deadline") {
		t.Fatalf("after the rollback deadline: %+v", a)
	}
	b.report(t, 1, "m1", aRollbackFailed, "cancelled")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mFailed || !strings.Contains(m.Reason, "run rollback again") {
		t.Fatalf("migration after the interrupted rollback: %s %q", m.State, m.Reason)
	}
	// …and it resumes, with a fresh timer again.
	b.clock.Add(3 * time.Hour)
	b.act(t, "m1", wire.MigrationRollback)
	b.pass(t)
	b.clock.Add(10 * time.Minute)
	b.pass(t)
	if d := b.desired(t, 1); len(d.Assignments) != 1 || d.Assignments[0].Action != wire.ActionRollback {
		t.Fatalf("resumed rollback not sent: %+v", d)
	}
	b.report(t, 1, "m1", aRolledBack, "")
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mRolledBack {
		t.Fatalf("after the resumed rollback: %s %q", m.State, m.Reason)
	}
}

// A rollback requested while an agent is still applying (it has not reported the rollback) is
// stopped by the rollback's own deadline when the agent stays reachable but silent: it ends as
// rollback_failed and the migration fails with the way to resume it, instead of rolling back
// forever with the deadline refused on every pass. A deadline the state machine refused would
// leave its error on the kept row without saving it; none does now.
func TestRollbackOfAnAgentStillApplyingHasADeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.apply(t, "m1", "    batchSize: 1")
	b.pass(t)
	b.report(t, 1, "m1", aApplying, "")
	b.pass(t)
	b.act(t, "m1", wire.MigrationRollback)
	b.pass(t)
	a := b.latest(t, "m1")["agent-1"]
	if a.State != aApplying || a.Action != wire.ActionRollback {
		t.Fatalf("after the rollback request: %s (%s); want the agent still applying, asked to roll back", a.State, a.Action)
	}
	for range 61 { // the agent stays online and says nothing for over the 1h deadline
		b.clock.Add(time.Minute)
		b.pass(t)
	}
	a = b.latest(t, "m1")["agent-1"]
	if a.State != aRollbackFailed || !strings.Contains(a.Error, "rollback deadline") || a.Action != wire.ActionCancel {
		t.Fatalf("after the rollback deadline: %s (%s) %q; want rollback_failed, cancelled, with the deadline as error", a.State, a.Action, a.Error)
	}
	b.pass(t)
	if m := b.migration(t, "m1"); m.State != mFailed || !strings.Contains(m.Reason, "run rollback again") {
		t.Fatalf("migration after its rollback's deadline: %s %q", m.State, m.Reason)
	}
}

// A cancel the agent confirmed is over: the hub drops it from the agent's desired state, and the
// agent then drops the finished attempt from its reports. The consistency check must not take
// that silence for a request never received: no finding, and nothing written again.
func TestCheckLeavesAConfirmedCancelAlone(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	b.observed(1, obs("m1", 1, aApplying))
	b.pass(t)
	if _, err := b.c.Act(ctx, "m1", wire.MigrationAbort, "test"); err != nil {
		t.Fatal(err)
	}
	b.pass(t)
	a := b.latest(t, "m1")["agent-1"]
	if a.Action != wire.ActionCancel {
		t.Fatalf("agent-1 %s/%s after the abort; want a cancel", a.State, a.Action)
	}
	b.observed(1, wire.ObservedAssignment{Migration: "m1", Attempt: 1, Generation: a.Generation, Action: wire.ActionCancel,
		State: aFailed, Error: "cancelled", StepName: "one", Applied: []int{0}})
	b.pass(t)
	if a := b.latest(t, "m1")["agent-1"]; a.AckedGeneration != a.Generation {
		t.Fatalf("agent-1 %s, acked %d of %d; want its confirmed cancel", a.State, a.AckedGeneration, a.Generation)
	}
	if d := b.desired(t, 1); len(d.Assignments) != 0 {
		t.Fatalf("desired state after the confirmed cancel: %+v; want nothing", d.Assignments)
	}
	b.observed(1) // the agent reports nothing about m1 any more
	b.pass(t)
	rev := func() uint64 {
		e, err := b.kv.Get(ctx, b.agents[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		return e.Revision()
	}
	before := rev()
	for range 3 {
		b.clock.Add(time.Minute)
		if fs, err := b.c.Check(ctx); err != nil || len(fs) != 0 {
			t.Fatalf("check after the confirmed cancel: %+v %v; want no finding", fs, err)
		}
		b.pass(t)
	}
	if got := b.findingEvents(); got != "" {
		t.Fatalf("finding events: %s; want none", got)
	}
	if after := rev(); after != before {
		t.Fatalf("agent-1's desired state written again (revision %d, was %d) for a cancel it confirmed", after, before)
	}
}

// An agent still reporting the attempt before the one the hub just made has not had the new
// request yet: the check gives it the same time as a request never received (resendAfter)
// before it reports an orphan attempt, rather than a finding opened and resolved around every
// retry.
func TestCheckGivesANewAttemptTimeBeforeCallingTheOldOneOrphan(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	b.apply(t, "m1", "    maxFailures: 5\n    onAgentFailure: leave")
	b.pass(t)
	b.report(t, 1, "m1", aFailed, "boom")
	b.pass(t)
	b.act(t, "m1", wire.MigrationRetry)
	b.pass(t)
	if a := b.latest(t, "m1")["agent-1"]; a.Attempt != 2 {
		t.Fatalf("after the retry: %+v", a)
	}
	// The agent, not yet told, still reports attempt 1 as in flight.
	b.c.ObserveForTest(wire.ObservedState{AgentID: b.agents[0].ID, Assignments: []wire.ObservedAssignment{
		{Migration: "m1", Attempt: 1, Generation: 1, State: aApplying}}})
	if fs, err := b.c.Check(ctx); err != nil || len(fs) != 0 {
		t.Fatalf("check just after the retry: %+v %v; want no finding yet", fs, err)
	}
	b.clock.Add(time.Minute)
	fs, err := b.c.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, f := range fs {
		kinds[f.Kind] = true
	}
	if !kinds[wire.FindingOrphanAttempt] {
		t.Fatalf("check a minute after the retry: %+v; want the orphan attempt reported", fs)
	}
}

// An orphan attempt is measured from when the hub replaced it (the newer attempt's creation), not
// from the newer attempt's last change: a cancel of the newer attempt (an abort, its deadline) is
// no reason to think the agent, still working on the old attempt, has only just been told of the
// new one. The finding stays open instead of being resolved and found again 30 s later.
func TestCheckKeepsAnOrphanWhileTheNewerAttemptChanges(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	b.apply(t, "m1", "    maxFailures: 5\n    onAgentFailure: leave")
	b.pass(t)
	b.report(t, 1, "m1", aFailed, "boom")
	b.pass(t)
	b.act(t, "m1", wire.MigrationRetry)
	b.pass(t)
	// The agent is stuck in a step of attempt 1 and does not take attempt 2.
	b.c.ObserveForTest(wire.ObservedState{AgentID: b.agents[0].ID, Assignments: []wire.ObservedAssignment{
		{Migration: "m1", Attempt: 1, Generation: 1, State: aApplying}}})
	orphan := func(when string) {
		t.Helper()
		fs, err := b.c.Check(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if f.Kind == wire.FindingOrphanAttempt && f.Attempt == 1 {
				return
			}
		}
		t.Fatalf("check %s: %+v; want attempt 1 reported as an orphan", when, fs)
	}
	b.clock.Add(time.Minute)
	orphan("a minute after the retry")
	b.act(t, "m1", wire.MigrationAbort)
	b.pass(t)
	if a := b.latest(t, "m1")["agent-1"]; a.Attempt != 2 || a.Action != wire.ActionCancel || !a.UpdatedAt.Equal(b.clock.Now()) {
		t.Fatalf("attempt 2 after the abort: %+v; want it just changed to a cancel", a)
	}
	orphan("just after the abort")
	// (never_received of attempt 2 is another matter: the cancel is a new request, and the
	// agent gets resendAfter for it.)
	if got := b.findingEvents(); strings.Count(got, "orphan_attempt") != 1 || !strings.Contains(got, "found orphan_attempt m1") {
		t.Fatalf("finding events: %s; want the orphan found once and not resolved", got)
	}
}
