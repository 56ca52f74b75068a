package store

import (
	"context"

	"godwit.dev/godwit/internal/wire"
)

// FailoverStore holds failover groups: their specs, their maintenance pause and their members.
// An agent belongs to at most one group, across every replica of the hub: the store refuses a
// second membership in the same transaction that would store it.
type FailoverStore interface {
	// PutFailoverGroup stores g with its members (g.Members, agent ids) in one transaction:
	// a new group when g.Version is 0 (a group of that name: ErrConflict), else a replacement
	// only while the stored version is still g.Version (else ErrConflict; unknown: ErrNotFound).
	// A member that belongs to another group: ErrConflict naming the agent and that group,
	// and nothing is stored. It returns the group as stored (version moved on).
	PutFailoverGroup(ctx context.Context, g wire.FailoverGroup) (wire.FailoverGroup, error)
	GetFailoverGroup(ctx context.Context, name string) (wire.FailoverGroup, error)
	// ListFailoverGroups returns every group by name.
	ListFailoverGroups(ctx context.Context) ([]wire.FailoverGroup, error)
	// DeleteFailoverGroup removes a group and its memberships. Unknown: ErrNotFound.
	DeleteFailoverGroup(ctx context.Context, name string) error
}
