package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/ingest"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

// Engine names.
const (
	EngineSQLite   = "sqlite"
	EnginePostgres = "postgres"
)

// IngestConfig configures the ingest benchmark. Zero values take the defaults.
type IngestConfig struct {
	Events int // events published end to end, and inserted raw; default 200,000
	Agents int // distinct agent subjects the events are spread over; default 1,000
	// Batch is the events per InsertEvents call of the raw measurement; 0 is the ingest's
	// transaction size on that engine, so that raw writes the same transactions as the ingest.
	Batch int
	// IngestBatch is the ingester's fetch size; 0 is ingest.DefaultBatch.
	IngestBatch int
	// WriteBatch is the ingester's transaction size; 0 is what the hub uses (IngestBatch).
	WriteBatch int
	// PerMessage is how many of an agent's events go in one message: 1 (the default) publishes
	// every event alone, more sends them as event batches (wire.HeaderEvents), as an agent's
	// outbox does with what has queued while its last publish was in flight.
	PerMessage int
	// Engines to measure, in order; default sqlite then postgres.
	Engines []string
	// Postgres is the server on which a temporary database is created. Empty tries
	// DefaultPostgres and skips PostgreSQL with a note when it does not answer; a server given
	// explicitly must answer.
	Postgres string
	// TempDir holds the SQLite files and the JetStream store; empty is the system's.
	TempDir string
	Out     io.Writer
}

func (c *IngestConfig) defaults() error {
	if c.Events == 0 {
		c.Events = 200_000
	}
	if c.Agents == 0 {
		c.Agents = 1000
	}
	if c.IngestBatch == 0 {
		c.IngestBatch = ingest.DefaultBatch
	}
	if c.PerMessage == 0 {
		c.PerMessage = 1
	}
	if len(c.Engines) == 0 {
		c.Engines = []string{EngineSQLite, EnginePostgres}
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	switch {
	case c.Events < 1:
		return fault.Invalid("events", "must be at least 1 (got %d)", c.Events)
	case c.Agents < 1:
		return fault.Invalid("agents", "must be at least 1 (got %d)", c.Agents)
	case c.Batch < 0:
		return fault.Invalid("batch", "must be at least 1, or 0 for the ingest's transaction size (got %d)", c.Batch)
	case c.WriteBatch < 0:
		return fault.Invalid("write-batch", "must be at least 1, or 0 for the fetch size, as the hub writes (got %d)", c.WriteBatch)
	case c.IngestBatch < 1:
		return fault.Invalid("ingest-batch", "must be at least 1 (got %d)", c.IngestBatch)
	case c.PerMessage < 1 || c.PerMessage > wire.MaxBatchEvents:
		return fault.Invalid("per-message", "must be from 1 to %d (got %d)", wire.MaxBatchEvents, c.PerMessage)
	}
	for _, e := range c.Engines {
		if e != EngineSQLite && e != EnginePostgres {
			return fault.Invalid("engines", "%q is neither %s nor %s", e, EngineSQLite, EnginePostgres)
		}
	}
	return nil
}

// IngestResult is one engine's figures.
type IngestResult struct {
	Engine    string
	Events    int
	EndToEnd  time.Duration // live: first publish until the store counts every event
	Published time.Duration // live: first publish until the stream acknowledged the last
	// CPUs used on average during the live run by this process (NATS, ingest, store driver) and
	// by every other process (the PostgreSQL server, and anything else running on the machine).
	CPU, OtherCPU float64
	// Backlog: the stream already holds every event (published while no ingest ran, as after a
	// database outage); ingest start until the store counts every event.
	Backlog                     time.Duration
	BacklogCPU, BacklogOtherCPU float64
	Raw                         time.Duration // InsertEvents of as many events into a fresh database
	// CPUs used on average during the raw insert, as for CPU: a ratio compares phases that may
	// have had different shares of a busy machine.
	RawCPU, RawOtherCPU float64
	IngestBatch         int
	WriteBatch          int
	RawBatch            int
}

// EndToEndRate is events per second from first publish to the last event stored.
func (r IngestResult) EndToEndRate() float64 { return rate(r.Events, r.EndToEnd) }

// BacklogRate is events per second from ingest start to the last event of a full stream stored.
func (r IngestResult) BacklogRate() float64 { return rate(r.Events, r.Backlog) }

// RawRate is events per second of the raw batch insert.
func (r IngestResult) RawRate() float64 { return rate(r.Events, r.Raw) }

// Ratio is the live end-to-end rate over the raw rate.
func (r IngestResult) Ratio() float64 { return r.EndToEndRate() / r.RawRate() }

// BacklogRatio is the backlog rate over the raw rate.
func (r IngestResult) BacklogRatio() float64 { return r.BacklogRate() / r.RawRate() }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// engine opens fresh stores of one kind.
type engine struct {
	name string
	// open returns a store on a database nobody else uses, and what removes it.
	open func(ctx context.Context) (store.Store, func() error, error)
	// reused: the database holds the data of an earlier run (bench ui --sqlite-file,
	// --postgres-db); kept names a database that outlives the run, and discard removes it when
	// building it failed, so that the next run does not reuse half a fixture.
	reused  bool
	kept    string
	discard func() error
}

// openEngines turns engine names into engines. PostgreSQL is measured on postgresDSN, or on
// DefaultPostgres when that answers; an unreachable default is skipped with a note, an
// unreachable server the operator named is an error.
func openEngines(ctx context.Context, names []string, tempDir, postgresDSN string, out io.Writer) ([]engine, error) {
	var engines []engine
	for _, name := range names {
		switch name {
		case EngineSQLite:
			engines = append(engines, sqliteEngine(tempDir))
		case EnginePostgres:
			server := postgresDSN
			if server == "" {
				server = DefaultPostgres
			}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := postgres.Reachable(pctx, server)
			cancel()
			if err != nil {
				if postgresDSN != "" {
					return nil, fmt.Errorf("postgres at %s: %w", postgres.Redact(server), err)
				}
				fmt.Fprintf(out, "note: PostgreSQL skipped: %s does not answer (%v); pass --postgres DSN\n", postgres.Redact(server), err)
				continue
			}
			engines = append(engines, postgresEngine(server))
		default:
			return nil, fault.Invalid("engines", "%q is neither %s nor %s", name, EngineSQLite, EnginePostgres)
		}
	}
	return engines, nil
}

// RunIngest runs the ingest benchmark and prints its figures to cfg.Out.
func RunIngest(ctx context.Context, cfg IngestConfig) ([]IngestResult, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	out := cfg.Out
	engines, err := openEngines(ctx, cfg.Engines, cfg.TempDir, cfg.Postgres, out)
	if err != nil {
		return nil, err
	}

	src := newEventSource(agentIDs(cfg.Agents))
	fmt.Fprintf(out, "godwit bench ingest: %d events over %d agents, %d CPUs (GOMAXPROCS %d), %s\n",
		cfg.Events, cfg.Agents, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Fprintln(out, "end to end: embedded NATS (file storage) → events stream → ingest.Ingester → store (with derived state);")
	fmt.Fprintln(out, "  the publisher is one hub connection in this process (JetStream async publish on godwit.events.<agent-id>")
	fmt.Fprintln(out, "  with Nats-Msg-Id), faster than agents' one-at-a-time requests")
	if cfg.PerMessage == 1 {
		fmt.Fprintln(out, "  one event a message (--per-message 1)")
	} else {
		fmt.Fprintf(out, "  %d events of one agent a message, as event batches (--per-message %d), as an agent's outbox sends what has queued\n",
			cfg.PerMessage, cfg.PerMessage)
	}
	fmt.Fprintln(out, "  live: publisher and ingest run together; timed from the first publish until CountEvents == N")
	fmt.Fprintln(out, "  backlog: the stream holds N events first (as after a store outage); timed from ingest start until CountEvents == N")
	fmt.Fprintln(out, "raw: store.InsertEvents of N fresh events (no derived-state rows) into a fresh database, as many per call as the ingest writes per transaction on the engine (unless --batch)")

	var results []IngestResult
	for _, e := range engines {
		res, err := ingestEngine(ctx, cfg, e, src)
		if err != nil {
			return results, fmt.Errorf("%s: %w", e.name, err)
		}
		fmt.Fprintf(out, "%s live: all published after %s (%.0f ev/s), all stored after %s; CPUs busy meanwhile: %.2f this process, %.2f others\n",
			e.name, round(res.Published), rate(res.Events, res.Published), round(res.EndToEnd), res.CPU, res.OtherCPU)
		fmt.Fprintf(out, "%s backlog: all stored after %s; CPUs busy meanwhile: %.2f this process, %.2f others\n",
			e.name, round(res.Backlog), res.BacklogCPU, res.BacklogOtherCPU)
		fmt.Fprintf(out, "%s raw: %d per call (the ingest wrote %d per transaction), all inserted after %s; CPUs busy meanwhile: %.2f this process, %.2f others\n",
			e.name, res.RawBatch, res.WriteBatch, round(res.Raw), res.RawCPU, res.RawOtherCPU)
		results = append(results, res)
	}
	if len(results) > 0 {
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "ENGINE\tEVENTS\tLIVE EV/S\tBACKLOG EV/S\tRAW INSERT EV/S\tLIVE/RAW\tBACKLOG/RAW\tFETCH\tEVENTS/TX\tRAW BATCH\t")
		for _, r := range results {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t%d\t%d\t%d\t\n", r.Engine, r.Events, r.EndToEndRate(), r.BacklogRate(),
				r.RawRate(), r.Ratio(), r.BacklogRatio(), r.IngestBatch, r.WriteBatch, r.RawBatch)
		}
		if err := tw.Flush(); err != nil {
			return results, err
		}
	}
	return results, nil
}

func sqliteEngine(tmp string) engine {
	return engine{name: EngineSQLite, open: func(ctx context.Context) (store.Store, func() error, error) {
		dir, err := os.MkdirTemp(tmp, "godwit-bench-sqlite-")
		if err != nil {
			return nil, nil, err
		}
		st, err := sqlite.Open(ctx, filepath.Join(dir, "hub.db"))
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, nil, err
		}
		return st, func() error { return errors.Join(st.Close(), os.RemoveAll(dir)) }, nil
	}}
}

func postgresEngine(server string) engine {
	return engine{name: EnginePostgres, open: func(ctx context.Context) (store.Store, func() error, error) {
		dsn, drop, err := postgres.TempDatabase(ctx, server, "godwit_bench_")
		if err != nil {
			return nil, nil, err
		}
		st, err := postgres.Open(ctx, dsn)
		if err != nil {
			return nil, nil, errors.Join(err, drop())
		}
		return st, func() error { return errors.Join(st.Close(), drop()) }, nil
	}}
}

func ingestEngine(ctx context.Context, cfg IngestConfig, e engine, src *eventSource) (IngestResult, error) {
	if cfg.WriteBatch == 0 || cfg.WriteBatch > cfg.IngestBatch {
		cfg.WriteBatch = cfg.IngestBatch
	}
	if cfg.Batch == 0 {
		cfg.Batch = cfg.WriteBatch
	}
	res := IngestResult{Engine: e.name, Events: cfg.Events, IngestBatch: cfg.IngestBatch, WriteBatch: cfg.WriteBatch, RawBatch: cfg.Batch}
	var err error
	var live, backlog run
	// Each phase runs under the profiler label phase=<engine>-<phase>, which the goroutines it
	// starts (NATS server, ingest, store) inherit: go tool pprof -tagfocus phase=sqlite-backlog.
	phase(ctx, e.name, "live", func(ctx context.Context) { live, err = endToEnd(ctx, cfg, e, src, false) })
	if err != nil {
		return res, fmt.Errorf("end to end, live: %w", err)
	}
	res.EndToEnd, res.Published, res.CPU, res.OtherCPU = live.total, live.published, live.cpu, live.otherCPU
	quiesce()
	phase(ctx, e.name, "backlog", func(ctx context.Context) { backlog, err = endToEnd(ctx, cfg, e, src, true) })
	if err != nil {
		return res, fmt.Errorf("end to end, backlog: %w", err)
	}
	res.Backlog, res.BacklogCPU, res.BacklogOtherCPU = backlog.total, backlog.cpu, backlog.otherCPU
	quiesce() // the end-to-end run's garbage and dirty pages are not the raw insert's to handle
	phase(ctx, e.name, "raw", func(ctx context.Context) { res.Raw, res.RawCPU, res.RawOtherCPU, err = rawInsert(ctx, cfg, e, src) })
	if err != nil {
		return res, fmt.Errorf("raw insert: %w", err)
	}
	return res, nil
}

// phase runs fn under the profiler label phase=<engine>-<name>.
func phase(ctx context.Context, engine, name string, fn func(context.Context)) {
	pprof.Do(ctx, pprof.Labels("phase", engine+"-"+name), fn)
}

// rawInsert times InsertEvents of cfg.Events events, cfg.Batch at a time, into a fresh database,
// and returns the CPUs this process and the others used meanwhile.
func rawInsert(ctx context.Context, cfg IngestConfig, e engine, src *eventSource) (d time.Duration, cpu, otherCPU float64, err error) {
	st, cleanup, err := e.open(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	defer func() { err = errors.Join(err, cleanup()) }()
	events, err := src.stored(cfg.Events)
	if err != nil {
		return 0, 0, 0, err
	}
	quiesce()
	start, meter := time.Now(), newCPUMeter("self")
	for i := 0; i < len(events); i += cfg.Batch {
		if _, err := st.InsertEvents(ctx, events[i:min(i+cfg.Batch, len(events))], nil); err != nil {
			return 0, 0, 0, err
		}
	}
	d = time.Since(start)
	own, others := meter.cores()
	if n, err := st.CountEvents(ctx); err != nil || n != int64(cfg.Events) {
		return 0, 0, 0, fmt.Errorf("stored %d events, want %d (%v)", n, cfg.Events, err)
	}
	return d, own[0], others, nil
}

// run is one end-to-end measurement.
type run struct {
	total, published time.Duration
	cpu, otherCPU    float64
}

// endToEnd publishes cfg.Events events into the events stream and times them until the store
// holds every one. Live, the ingest runs from the start and the clock starts at the first
// publish; backlog, everything is published first and the clock starts with the ingest.
func endToEnd(ctx context.Context, cfg IngestConfig, e engine, src *eventSource, backlog bool) (r run, err error) {
	st, cleanup, err := e.open(ctx)
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, cleanup()) }()
	dir, err := os.MkdirTemp(cfg.TempDir, "godwit-bench-nats-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	srv, err := bus.StartServer(bus.ServerConfig{StoreDir: dir, Listen: "127.0.0.1:0", Auth: st})
	if err != nil {
		return r, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = errors.Join(err, srv.Stop(sctx))
	}()
	hubNC, err := srv.ConnectHub("godwit-bench-ingest")
	if err != nil {
		return r, err
	}
	defer hubNC.Close()
	js, err := jetstream.New(hubNC)
	if err != nil {
		return r, err
	}
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		return r, err
	}
	ing := ingest.New(ingest.Config{JS: js, Store: st, Batch: cfg.IngestBatch, WriteBatch: cfg.WriteBatch, Logger: slog.New(slog.DiscardHandler)})
	startIngest := func() (stop func() error, err error) {
		if err := ing.Start(ctx); err != nil {
			return nil, err
		}
		return func() error {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return ing.Stop(sctx)
		}, nil
	}
	pubNC, err := srv.ConnectHub("godwit-bench-publisher")
	if err != nil {
		return r, err
	}
	defer pubNC.Close()
	events, _, err := src.encode(cfg.Events)
	if err != nil {
		return r, err
	}
	msgs, err := messages(events, cfg.PerMessage)
	if err != nil {
		return r, err
	}
	if !backlog {
		stop, err := startIngest()
		if err != nil {
			return r, err
		}
		defer func() { err = errors.Join(err, stop()) }()
	}
	quiesce()

	start, meter := time.Now(), newCPUMeter("self")
	pubDone := make(chan error, 1)
	go func() { pubDone <- publish(ctx, pubNC, msgs) }()
	if backlog {
		if err := <-pubDone; err != nil {
			return r, fmt.Errorf("publish: %w", err)
		}
		quiesce()
		start, meter = time.Now(), newCPUMeter("self")
		stop, err := startIngest()
		if err != nil {
			return r, err
		}
		defer func() { err = errors.Join(err, stop()) }()
		pubDone = nil
	}

	// Poll the consumer (cheap) until it has nothing pending or unacknowledged, then confirm with
	// CountEvents: an event is acknowledged only after its transaction committed.
	deadline := time.Now().Add(max(2*time.Minute, time.Duration(cfg.Events)*time.Millisecond))
	pubFinished := backlog
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case err := <-pubDone:
			if err != nil {
				return r, fmt.Errorf("publish: %w", err)
			}
			r.published, pubFinished = time.Since(start), true
		case <-t.C:
		}
		if !pubFinished {
			continue
		}
		pending, ackPending, err := ing.Lag(ctx)
		if err != nil || pending > 0 || ackPending > 0 {
			if time.Now().After(deadline) {
				return r, fmt.Errorf("ingest did not catch up within the deadline (pending %d, unacknowledged %d, %v)", pending, ackPending, err)
			}
			continue
		}
		n, err := st.CountEvents(ctx)
		if err != nil {
			return r, err
		}
		if n == int64(cfg.Events) {
			r.total = time.Since(start)
			own, others := meter.cores()
			r.cpu, r.otherCPU = own[0], others
			return r, nil
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("the store holds %d of %d events after the deadline (dead letters?)", n, cfg.Events)
		}
	}
}

// messages puts the events into messages of up to perMessage events of one agent each, in the
// order of each agent's events: single-event messages for 1, else event batches (an agent's last
// events may make a smaller one).
func messages(events []published, perMessage int) ([]*nats.Msg, error) {
	if perMessage == 1 {
		msgs := make([]*nats.Msg, len(events))
		for i, m := range events {
			msgs[i] = &nats.Msg{Subject: wire.EventSubject(m.agent), Header: nats.Header{bus.HeaderMsgID: []string{m.id}}, Data: m.payload}
		}
		return msgs, nil
	}
	var msgs []*nats.Msg
	pending := map[string][]published{}
	var order []string // agents in the order of their first pending event
	flush := func(agent string) error {
		evs := pending[agent]
		ids, payloads := make([]string, len(evs)), make([][]byte, len(evs))
		for i, e := range evs {
			ids[i], payloads[i] = e.id, e.payload
		}
		body, err := wire.EncodeEventBatch(payloads)
		if err != nil {
			return err
		}
		msgs = append(msgs, &nats.Msg{Subject: wire.EventSubject(agent), Data: body, Header: nats.Header{
			bus.HeaderMsgID: []string{wire.EventBatchID(ids)}, wire.HeaderEvents: []string{strconv.Itoa(len(evs))}}})
		delete(pending, agent)
		return nil
	}
	for _, e := range events {
		if _, ok := pending[e.agent]; !ok {
			order = append(order, e.agent)
		}
		pending[e.agent] = append(pending[e.agent], e)
		if len(pending[e.agent]) == perMessage {
			if err := flush(e.agent); err != nil {
				return nil, err
			}
		}
	}
	for _, agent := range order {
		if _, ok := pending[agent]; ok {
			if err := flush(agent); err != nil {
				return nil, err
			}
		}
	}
	return msgs, nil
}

// publish sends msgs with asynchronous JetStream publishes on nc and waits until the stream has
// acknowledged every one.
func publish(ctx context.Context, nc *nats.Conn, msgs []*nats.Msg) error {
	var pubErrs atomic.Int64
	var firstErr atomic.Value
	pjs, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			pubErrs.Add(1)
			firstErr.CompareAndSwap(nil, err)
		}))
	if err != nil {
		return err
	}
	for _, msg := range msgs {
		// A loaded machine can keep the stream from acknowledging 4096 publishes for longer than
		// the client's default stall wait (200 ms); waiting is what a publisher should do then.
		if _, err := pjs.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute)); err != nil {
			return err
		}
	}
	select {
	case <-pjs.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	if n := pubErrs.Load(); n > 0 {
		return fmt.Errorf("%d events not acknowledged by the stream, first: %v", n, firstErr.Load())
	}
	return nil
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// quiesce collects garbage and writes dirty pages back before a timed phase, so that it does not
// pay for what an earlier phase (or event generation) left behind.
func quiesce() {
	runtime.GC()
	syscall.Sync()
}
