package controller

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// racedStore lands a pass of the leader's controller between each operator write's read and
// its write, as a busy hub can: every report from an agent nudges a pass, and a pass saves a
// running migration to keep the time it counted. races is how many writes are raced (<0: all).
type racedStore struct {
	store.Store
	t      *testing.T
	b      *bundle
	mu     sync.Mutex
	races  int
	passes int
}

func (r *racedStore) SaveMigration(ctx context.Context, f store.Fence, m wire.Migration, as []wire.Assignment) error {
	if f.Epoch == 0 { // an operator's write, not the controller's
		r.mu.Lock()
		race := r.races != 0
		if race {
			r.races--
			r.passes++
		}
		r.mu.Unlock()
		if race {
			r.b.clock.Add(time.Second)
			// The leader's pass runs on its own context, not on the operator's request's.
			if err := r.b.c.Pass(context.WithoutCancel(ctx)); err != nil {
				r.t.Errorf("the racing pass: %v", err)
			}
		}
	}
	return r.Store.SaveMigration(ctx, f, m, as)
}

// An operator's action is not refused because the controller saved the migration between its
// read and its write several times in a row: it is redone on the fresh record until it gets
// through, and what the passes saved meanwhile stays.
func TestActGetsThroughPassesThatKeepSavingTheMigration(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	b.apply(t, "m1", "    batchSize: 1")
	b.pass(t) // dispatched: from now on every pass counts time and saves the migration
	before := b.migration(t, "m1")
	if before.State != mRunning {
		t.Fatalf("before the action: %s", before.State)
	}
	raced := &racedStore{Store: b.store, t: t, b: b, races: 8}
	cfg := b.c.cfg
	cfg.Store = raced
	op := New(cfg) // the API's side: the same store, its writes raced by b.c's passes

	got, err := op.Act(ctx, "m1", wire.MigrationPause, "alice")
	if err != nil {
		t.Fatalf("pause raced by %d passes: %v", raced.passes, err)
	}
	m := b.migration(t, "m1")
	if m.State != mPaused || got.State != mPaused || got.Version != m.Version {
		t.Fatalf("after the pause: stored %s v%d, returned %s v%d; want paused, the same version", m.State, m.Version, got.State, got.Version)
	}
	if m.Version < before.Version+9 {
		t.Fatalf("version %d after 8 racing passes and the pause, from %d: a pass's save was lost", m.Version, before.Version)
	}
	if want := before.ActiveMS + 8*time.Second.Milliseconds(); m.ActiveMS != want {
		t.Fatalf("%dms counted after 8 racing passes of 1s, want %d: the pause overwrote what they saved", m.ActiveMS, want)
	}
}

// A migration that never stops changing is not waited on past the caller's context: the action
// ends with the context's error, naming the migration, and changes nothing of its own.
func TestActEndsWithItsContextWhileTheMigrationKeepsChanging(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.apply(t, "m1", "    batchSize: 1")
	b.pass(t)
	raced := &racedStore{Store: b.store, t: t, b: b, races: -1}
	cfg := b.c.cfg
	cfg.Store = raced
	op := New(cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := op.Act(ctx, "m1", wire.MigrationAbort, "alice")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "m1") {
		t.Fatalf("abort raced forever: %v; want the context's deadline, naming m1", err)
	}
	if m := b.migration(t, "m1"); m.State != mRunning {
		t.Fatalf("after the abort gave up: %s, want running", m.State)
	}
	if raced.passes < 2 {
		t.Fatalf("%d tries in 300ms: the action did not retry", raced.passes)
	}
}

// cancelOnRead ends the caller's context at its reads-th GetMigration, as a client that hangs up
// while its action is being tried again.
type cancelOnRead struct {
	store.Store
	mu     sync.Mutex
	reads  int
	at     int
	cancel context.CancelFunc
}

func (s *cancelOnRead) GetMigration(ctx context.Context, name string) (wire.Migration, error) {
	s.mu.Lock()
	s.reads++
	if s.reads == s.at {
		s.cancel()
	}
	s.mu.Unlock()
	return s.Store.GetMigration(ctx, name)
}

// The context may end during a try as well as during the pause between tries: either way the
// action ends with the context's error naming the migration.
func TestActEndingWithItsContextDuringATryNamesTheMigration(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.apply(t, "m1", "    batchSize: 1")
	b.pass(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raced := &racedStore{Store: &cancelOnRead{Store: b.store, at: 2, cancel: cancel}, t: t, b: b, races: 1}
	cfg := b.c.cfg
	cfg.Store = raced
	op := New(cfg)

	_, err := op.Act(ctx, "m1", wire.MigrationPause, "alice")
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "m1") {
		t.Fatalf("pause whose context ended in its second try: %v; want the context's error, naming m1", err)
	}
	if m := b.migration(t, "m1"); m.State != mRunning {
		t.Fatalf("after the pause gave up: %s, want running", m.State)
	}
}
