package outage

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// flakyStore is the hub's store with a switch: while down, every call fails as an unreachable
// database would (a transient error), and nothing is written.
type flakyStore struct {
	store.Store
	down atomic.Bool
}

var errDown = fmt.Errorf("database unreachable (drill): %w", fault.ErrUnavailable)

func (f *flakyStore) fail() error {
	if f.down.Load() {
		return errDown
	}
	return nil
}

// IsTransient lets the ingest treat the drill's outage as the transient error it is.
func (f *flakyStore) IsTransient(err error) bool {
	if err == errDown {
		return true
	}
	if t, ok := f.Store.(interface{ IsTransient(error) bool }); ok {
		return t.IsTransient(err)
	}
	return false
}

func (f *flakyStore) Ping(ctx context.Context) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.Ping(ctx)
}

func (f *flakyStore) CheckAdminToken(ctx context.Context, hash string) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.CheckAdminToken(ctx, hash)
}

func (f *flakyStore) ListAgents(ctx context.Context) ([]wire.Agent, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Store.ListAgents(ctx)
}

func (f *flakyStore) AgentCredential(ctx context.Context, id string) (string, bool, error) {
	if err := f.fail(); err != nil {
		return "", false, err
	}
	return f.Store.AgentCredential(ctx, id)
}

func (f *flakyStore) UpdateLiveness(ctx context.Context, u []store.Liveness) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.UpdateLiveness(ctx, u)
}

func (f *flakyStore) InsertEvents(ctx context.Context, e []store.StoredEvent, s []store.EventState) (int, error) {
	if err := f.fail(); err != nil {
		return 0, err
	}
	return f.Store.InsertEvents(ctx, e, s)
}

func (f *flakyStore) AgentEventStates(ctx context.Context, ids []string) ([]store.EventState, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Store.AgentEventStates(ctx, ids)
}

func (f *flakyStore) GetMigration(ctx context.Context, name string) (wire.Migration, error) {
	if err := f.fail(); err != nil {
		return wire.Migration{}, err
	}
	return f.Store.GetMigration(ctx, name)
}

func (f *flakyStore) ListMigrations(ctx context.Context) ([]wire.Migration, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Store.ListMigrations(ctx)
}

func (f *flakyStore) ListAssignments(ctx context.Context, m string) ([]wire.Assignment, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Store.ListAssignments(ctx, m)
}

func (f *flakyStore) SaveMigration(ctx context.Context, fence store.Fence, m wire.Migration, as []wire.Assignment) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.SaveMigration(ctx, fence, m, as)
}

func (f *flakyStore) TouchEpoch(ctx context.Context, fence store.Fence, now time.Time) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.TouchEpoch(ctx, fence, now)
}
