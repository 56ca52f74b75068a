package hub

import (
	"context"
	"fmt"

	"godwit.dev/godwit/internal/ingest"
	"godwit.dev/godwit/internal/wire"
)

// pipeline adapts the ingester to what the API needs.
type pipeline struct {
	h   *Hub
	ing *ingest.Ingester
}

func (p pipeline) Status(ctx context.Context) (wire.IngestStatus, error) {
	pending, ackPending, err := p.ing.Lag(ctx)
	if err != nil {
		return wire.IngestStatus{}, err
	}
	st := wire.IngestStatus{Consumer: ingest.DefaultConsumer, Pending: pending, AckPending: ackPending}
	s, err := p.h.js.Stream(ctx, wire.StreamDeadLetter)
	if err != nil {
		return st, fmt.Errorf("dead-letter stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return st, fmt.Errorf("dead-letter stream: %w", err)
	}
	st.DeadLetters = info.State.Msgs
	return st, nil
}

func (p pipeline) DeadLetters(ctx context.Context, afterSeq uint64, limit int) ([]wire.DeadLetter, error) {
	return p.ing.DeadLetters(ctx, afterSeq, limit)
}

func (p pipeline) DeadLetter(ctx context.Context, seq uint64) (wire.DeadLetter, error) {
	return p.ing.DeadLetter(ctx, seq)
}

func (p pipeline) Replay(ctx context.Context, seq uint64) error { return p.ing.Replay(ctx, seq) }

func (p pipeline) Purge(ctx context.Context, seq uint64) (int, error) { return p.ing.Purge(ctx, seq) }

func (p pipeline) Rehydrate(agentID string) { p.ing.Rehydrate(agentID) }
