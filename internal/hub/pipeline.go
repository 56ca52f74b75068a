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

func toWire(d ingest.DeadLetter) wire.DeadLetter {
	return wire.DeadLetter{Seq: d.Seq, Subject: d.Subject, Reason: d.Reason, Error: d.Error, Deliveries: d.Deliveries,
		StreamSeq: d.StreamSeq, Time: d.Time, OriginalTime: d.OriginalTime, Headers: d.Headers, Payload: string(d.Payload)}
}

func (p pipeline) DeadLetters(ctx context.Context, afterSeq uint64, limit int) ([]wire.DeadLetter, error) {
	ds, err := p.ing.DeadLetters(ctx, afterSeq, limit)
	if err != nil {
		return nil, err
	}
	out := make([]wire.DeadLetter, len(ds))
	for i, d := range ds {
		out[i] = toWire(d)
	}
	return out, nil
}

func (p pipeline) DeadLetter(ctx context.Context, seq uint64) (wire.DeadLetter, error) {
	d, err := p.ing.DeadLetter(ctx, seq)
	return toWire(d), err
}

func (p pipeline) Replay(ctx context.Context, seq uint64) error { return p.ing.Replay(ctx, seq) }

func (p pipeline) Purge(ctx context.Context, seq uint64) (int, error) { return p.ing.Purge(ctx, seq) }

func (p pipeline) Rehydrate(agentID string) { p.ing.Rehydrate(agentID) }
