package sqlstore

// This file keeps what the hub's replicas share besides the work: the leadership epochs handed
// out by the lease, the NATS cluster the replicas use, and the replicas' rows for status pages.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// NATSIdentitySetting is the hub setting that names the NATS cluster of a database's hubs.
const NATSIdentitySetting = "nats_identity"

// AdoptEpoch implements store.Store.
func (s *Store) AdoptEpoch(ctx context.Context, name, holder string, epoch int64, now time.Time) error {
	if epoch <= 0 {
		return fault.Invalid("epoch", "must be positive (got %d)", epoch)
	}
	res, err := s.exec(ctx, `INSERT INTO leadership (name, epoch, holder, updated_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (name) DO UPDATE SET epoch = excluded.epoch, holder = excluded.holder, updated_at = excluded.updated_at
		WHERE leadership.epoch <= excluded.epoch`, name, epoch, holder, micros(now))
	if err != nil {
		return fmt.Errorf("adopt epoch %d of %s: %w", epoch, name, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("adopt epoch %d of %s: a newer epoch was adopted: %w", epoch, name, fault.ErrFenced)
	}
	return nil
}

// AdoptNATS implements store.Store.
func (s *Store) AdoptNATS(ctx context.Context, identity string, now time.Time) error {
	if identity == "" {
		return fault.Invalid("identity", "must not be empty")
	}
	tx, end, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("adopt nats: %w", err)
	}
	defer end()
	if _, err := tx.ExecContext(ctx, `INSERT INTO hub_settings (key, value, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, created_at = excluded.created_at`,
		NATSIdentitySetting, identity, micros(now)); err != nil {
		return fmt.Errorf("adopt nats: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE leadership SET epoch = 0`); err != nil {
		return fmt.Errorf("adopt nats: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("adopt nats: %w", err)
	}
	return nil
}

// SaveReplica implements store.Store.
func (s *Store) SaveReplica(ctx context.Context, r wire.HubReplica) error {
	if r.ID == "" {
		return fault.Invalid("id", "must not be empty")
	}
	_, err := s.exec(ctx, `INSERT INTO hub_replicas (id, address, nats, role, epoch, since, started_at, seen_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (id) DO UPDATE SET address = excluded.address, nats = excluded.nats, role = excluded.role, epoch = excluded.epoch,
		since = excluded.since, started_at = excluded.started_at, seen_at = excluded.seen_at`,
		r.ID, r.Address, r.NATS, r.Role, r.Epoch, micros(r.Since), micros(r.StartedAt), micros(r.LastSeen))
	if err != nil {
		return fmt.Errorf("save replica %s: %w", r.ID, err)
	}
	return nil
}

// ListReplicas implements store.Store.
func (s *Store) ListReplicas(ctx context.Context) ([]wire.HubReplica, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, address, nats, role, epoch, since, started_at, seen_at FROM hub_replicas ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	defer rows.Close()
	out := []wire.HubReplica{}
	for rows.Next() {
		var r wire.HubReplica
		var since, started, seen int64
		if err := rows.Scan(&r.ID, &r.Address, &r.NATS, &r.Role, &r.Epoch, &since, &started, &seen); err != nil {
			return nil, fmt.Errorf("list replicas: %w", err)
		}
		r.Since, r.StartedAt, r.LastSeen = fromMicros(since), fromMicros(started), fromMicros(seen)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	return out, nil
}

// DeleteReplica implements store.Store.
func (s *Store) DeleteReplica(ctx context.Context, id string) error {
	if _, err := s.exec(ctx, `DELETE FROM hub_replicas WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete replica %s: %w", id, err)
	}
	return nil
}
