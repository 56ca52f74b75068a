package ingest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

var (
	eventPrefix = strings.TrimSuffix(bus.EventSubjects, ">")
	hubToken    = strings.TrimPrefix(bus.HubEventSubject, eventPrefix)
)

// outcome tells the fetch loop how a batch went.
type outcome int

const (
	proceed outcome = iota
	backOff         // a transient store failure: pause fetching for NakDelay
	aborted         // Stop's budget ran out; the batch was handed back
)

// item is one delivered event that passed validation: a message's single event, or one event
// of a batch message.
type item struct {
	m     *message
	index int // its place in its batch message, from 0 (0 for a single event)
	ev    store.StoredEvent
	agent string // the authenticated agent ("" for the hub's own events)
}

// group is one event id of a batch and every delivery of it in that batch.
type group []*item

func (g group) event() store.StoredEvent { return g[0].ev }

// batch is a prepared batch: its events grouped by id, and per agent the newest of its events
// overall and per migration, the candidates for its derived state (see state.go). Candidates
// are found while the batch before is written; only the comparison with the cache is left for
// the store call. A fetch holding more than Config.WriteBatch events (a fetch of event batches
// can hold more than Config.Batch) is cut into chunks of at most WriteBatch, each with its own
// candidates, each written in a transaction of its own.
type batch struct {
	groups     []group
	candidates []store.EventState // when chunks is nil
	chunks     []batch
}

func newBatch(groups []group) batch { return batch{groups: groups, candidates: candidates(groups)} }

// prepared is the batch of a fetch's groups, cut into chunks of at most WriteBatch events.
func (i *Ingester) prepared(groups []group) batch {
	n := i.cfg.WriteBatch
	if len(groups) <= n {
		return newBatch(groups)
	}
	b := batch{groups: groups}
	for start := 0; start < len(groups); start += n {
		b.chunks = append(b.chunks, newBatch(groups[start:min(start+n, len(groups))]))
	}
	return b
}

// handle processes one fetched batch. ctx is cancelled only when Stop's budget runs out.
func (i *Ingester) handle(ctx context.Context, acks *acker, msgs []jetstream.Msg) outcome {
	if ctx.Err() != nil {
		i.handBack(msgs)
		return aborted
	}
	return i.store(ctx, acks, i.prepare(ctx, msgs))
}

// prepare validates a fetched batch: it dead-letters what can never be stored (a message that
// is neither an event nor a readable event batch, and each event of a batch on its own) and
// groups the other events by event id. It touches neither the store nor the derived state, so it
// may run while the batch before it is being stored. Decoding is spread over the CPUs.
func (i *Ingester) prepare(ctx context.Context, msgs []jetstream.Msg) batch {
	i.m.batchSize.Observe(float64(len(msgs)))
	checked := i.inspectAll(msgs)
	var groups []group
	byID := make(map[string]int, len(msgs))
	for n, msg := range msgs {
		c := &checked[n]
		if c.md == nil {
			// Every fetched message has metadata; without it there is no delivery count or
			// sequence to record, so leave it to the server.
			i.log.Error("ingest: message without JetStream metadata; handing it back", "subject", msg.Subject(), "err", c.err)
			_ = msg.NakWithDelay(i.cfg.NakDelay)
			continue
		}
		if c.md.NumDelivered > 1 {
			i.m.redeliveries.Inc()
		}
		if c.err != nil {
			i.deadLetter(ctx, msg, c.md, c.reason, c.err)
			continue
		}
		for e := range c.events {
			el := &c.events[e]
			if it := &el.item; el.err == nil && it.agent != "" {
				if it.ev.AgentTime != nil {
					i.m.clamped.Inc()
					i.quota.warnClamped(i.log, it)
				}
				// Charged on first delivery only: a redelivery is the hub's doing, not the agent's.
				// A redelivered batch (handed back for another event's sake) keeps the first
				// delivery's verdict: an event the quota refused then has its dead letter.
				switch {
				case c.md.NumDelivered == 1:
					if err := i.quota.take(it.agent, len(el.data), c.md.Timestamp); err != nil {
						el.reason, el.err = ReasonQuota, err
					}
				case c.m.batch && i.quota.bounded():
					before, err := i.deadLetteredBefore(ctx, msg, c.md, e)
					if err != nil {
						i.log.Warn("ingest: cannot tell whether a redelivered batch's event was dead-lettered; handing it back",
							"stream_seq", c.md.Sequence.Stream, "index", e+1, "err", err)
						i.settle(c.m, settledNakDelay)
						continue
					}
					if before {
						i.settle(c.m, settledDeadLettered)
						continue
					}
				}
			}
			if el.err != nil {
				i.settle(c.m, i.deadLetterEvent(ctx, c.m, e, el.data, el.reason, el.err))
				continue
			}
			it := &el.item
			if n, ok := byID[it.ev.ID]; ok {
				groups[n] = append(groups[n], it)
				continue
			}
			byID[it.ev.ID] = len(groups)
			groups = append(groups, group{it})
		}
	}
	return i.prepared(groups)
}

// inspected is what inspectAll found about one message: no metadata (md nil, err says why), the
// dead-letter reason and error of the message as a whole, or its events.
type inspected struct {
	md     *jetstream.MsgMetadata
	m      *message
	events []element
	reason string
	err    error
}

// element is one event of a message: its bytes, and the item, or why it is dead-lettered.
type element struct {
	data   []byte
	item   item
	reason string
	err    error
}

// minPerWorker is the fewest messages worth a goroutine of their own in inspectAll.
const minPerWorker = 64

// inspectAll reads the metadata of every message and inspects it, in order, over up to
// GOMAXPROCS goroutines. A panic in one of them is raised again in the caller.
func (i *Ingester) inspectAll(msgs []jetstream.Msg) []inspected {
	out := make([]inspected, len(msgs))
	// One allocation for the batch's messages and single events, not one a message.
	ms := make([]message, len(msgs))
	singles := make([]element, len(msgs))
	one := func(n int) {
		md, err := msgs[n].Metadata()
		if err != nil {
			out[n] = inspected{err: err}
			return
		}
		out[n] = i.inspect(msgs[n], md, &ms[n], singles[n:n+1:n+1])
	}
	workers := min(runtime.GOMAXPROCS(0), (len(msgs)+minPerWorker-1)/minPerWorker)
	if workers <= 1 {
		for n := range msgs {
			one(n)
		}
		return out
	}
	var wg sync.WaitGroup
	panics := make(chan any, workers)
	chunk := (len(msgs) + workers - 1) / workers
	for start := 0; start < len(msgs); start += chunk {
		wg.Add(1)
		go func(start, end int) {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					panics <- carriedPanic{value: p, stack: debug.Stack(), where: "decoding a batch"}
				}
			}()
			for n := start; n < end; n++ {
				one(n)
			}
		}(start, min(start+chunk, len(msgs)))
	}
	wg.Wait()
	select {
	case p := <-panics:
		panic(p)
	default:
	}
	return out
}

// store writes the groups of a prepared batch and acknowledges them, or hands them back. Batch
// messages make a fetch of Batch messages hold more events than that: they are written in
// transactions of at most Batch events each.
func (i *Ingester) store(ctx context.Context, acks *acker, b batch) outcome {
	if b.chunks == nil {
		return i.storeChunk(ctx, acks, b)
	}
	out := proceed
	for _, chunk := range b.chunks {
		switch out {
		case aborted:
			i.handBackGroups(chunk.groups)
		case backOff:
			i.settleAll(chunk.groups, settledNakDelay)
		default:
			out = i.storeChunk(ctx, acks, chunk)
		}
	}
	return out
}

// storeChunk writes the groups of b, at most Batch of them, in one transaction.
func (i *Ingester) storeChunk(ctx context.Context, acks *acker, b batch) outcome {
	groups := b.groups
	if len(groups) == 0 {
		return proceed
	}
	err := i.commit(ctx, acks, b)
	switch {
	case err == nil:
		return proceed
	case ctx.Err() != nil:
		i.handBackGroups(groups)
		return aborted
	case i.transient(err):
		i.log.Warn("ingest: transient store error; batch handed back", "events", len(groups), "delay", i.cfg.NakDelay, "err", err)
		for _, g := range groups {
			i.nak(g)
		}
		return backOff
	}

	if len(groups) == 1 {
		acks.send(i.refused(ctx, groups[0], err))
		return proceed
	}
	// Not transient: find the events the store refuses by writing them one at a time, so that
	// the others are stored now.
	i.log.Warn("ingest: store refused a batch; retrying its events one by one", "events", len(groups), "err", err)
	out := proceed
	for _, g := range groups {
		err := i.commit(ctx, acks, newBatch([]group{g}))
		switch {
		case err == nil:
		case ctx.Err() != nil:
			i.handBackGroups([]group{g})
			out = aborted
		case i.transient(err):
			i.nak(g)
			out = max(out, backOff)
		default:
			acks.send(i.refused(ctx, g, err))
		}
	}
	return out
}

// inspect reads one message: a single event, or an event batch (wire.HeaderEvents) split into
// its events, each decoded and validated on its own. single is room for a single event's element.
func (i *Ingester) inspect(msg jetstream.Msg, md *jetstream.MsgMetadata, m *message, single []element) inspected {
	data := msg.Data()
	token, ok := strings.CutPrefix(msg.Subject(), eventPrefix)
	subjectAgent := token
	switch {
	case ok && token == hubToken:
		subjectAgent = ""
	case ok && bus.ValidAgentID(token):
	default:
		return inspected{md: md, reason: ReasonInvalid, err: fmt.Errorf("subject %q names neither an agent nor the hub", msg.Subject())}
	}
	*m = message{msg: msg, md: md, count: 1}
	events := single
	events[0].data = data
	if count, isBatch := batchHeader(msg); isBatch {
		parts, err := wire.SplitEventBatch(count, data)
		if err != nil {
			reason := ReasonInvalid
			if len(data) > wire.MaxBatchBytes {
				reason = ReasonTooLarge
			}
			return inspected{md: md, reason: reason, err: err}
		}
		m.count, m.batch = len(parts), true
		events = make([]element, len(parts))
		for n, p := range parts {
			events[n].data = p
		}
	}
	m.open = m.count
	for n := range events {
		el := &events[n]
		el.reason, el.err = i.inspectEvent(&el.item, el.data, md, subjectAgent)
		el.item.m, el.item.index = m, n
	}
	return inspected{md: md, m: m, events: events}
}

// batchHeader returns the value of the message's wire.HeaderEvents, and whether it has one.
func batchHeader(msg jetstream.Msg) (string, bool) {
	h := msg.Headers()
	if h == nil {
		return "", false
	}
	v, ok := h[wire.HeaderEvents]
	if !ok || len(v) == 0 {
		return "", ok
	}
	return v[0], true
}

// inspectEvent decodes and validates one event into it. A non-nil error comes with the
// dead-letter reason.
func (i *Ingester) inspectEvent(it *item, data []byte, md *jetstream.MsgMetadata, subjectAgent string) (string, error) {
	if len(data) > wire.MaxEventBytes {
		return ReasonTooLarge, fmt.Errorf("event is %d bytes, the limit is %d", len(data), wire.MaxEventBytes)
	}
	ev, err := wire.DecodeEvent(data)
	if err != nil {
		return ReasonDecode, fmt.Errorf("not a JSON event: %w", err)
	}
	if err := ev.Validate(subjectAgent); err != nil {
		if errors.Is(err, wire.ErrHubOnlyType) {
			return ReasonHubOnly, err
		}
		return ReasonInvalid, err
	}
	if subjectAgent != "" && ev.Data.AgentID == "" {
		// The subject is the authenticated identity; store the event under it so that filters
		// by agent find it. The body is kept exactly as received.
		ev.Data.AgentID = subjectAgent
	}
	received := md.Timestamp
	if received.IsZero() {
		received = i.cfg.Now()
	}
	stored := store.StoredEvent{Event: ev, Raw: data, ReceivedAt: received.UTC()}
	// An agent's clock ahead of the stream's moves its events to the top of every listing and
	// freezes its derived state (which only moves forward in time): such a time is replaced by
	// the receipt time, and the agent's is kept (the body holds it too) to show it was.
	if subjectAgent != "" && ev.Time.After(received.Add(i.cfg.ClockSkew)) {
		agentTime := ev.Time
		stored.Time, stored.AgentTime = received.UTC(), &agentTime
	}
	*it = item{ev: stored, agent: subjectAgent}
	return "", nil
}

// commit writes the batch's events and the state rows they advance in one transaction, then
// hands every delivery in them to the acker.
func (i *Ingester) commit(ctx context.Context, acks *acker, b batch) error {
	groups := b.groups
	// A store call longer than AckWait is pointless: the server has handed the batch to
	// another replica by then.
	sctx, cancel := context.WithTimeoutCause(ctx, i.cfg.AckWait, errStoreTimeout)
	defer cancel()
	states, err := i.advancing(sctx, b.candidates)
	if err != nil {
		return storeErr(sctx, err)
	}
	events := make([]store.StoredEvent, len(groups))
	for n, g := range groups {
		events[n] = g.event()
	}
	inserted, err := i.cfg.Store.InsertEvents(sctx, events, states)
	if err != nil {
		return storeErr(sctx, err)
	}
	i.advanced(states)
	i.m.ingested.Add(float64(inserted))
	i.m.duplicates.Add(float64(deliveries(groups) - inserted))
	acks.send(i.settleAll(groups, settledStored))
	return nil
}

var errStoreTimeout = errors.New("store call outlasted the ack wait")

// storeErr marks our own timeout as such, so that it counts as transient.
func storeErr(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), errStoreTimeout) {
		return fmt.Errorf("%w: %w", errStoreTimeout, err)
	}
	return err
}

func (i *Ingester) transient(err error) bool {
	return errors.Is(err, errStoreTimeout) || i.cfg.IsTransient(err)
}

// nak hands deliveries back for redelivery after NakDelay.
func (i *Ingester) nak(g group) {
	i.settleAll([]group{g}, settledNakDelay)
}

// handBack returns messages for immediate redelivery to the other replicas (Stop ran out of time).
func (i *Ingester) handBack(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.Nak()
	}
}

func (i *Ingester) handBackGroups(groups []group) {
	i.settleAll(groups, settledHandBack)
}

// refused handles an event the store refused on its own: handed back with a delay until its
// delivery limit, dead-lettered on the last delivery. It returns the messages that are now to be
// acknowledged (the rest of a batch message was stored).
func (i *Ingester) refused(ctx context.Context, g group, err error) []*message {
	var acks []*message
	for _, it := range g {
		md := it.m.md
		var s settlement
		if md.NumDelivered >= uint64(i.cfg.MaxDeliver) {
			s = i.deadLetterEvent(ctx, it.m, it.index, it.ev.Raw, ReasonMaxDeliveries,
				fmt.Errorf("store refused the event on %d deliveries: %w", md.NumDelivered, err))
		} else {
			i.log.Warn("ingest: store refused an event; it will be redelivered", "event_id", it.ev.ID,
				"stream_seq", md.Sequence.Stream, "deliveries", md.NumDelivered, "max_deliver", i.cfg.MaxDeliver, "err", err)
			s = settledNakDelay
		}
		if i.settle(it.m, s) {
			acks = append(acks, it.m)
		}
	}
	return acks
}
