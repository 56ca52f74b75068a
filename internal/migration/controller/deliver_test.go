package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// bigSpec is a valid migration on every agent with n steps whose run command is size bytes.
func bigSpec(name string, n, size int, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: godwit.dev/v1\nkind: Migration\nmetadata: {name: %s}\nspec:\n  toVersion: \"2\"\n  steps:\n", name)
	for i := range n {
		fmt.Fprintf(&b, "    - name: s%d\n      run: '%s'\n", i, strings.Repeat("x", size))
	}
	b.WriteString(extra)
	return b.String()
}

func (b *bundle) maxPayload(n int64) { b.c.cfg.MaxPayload = func() int64 { return n } }

func (b *bundle) eventsOf(typ string) []wire.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []wire.Event
	for _, e := range b.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// What cannot be delivered is refused at apply, naming the limit and the size; nothing is stored.
func TestApplyRefusesWhatCannotBeDelivered(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.maxPayload(64 << 10)
	_, err := b.c.Apply(context.Background(), []byte(bigSpec("big", 10, 8<<10, "")), false)
	var fe *fault.FieldError
	if !errors.As(err, &fe) || !errors.Is(err, fault.ErrInvalid) || fe.Field != "spec.steps" ||
		!strings.Contains(err.Error(), "max payload is 65536 bytes") || !strings.Contains(err.Error(), "would be 82") {
		t.Fatalf("apply of a 10×8 KiB spec under a 64 KiB max payload: %v", err)
	}
	if _, err := b.store.GetMigration(context.Background(), "big"); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("refused spec was stored: %v", err)
	}
	// The same spec fits a server that takes more.
	b.maxPayload(1 << 20)
	if _, err := b.c.Apply(context.Background(), []byte(bigSpec("big", 10, 8<<10, "")), false); err != nil {
		t.Fatalf("apply under a 1 MiB max payload: %v", err)
	}
}

// A migration stored past apply's checks (here: the max payload shrank since) fails on its
// own, with the reason in its state and an error event; the pass does not fail, and another
// migration's deadline still fires.
func TestUnrunnableMigrationFailsAloneAndDeadlinesGoOn(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	if _, err := b.c.Apply(ctx, []byte(bigSpec("big", 10, 8<<10, "")), false); err != nil {
		t.Fatal(err)
	}
	b.apply(t, "m1", "    batchSize: 100%\n    onAgentFailure: leave")
	// A spec that no longer parses (a database restored from another version, say).
	garbage := wire.Migration{Name: "garbled", Spec: "kind: Migration\nspec: [", SpecHash: "x", State: mRunning, Batches: 1,
		CurrentBatch: 0, CreatedAt: b.clock.Now(), UpdatedAt: b.clock.Now()}
	if err := b.store.CreateMigration(ctx, garbage, []wire.Assignment{{Migration: "garbled", AgentID: b.agents[1].ID, Attempt: 1,
		State: aApplying, Action: wire.ActionApply, Generation: 1, DispatchedAt: b.clock.Now(), CreatedAt: b.clock.Now(), UpdatedAt: b.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	b.maxPayload(64 << 10)
	for range 3 {
		b.pass(t) // no error: what is wrong belongs to those migrations
	}
	for name, want := range map[string]string{"big": "max payload is 65536 bytes", "garbled": "stored spec does not parse"} {
		m := b.migration(t, name)
		if m.State != mFailed || !strings.Contains(m.Reason, want) {
			t.Fatalf("%s: %s %q, want failed naming %q", name, m.State, m.Reason, want)
		}
	}
	// Nothing of big reached an agent, and garbled's agent is told to stop, without steps.
	if a := b.latest(t, "big")["agent-1"]; a.State != aSuperseded || !a.DispatchedAt.IsZero() {
		t.Fatalf("big's assignment: %+v", a)
	}
	d := b.desired(t, 2)
	var stop *wire.DesiredAssignment
	for i := range d.Assignments {
		if d.Assignments[i].Migration == "garbled" {
			stop = &d.Assignments[i]
		}
	}
	if stop == nil || stop.Action != wire.ActionCancel || stop.Steps != nil {
		t.Fatalf("agent-2's desired document: %+v", d)
	}
	var failed []string
	for _, e := range b.eventsOf(wire.EventMigrationStateChanged) {
		if e.Severity == wire.SeverityError {
			failed = append(failed, e.Data.Migration)
		}
	}
	if strings.Join(failed, ",") != "big,garbled" {
		t.Fatalf("error events for %v, want one each for big and garbled", failed)
	}
	// m1 goes on, and its deadline is judged: an hour of reachable agent time times it out.
	b.report(t, 1, "m1", aApplying, "")
	b.clock.Add(61 * time.Minute)
	b.pass(t)
	if a := b.latest(t, "m1")["agent-1"]; a.State != aTimedOut {
		t.Fatalf("m1 past its deadline: %+v", a)
	}
}

// failingKV refuses writes of one key, as a bus refuses a document it will not carry.
type failingKV struct {
	jetstream.KeyValue
	mu   sync.Mutex
	key  string
	errs int
}

func (f *failingKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if key == f.key {
		f.mu.Lock()
		f.errs++
		f.mu.Unlock()
		return 0, nats.ErrMaxPayload
	}
	return f.KeyValue.Put(ctx, key, value)
}

// A desired document the bus refuses is that agent's trouble: it is tried again on every pass,
// and neither stops deadlines nor restarts the settle time, so another agent's deadline fires.
func TestRefusedDesiredDocumentIsNotAnOutage(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	cfg := b.c.cfg
	kv := &failingKV{KeyValue: b.kv, key: b.agents[0].ID}
	cfg.Desired, cfg.Settle, cfg.Connected = kv, time.Minute, func() bool { return true }
	c := New(cfg)
	if err := c.lead(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.c = c
	b.apply(t, "m1", "    batchSize: 100%\n    onAgentFailure: leave")
	var passErr error
	for range 4 {
		passErr = c.Pass(context.Background())
		b.clock.Add(time.Minute)
	}
	if !errors.Is(passErr, nats.ErrMaxPayload) || kv.errs < 4 {
		t.Fatalf("pass error %v after %d refused writes; want the refusal reported on each pass", passErr, kv.errs)
	}
	b.report(t, 2, "m1", aApplying, "")
	for range 7 {
		b.clock.Add(10 * time.Minute)
		_ = c.Pass(context.Background())
	}
	if a := b.latest(t, "m1")["agent-2"]; a.State != aTimedOut {
		t.Fatalf("agent-2 after 70m of a 1h deadline while agent-1's document is refused: %+v", a)
	}
}

// Two migrations that each fit but together would not: the newer one's request is left out of
// the agent's document and its assignment fails, with the reason; the older one goes on.
func TestCombinedDocumentOverTheBudget(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	b.maxPayload(96 << 10)
	if _, err := b.c.Apply(ctx, []byte(bigSpec("old", 6, 8<<10, "  rollout: {onAgentFailure: leave}\n")), false); err != nil {
		t.Fatal(err)
	}
	b.clock.Add(time.Second)
	if _, err := b.c.Apply(ctx, []byte(bigSpec("new", 6, 8<<10, "  rollout: {onAgentFailure: leave}\n")), false); err != nil {
		t.Fatal(err)
	}
	b.pass(t)
	// old's request goes out; new's is only told to stop (in case an earlier document reached
	// the agent): a cancel carries no steps.
	d := b.desired(t, 1)
	if len(d.Assignments) != 2 || d.Assignments[1].Migration != "old" || d.Assignments[1].Action != wire.ActionApply ||
		d.Assignments[0].Migration != "new" || d.Assignments[0].Action != wire.ActionCancel || d.Assignments[0].Steps != nil {
		t.Fatalf("desired document: %d assignments, want old's request and new's cancel", len(d.Assignments))
	}
	a := b.latest(t, "new")["agent-1"]
	if a.State != aFailed || !strings.Contains(a.Failure, "cannot be delivered") || !strings.Contains(a.Failure, "98304 bytes") {
		t.Fatalf("new's assignment: %+v", a)
	}
	b.pass(t)
	if m := b.migration(t, "new"); m.State != mPaused || !strings.Contains(m.Reason, "failure budget exceeded") {
		t.Fatalf("new: %s %q, want paused by its failure budget", m.State, m.Reason)
	}
	if m := b.migration(t, "old"); m.State != mRunning {
		t.Fatalf("old: %s %q", m.State, m.Reason)
	}
	var undelivered int
	for _, e := range b.eventsOf(wire.EventAssignmentReconciled) {
		if e.Severity == wire.SeverityError && e.Data.Migration == "new" && strings.Contains(e.Data.Message, "cannot be delivered") {
			undelivered++
		}
	}
	if undelivered != 1 {
		t.Fatalf("%d error events for the undelivered request, want 1", undelivered)
	}
}

// Only a migration that has ended, and that no agent may still be working on, is deleted; its
// name stays taken, and its deletion is an operator action.
func TestDelete(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	b.apply(t, "m1", "    batchSize: 100%")
	b.pass(t)
	if err := b.c.Delete(ctx, "m1", "alice"); !errors.Is(err, fault.ErrConflict) || !strings.Contains(err.Error(), "is running") {
		t.Fatalf("delete of a running migration: %v", err)
	}
	if _, err := b.c.Act(ctx, "m1", wire.MigrationAbort, "alice"); err != nil {
		t.Fatal(err)
	}
	b.pass(t)
	// Both agents are asked to stop; neither has said so yet.
	err := b.c.Delete(ctx, "m1", "alice")
	if !errors.Is(err, fault.ErrConflict) || !strings.Contains(err.Error(), "2 agents have not confirmed") || !strings.Contains(err.Error(), "agent-1") {
		t.Fatalf("delete while agents may still work on it: %v", err)
	}
	b.report(t, 1, "m1", aFailed, "cancelled by operator")
	b.pass(t)
	// agent-2 is gone for good: revoking it lets the migration go.
	if err := b.store.RevokeAgent(ctx, b.agents[1].ID, b.clock.Now()); err != nil {
		t.Fatal(err)
	}
	b.c.cfg.Referenced = func(context.Context, string) ([]string, error) { return []string{"sweep drift"}, nil }
	if err := b.c.Delete(ctx, "m1", "alice"); !errors.Is(err, fault.ErrConflict) || !strings.Contains(err.Error(), "sweep drift depends on it") {
		t.Fatalf("delete of a migration a sweep remediates with: %v", err)
	}
	b.c.cfg.Referenced = nil
	if err := b.c.Delete(ctx, "m1", "alice"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := b.store.GetMigration(ctx, "m1"); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := b.c.Delete(ctx, "m1", "alice"); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	b.pass(t) // a pass after the delete has nothing of it left to do
	if d := b.desired(t, 1); len(d.Assignments) != 0 {
		t.Fatalf("agent-1 still asked about a deleted migration: %+v", d)
	}
	_, err = b.c.Apply(ctx, []byte(fmt.Sprintf(specTmpl, "m1", "    batchSize: 100%")), false)
	if !errors.Is(err, fault.ErrConflict) || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("apply under a deleted migration's name: %v", err)
	}
	var deleted int
	for _, e := range b.eventsOf(wire.EventOperatorAction) {
		if strings.Contains(string(e.Data.Extra), `"action":"delete"`) && strings.Contains(string(e.Data.Extra), `"actor":"alice"`) && e.Data.Migration == "m1" {
			deleted++
		}
	}
	if deleted != 1 {
		t.Fatalf("%d operator.action delete events, want 1", deleted)
	}
}
