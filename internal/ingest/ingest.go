package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Defaults for Config.
const (
	DefaultConsumer   = "godwit-ingest"
	DefaultBatch      = 10000
	DefaultMaxWait    = time.Second
	DefaultAckWait    = 30 * time.Second
	DefaultMaxDeliver = 5
	DefaultNakDelay   = 2 * time.Second
	DefaultClockSkew  = 5 * time.Minute
)

// lagInterval is how often the consumer gauges are refreshed from the server.
const lagInterval = 5 * time.Second

// ackTimeout bounds the confirmed acknowledgement that closes a batch.
const ackTimeout = 5 * time.Second

// Config configures an Ingester. Zero values take the defaults.
type Config struct {
	JS     jetstream.JetStream // the hub's JetStream (account GODWIT); required
	Store  store.Store         // required
	Logger *slog.Logger
	// Registry receives the metrics; nil keeps them unexported.
	Registry prometheus.Registerer

	// Consumer is the durable consumer shared by every hub replica.
	Consumer string
	// Batch is the most messages fetched at a time (an event batch message holds several
	// events), and the most events written in one transaction unless WriteBatch says less.
	Batch int
	// WriteBatch is the most events written in one transaction; 0 is Batch, what the hub uses
	// on every engine. A bound below a fetch's events splits the fetch into several
	// transactions, its messages unacknowledged until their chunk is written: 1,000 on SQLite
	// made 100,000-agent rollouts slower or collapse (docs/operations.md, "The 100,000-agent
	// regression"; why is not proven).
	WriteBatch int
	// MaxWait is how long one pull request lasts: how long a read waits for a first message on
	// an idle stream. Stop waits for the open request to end, so it also bounds how long Stop
	// takes on an idle stream.
	MaxWait time.Duration
	// AckWait is how long a delivered message may stay un-acknowledged before the server hands
	// it to another replica. A store call taking longer is abandoned as a transient failure.
	AckWait time.Duration
	// MaxDeliver is how many deliveries a message that the store refuses (not transiently)
	// gets before it is dead-lettered.
	MaxDeliver int
	// NakDelay is the redelivery delay after a store failure, and the pause in fetching after a
	// transient one.
	NakDelay time.Duration
	// IsTransient reports store errors worth retrying without limit. Nil uses the store's own
	// IsTransient method when it has one (sqlstore does), else treats no error as transient.
	IsTransient func(error) bool
	// Now is the clock, used only where a message lacks JetStream metadata. Received times
	// come from the stream.
	Now func() time.Time
	// EnsureStreams declares the events and dead-letter streams again (bus.EnsureStreams with
	// the hub's options). The ingester calls it when it finds the events stream gone; nil leaves
	// the stream missing, reported by Health until someone declares it.
	EnsureStreams func(ctx context.Context) error
	// ClockSkew is how far ahead of its receipt (the stream's timestamp) an agent's event time
	// may be; a later one is replaced by the receipt time and kept as the event's agent time.
	// 0 means DefaultClockSkew.
	ClockSkew time.Duration
	// Quota bounds what one agent may send; the zero Quota bounds nothing.
	Quota Quota
}

// Ingester consumes the events stream into the store. See the package comment.
type Ingester struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	fatal chan error

	lifecycle sync.Mutex
	cons      jetstream.Consumer
	run       *run

	mu     sync.Mutex
	agents map[string]*agentState // derived-state cache, see state.go

	quota *quotas // per-agent quota and clock-skew warnings, see quota.go
	// dlq is the dead-letter stream, looked up by prepare (one goroutine) the first time a
	// redelivered batch asks what was dead-lettered of it (deadLetteredBefore).
	dlq jetstream.Stream

	healthMu sync.Mutex
	health   error // why the ingester cannot fetch; nil while it can
}

// run is one Start..Stop cycle.
type run struct {
	stopFetching context.CancelFunc // soft stop: no new fetches
	abort        context.CancelFunc // budget exhausted: cancel the store call in flight
	done         chan struct{}      // the fetch loop and the lag refresher have exited
}

// New returns an ingester; Start starts it.
func New(cfg Config) *Ingester {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Consumer == "" {
		cfg.Consumer = DefaultConsumer
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.WriteBatch == 0 || cfg.WriteBatch > cfg.Batch {
		cfg.WriteBatch = cfg.Batch
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = DefaultMaxDeliver
	}
	if cfg.NakDelay == 0 {
		cfg.NakDelay = DefaultNakDelay
	}
	if cfg.IsTransient == nil {
		if t, ok := cfg.Store.(interface{ IsTransient(error) bool }); ok {
			cfg.IsTransient = t.IsTransient
		} else {
			cfg.IsTransient = func(error) bool { return false }
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	return &Ingester{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "ingest"),
		m:      newMetrics(cfg.Registry),
		fatal:  make(chan error, 1),
		agents: map[string]*agentState{},
		quota:  newQuotas(cfg.Quota),
	}
}

func (c *Config) validate() error {
	switch {
	case c.JS == nil:
		return fault.Invalid("JS", "a JetStream handle is required")
	case c.Store == nil:
		return fault.Invalid("Store", "a store is required")
	case c.Batch < 1:
		return fault.Invalid("Batch", "must be at least 1 (got %d)", c.Batch)
	case c.WriteBatch < 1:
		return fault.Invalid("WriteBatch", "must be at least 1 (got %d)", c.WriteBatch)
	case c.MaxWait <= 0:
		return fault.Invalid("MaxWait", "must be positive")
	case c.AckWait <= 0:
		return fault.Invalid("AckWait", "must be positive")
	case c.MaxWait >= c.AckWait:
		return fault.Invalid("MaxWait", "must be shorter than AckWait (%s), got %s", c.AckWait, c.MaxWait)
	case c.MaxDeliver < 1:
		return fault.Invalid("MaxDeliver", "must be at least 1 (got %d)", c.MaxDeliver)
	case c.NakDelay < 0:
		return fault.Invalid("NakDelay", "must not be negative")
	case c.ClockSkew < 0:
		return fault.Invalid("ClockSkew", "must not be negative")
	}
	if err := c.Quota.validate(); err != nil {
		return err
	}
	return nil
}

// consumerConfig is the shared durable consumer. Every replica declares the same one; the last
// to start wins if their settings differ.
func (c *Config) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		Description:   "Godwit hub ingest: events into SQL (shared by every hub replica)",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		// The delivery limit is enforced by the ingester (see the package comment).
		MaxDeliver:    -1,
		FilterSubject: bus.EventSubjects,
		// Bounds what a store outage can leave handed out and waiting for redelivery.
		MaxAckPending: 10 * c.Batch,
	}
}

// Start creates or updates the durable consumer and starts fetching. The events and dead-letter
// streams must exist (bus.EnsureStreams). Calling Start on a running ingester does nothing.
func (i *Ingester) Start(ctx context.Context) error {
	i.lifecycle.Lock()
	defer i.lifecycle.Unlock()
	if r := i.run; r != nil {
		select {
		case <-r.done:
		default:
			return nil
		}
	}
	if err := i.cfg.validate(); err != nil {
		return err
	}
	cons, err := i.ensureConsumer(ctx)
	if err != nil {
		return err
	}
	i.cons = cons
	soft, stopFetching := context.WithCancel(context.Background())
	hard, abort := context.WithCancel(context.Background())
	r := &run{stopFetching: stopFetching, abort: abort, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		acks := i.startAcker()
		defer acks.close() // Stop returns once what committed is acknowledged
		i.loop(soft, hard, cons, acks)
	}()
	go func() { defer wg.Done(); i.refreshLag(soft) }()
	go func() {
		wg.Wait()
		stopFetching()
		abort()
		close(r.done)
	}()
	i.run = r
	i.log.Info("ingest started", "consumer", i.cfg.Consumer, "batch", i.cfg.Batch, "write_batch", i.cfg.WriteBatch, "ack_wait", i.cfg.AckWait,
		"max_deliver", i.cfg.MaxDeliver)
	return nil
}

func (i *Ingester) ensureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	cons, err := i.cfg.JS.CreateOrUpdateConsumer(ctx, wire.StreamEvents, i.cfg.consumerConfig())
	if err != nil {
		return nil, fmt.Errorf("ingest: consumer %s on %s: %w", i.cfg.Consumer, wire.StreamEvents, err)
	}
	return cons, nil
}

// Stop stops fetching, lets the batch in flight finish and acknowledges what committed. If ctx
// ends first, the batch in flight is abandoned and handed back for redelivery and Stop returns
// ctx's error; a later Stop waits for the worker again. Safe to call twice, or before Start.
func (i *Ingester) Stop(ctx context.Context) error {
	i.lifecycle.Lock()
	r := i.run
	i.lifecycle.Unlock()
	if r == nil {
		return nil
	}
	r.stopFetching()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		r.abort()
		return fmt.Errorf("ingest: stop: %w", ctx.Err())
	}
}

// Fatal delivers one error if the worker panicked. The hub exits non-zero on it.
func (i *Ingester) Fatal() <-chan error { return i.fatal }

// Lag returns the consumer's pending (not yet delivered) and ack-pending (delivered, not yet
// acknowledged) counts, and refreshes the corresponding gauges.
func (i *Ingester) Lag(ctx context.Context) (pending, ackPending uint64, err error) {
	i.lifecycle.Lock()
	cons := i.cons
	i.lifecycle.Unlock()
	var info *jetstream.ConsumerInfo
	if cons != nil {
		info, err = cons.Info(ctx)
	} else {
		cons, err = i.cfg.JS.Consumer(ctx, wire.StreamEvents, i.cfg.Consumer)
		if err == nil {
			info, err = cons.Info(ctx)
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("ingest: consumer lag: %w", err)
	}
	i.m.pending.Set(float64(info.NumPending))
	i.m.ackPending.Set(float64(info.NumAckPending))
	return info.NumPending, uint64(info.NumAckPending), nil
}

func (i *Ingester) refreshLag(ctx context.Context) {
	t := time.NewTicker(lagInterval)
	defer t.Stop()
	for {
		lctx, cancel := context.WithTimeout(ctx, lagInterval)
		if _, _, err := i.Lag(lctx); err != nil && ctx.Err() == nil {
			i.log.Debug("ingest: refresh consumer lag", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// loop fetches and handles batches until soft is cancelled or the worker panics.
//
// While a batch is stored, the next one is read and prepared (validated, dead letters sent) when
// more is likely to come — the batch was full, its pull request is still open, or the stream
// held more for the consumer when its last message was delivered: one batch ahead, never more.
// A batch read ahead that waited behind a store call for half the ack wait is handed back
// instead of stored, since the server is about to redeliver it to another replica; so is one
// read ahead when Stop came, and whatever the open pull request still brings.
func (i *Ingester) loop(soft, hard context.Context, cons jetstream.Consumer, acks *acker) {
	var msgs []jetstream.Msg
	defer func() {
		if p := recover(); p != nil {
			i.panicked(p, msgs)
		}
	}()
	var (
		pause time.Duration
		ahead *fetchAhead
		p     pull
	)
	for {
		if pause > 0 {
			select {
			case <-soft.Done():
			case <-time.After(pause):
			}
			pause = 0
		}
		var (
			err      error
			ready    batch
			prepared bool
		)
		switch {
		case ahead != nil:
			r := ahead.wait()
			msgs, ready, err, prepared = r.msgs, r.batch, r.err, true
			if r.panic != nil {
				panic(r.panic)
			}
			switch {
			case len(ready.groups) > 0 && soft.Err() != nil:
				i.handBackGroups(ready.groups)
				ready = batch{}
			case len(ready.groups) > 0 && time.Since(ahead.started) >= i.cfg.AckWait/2:
				i.log.Warn("ingest: a batch fetched ahead waited half the ack wait behind a slow store call; handed back",
					"events", len(ready.groups), "waited", time.Since(ahead.started).Round(time.Millisecond))
				i.handBackGroups(ready.groups)
				ready = batch{}
			}
			ahead = nil
		case soft.Err() != nil:
			i.handBack(i.finish(&p))
			return
		default:
			msgs, err = i.read(cons, &p)
			if len(msgs) > 0 && hard.Err() == nil {
				// Before reading ahead: dead letters go out in the order of the stream.
				ready, prepared = i.prepare(hard, msgs), true
			}
		}
		more := len(msgs) > 0 && (len(msgs) == i.cfg.Batch || p.open != nil || morePending(msgs[len(msgs)-1]))
		if err == nil && more && soft.Err() == nil {
			ahead = i.fetchAhead(hard, cons, &p)
		}
		var out outcome
		switch {
		case prepared:
			out = i.store(hard, acks, ready)
		case len(msgs) > 0:
			out = i.handle(hard, acks, msgs)
		}
		if out == backOff {
			pause = i.cfg.NakDelay
		}
		msgs = nil
		if err == nil {
			i.setHealth(nil)
			continue
		}
		if soft.Err() != nil {
			continue // the loop returns after handing back what is still open
		}
		i.log.Warn("ingest: fetch failed", "err", err)
		pause = max(pause, i.cfg.NakDelay, time.Second)
		if consumerGone(err) {
			// Someone deleted the consumer, or the stream: declare them again rather than fetch
			// from nothing until a restart.
			ctx, cancel := context.WithTimeout(soft, i.cfg.AckWait)
			if c, err := i.redeclare(ctx); err != nil {
				i.setHealth(err)
				i.log.Error("ingest: cannot fetch events", "err", err)
			} else {
				cons = c
				i.lifecycle.Lock()
				i.cons = c
				i.lifecycle.Unlock()
			}
			cancel()
		}
	}
}

// redeclare declares the consumer again, and first the streams when the events stream is gone.
// A missing stream is a fault (reported by Health until the consumer is back), never a silent
// loop: events published meanwhile had nowhere to go, and agents keep them in their outboxes.
func (i *Ingester) redeclare(ctx context.Context) (jetstream.Consumer, error) {
	c, err := i.ensureConsumer(ctx)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, err
	}
	missing := fmt.Errorf("ingest: the events stream %s is missing: %w", wire.StreamEvents, err)
	i.setHealth(missing)
	i.m.streamMissing.Inc()
	if i.cfg.EnsureStreams == nil {
		return nil, missing
	}
	i.log.Error("ingest: the events stream is missing; declaring it again", "stream", wire.StreamEvents)
	if err := i.cfg.EnsureStreams(ctx); err != nil {
		return nil, fmt.Errorf("%w; declaring it again failed: %w", missing, err)
	}
	return i.ensureConsumer(ctx)
}

func (i *Ingester) setHealth(err error) {
	i.healthMu.Lock()
	defer i.healthMu.Unlock()
	i.health = err
}

// Health returns why the ingester cannot fetch events right now (the events stream or its
// consumer is missing and could not be declared again), nil while it can. The hub's /readyz
// reports it.
func (i *Ingester) Health() error {
	i.healthMu.Lock()
	defer i.healthMu.Unlock()
	return i.health
}

// fetchAhead is a batch being read and prepared while the one before it is stored.
type fetchAhead struct {
	started time.Time // local monotonic time the read began
	done    chan fetched
}

type fetched struct {
	msgs  []jetstream.Msg
	batch batch
	err   error
	panic any // a panic while preparing, raised again in the worker
}

// carriedPanic is a panic of a helper goroutine, with that goroutine's stack, raised again in
// the worker so that it is reported like the worker's own.
type carriedPanic struct {
	value any
	stack []byte
	where string // what the helper was doing
}

func (p carriedPanic) String() string {
	return fmt.Sprintf("%v (while %s)\n%s", p.value, p.where, p.stack)
}

func (i *Ingester) fetchAhead(ctx context.Context, cons jetstream.Consumer, p *pull) *fetchAhead {
	f := &fetchAhead{started: time.Now(), done: make(chan fetched, 1)}
	go func() {
		var r fetched
		defer func() {
			if p := recover(); p != nil {
				r.panic = carriedPanic{value: p, stack: debug.Stack(), where: "preparing a batch fetched ahead"}
			}
			f.done <- r
		}()
		r.msgs, r.err = i.read(cons, p)
		if len(r.msgs) == 0 {
			return
		}
		if ctx.Err() != nil {
			i.handBack(r.msgs)
			r.msgs = nil
			return
		}
		r.batch = i.prepare(ctx, r.msgs)
	}()
	return f
}

func (f *fetchAhead) wait() fetched { return <-f.done }

func consumerGone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, nats.ErrNoResponders)
}

// fetchMaxBytes bounds the bytes of one fetch, so that a backlog of large events does not hold
// Batch of them (twice, with a batch fetched ahead) in memory: the events stream takes events of
// up to 256 KiB (bus.DefaultEventsMaxMsgSize). It is NATS's largest possible payload, far above
// that, so that no single message can exceed it and stall the consumer.
const fetchMaxBytes = 64 << 20

// linger is how long a read waits for the next message once it has some: a pause that long ends
// the burst, and what came is stored now rather than when the pull request expires.
const linger = 20 * time.Millisecond

// pull is the pull request being read, nil when none is open. A read takes what the request has
// delivered and may leave it open for the next read, so that a batch is stored as soon as the
// messages stop coming or the store is ready for it, not when the request expires. One goroutine
// reads it at a time: the loop, or the one fetching ahead while the loop waits for it.
type pull struct {
	open   jetstream.MessageBatch
	opened time.Time // local monotonic time the open request was made
}

// read returns the consumer's next messages. It opens a pull request for Batch messages (and
// fetchMaxBytes) when none is open, waits for a first message as long as the request lasts
// (MaxWait), then takes more until Batch or the end of the request; or, when the stream held
// nothing more for the consumer as the last message taken was delivered, until a pause of
// linger. A request is never abandoned: messages
// the server has sent for it would be dropped by the client and sit un-acknowledged until
// AckWait; Stop finishes it (finish).
func (i *Ingester) read(cons jetstream.Consumer, p *pull) ([]jetstream.Msg, error) {
	var msgs []jetstream.Msg
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if p.open != nil && len(msgs) == 0 && time.Since(p.opened) >= i.cfg.AckWait/2 {
			// What the request delivered waited behind a slow store call: the server is about to
			// hand it to another replica. Hand it back now, as a batch fetched ahead would be.
			if stale := i.finish(p); len(stale) > 0 {
				i.log.Warn("ingest: messages of a pull request waited half the ack wait behind a slow store call; handed back",
					"events", len(stale), "waited", time.Since(p.opened).Round(time.Millisecond))
				i.handBack(stale)
			}
		}
		continued := p.open != nil
		if !continued {
			b, err := cons.Fetch(i.cfg.Batch, jetstream.FetchMaxWait(i.cfg.MaxWait), jetstream.FetchMaxBytes(fetchMaxBytes))
			if err != nil {
				return nil, err
			}
			p.open, p.opened = b, time.Now()
		}
		ch := p.open.Messages()
		if len(msgs) == 0 {
			m, ok := <-ch
			if !ok {
				err := p.open.Error()
				p.open = nil
				if continued && err == nil {
					continue // the last read took the request's last message
				}
				return nil, err
			}
			msgs = append(make([]jetstream.Msg, 0, i.cfg.Batch), m)
		}
		for len(msgs) < i.cfg.Batch {
			var m jetstream.Msg
			ok := true
			select {
			case m, ok = <-ch:
			default:
				if morePending(msgs[len(msgs)-1]) {
					// A backlog: the rest of the batch is on its way. Small batches would cost a
					// transaction, and derived-state rows, for a few events each.
					m, ok = <-ch
					break
				}
				if timer == nil {
					timer = time.NewTimer(linger)
				} else {
					timer.Reset(linger)
				}
				select {
				case m, ok = <-ch:
				case <-timer.C:
					return msgs, nil
				}
			}
			if !ok {
				err := p.open.Error()
				p.open = nil
				return msgs, err
			}
			msgs = append(msgs, m)
		}
		return msgs, nil
	}
}

// morePending reports whether the stream held more for the consumer when m was delivered.
func morePending(m jetstream.Msg) bool {
	md, err := m.Metadata()
	return err == nil && md.NumPending > 0
}

// finish reads the open pull request, if any, to its end (at most MaxWait).
func (i *Ingester) finish(p *pull) []jetstream.Msg {
	if p.open == nil {
		return nil
	}
	var msgs []jetstream.Msg
	for m := range p.open.Messages() {
		msgs = append(msgs, m)
	}
	p.open = nil
	return msgs
}

// panicked reports a worker panic: logged with its stack, counted, sent once on Fatal. The batch is
// left un-acknowledged; the server redelivers it after AckWait.
func (i *Ingester) panicked(p any, batch []jetstream.Msg) {
	i.m.panics.Inc()
	attrs := []any{"panic", fmt.Sprint(p), "stack", string(debug.Stack()), "batch", len(batch)}
	if len(batch) > 0 {
		if md, err := batch[0].Metadata(); err == nil {
			attrs = append(attrs, "first_stream_seq", md.Sequence.Stream)
		}
		if md, err := batch[len(batch)-1].Metadata(); err == nil {
			attrs = append(attrs, "last_stream_seq", md.Sequence.Stream)
		}
	}
	i.log.Error("ingest: worker panicked; the hub must exit", attrs...)
	select {
	case i.fatal <- fmt.Errorf("ingest: worker panicked: %v", p):
	default:
	}
}
