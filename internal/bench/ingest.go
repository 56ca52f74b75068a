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
	Batch  int // events per InsertEvents call of the raw measurement; default 500
	// IngestBatch is the ingester's fetch and transaction size; 0 is ingest.DefaultBatch.
	IngestBatch int
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
	if c.Batch == 0 {
		c.Batch = 500
	}
	if c.IngestBatch == 0 {
		c.IngestBatch = ingest.DefaultBatch
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
	case c.Batch < 1:
		return fault.Invalid("batch", "must be at least 1 (got %d)", c.Batch)
	case c.IngestBatch < 1:
		return fault.Invalid("ingest-batch", "must be at least 1 (got %d)", c.IngestBatch)
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
	EndToEnd  time.Duration // first publish until the store counts every event
	Published time.Duration // first publish until the stream acknowledged the last
	// CPUs used on average meanwhile by this process (NATS, ingest, store driver) and by every
	// other process (the PostgreSQL server, and anything else running on the machine).
	CPU, OtherCPU float64
	Raw           time.Duration // InsertEvents of as many events into a fresh database
	IngestBatch   int
	RawBatch      int
}

// EndToEndRate is events per second from first publish to the last event stored.
func (r IngestResult) EndToEndRate() float64 { return rate(r.Events, r.EndToEnd) }

// RawRate is events per second of the raw batch insert.
func (r IngestResult) RawRate() float64 { return rate(r.Events, r.Raw) }

// Ratio is the end-to-end rate over the raw rate.
func (r IngestResult) Ratio() float64 { return r.EndToEndRate() / r.RawRate() }

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
}

// RunIngest runs the ingest benchmark and prints its figures to cfg.Out.
func RunIngest(ctx context.Context, cfg IngestConfig) ([]IngestResult, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	out := cfg.Out
	var engines []engine
	for _, name := range cfg.Engines {
		switch name {
		case EngineSQLite:
			engines = append(engines, sqliteEngine(cfg.TempDir))
		case EnginePostgres:
			server := cfg.Postgres
			if server == "" {
				server = DefaultPostgres
			}
			pg := pgServer{dsn: server}
			if err := pg.reachable(ctx); err != nil {
				if cfg.Postgres != "" {
					return nil, fmt.Errorf("postgres at %s: %w", redact(server), err)
				}
				fmt.Fprintf(out, "note: PostgreSQL skipped: %s does not answer (%v); pass --postgres DSN\n", redact(server), err)
				continue
			}
			engines = append(engines, postgresEngine(pg))
		}
	}

	src := newEventSource(agentIDs(cfg.Agents))
	fmt.Fprintf(out, "godwit bench ingest: %d events over %d agents, %d CPUs (GOMAXPROCS %d), %s\n",
		cfg.Events, cfg.Agents, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Fprintln(out, "end to end: embedded NATS (file storage) → events stream → ingest.Ingester → store; publisher is one hub")
	fmt.Fprintln(out, "  connection (JetStream async publish on godwit.events.<agent-id> with Nats-Msg-Id), faster than agents'")
	fmt.Fprintln(out, "  one-at-a-time requests; timed from the first publish until CountEvents == N")
	fmt.Fprintln(out, "raw: store.InsertEvents of N fresh events (no derived-state rows) into a fresh database, one call per batch")

	var results []IngestResult
	for _, e := range engines {
		res, err := ingestEngine(ctx, cfg, e, src)
		if err != nil {
			return results, fmt.Errorf("%s: %w", e.name, err)
		}
		fmt.Fprintf(out, "%s: all published after %s (%.0f ev/s), all stored after %s; CPUs busy meanwhile: %.2f this process, %.2f others; raw insert %s\n",
			e.name, round(res.Published), rate(res.Events, res.Published), round(res.EndToEnd), res.CPU, res.OtherCPU, round(res.Raw))
		results = append(results, res)
	}
	if len(results) > 0 {
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "ENGINE\tEVENTS\tEND-TO-END EV/S\tRAW INSERT EV/S\tRATIO\tINGEST BATCH\tRAW BATCH\t")
		for _, r := range results {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2f\t%d\t%d\t\n", r.Engine, r.Events, r.EndToEndRate(), r.RawRate(), r.Ratio(),
				r.IngestBatch, r.RawBatch)
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

func postgresEngine(pg pgServer) engine {
	return engine{name: EnginePostgres, open: func(ctx context.Context) (store.Store, func() error, error) {
		dsn, drop, err := pg.tempDatabase(ctx)
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
	res := IngestResult{Engine: e.name, Events: cfg.Events, IngestBatch: cfg.IngestBatch, RawBatch: cfg.Batch}
	var err error
	if res.EndToEnd, res.Published, res.CPU, res.OtherCPU, err = endToEnd(ctx, cfg, e, src); err != nil {
		return res, fmt.Errorf("end to end: %w", err)
	}
	quiesce() // the end-to-end run's garbage and dirty pages are not the raw insert's to handle
	if res.Raw, err = rawInsert(ctx, cfg, e, src); err != nil {
		return res, fmt.Errorf("raw insert: %w", err)
	}
	return res, nil
}

// rawInsert times InsertEvents of cfg.Events events, cfg.Batch at a time, into a fresh database.
func rawInsert(ctx context.Context, cfg IngestConfig, e engine, src *eventSource) (d time.Duration, err error) {
	st, cleanup, err := e.open(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, cleanup()) }()
	events, err := src.stored(cfg.Events)
	if err != nil {
		return 0, err
	}
	quiesce()
	start := time.Now()
	for i := 0; i < len(events); i += cfg.Batch {
		if _, err := st.InsertEvents(ctx, events[i:min(i+cfg.Batch, len(events))], nil); err != nil {
			return 0, err
		}
	}
	d = time.Since(start)
	if n, err := st.CountEvents(ctx); err != nil || n != int64(cfg.Events) {
		return 0, fmt.Errorf("stored %d events, want %d (%v)", n, cfg.Events, err)
	}
	return d, nil
}

// endToEnd publishes cfg.Events events into the events stream and times them until the store
// holds every one.
func endToEnd(ctx context.Context, cfg IngestConfig, e engine, src *eventSource) (total, published time.Duration, cpu, otherCPU float64, err error) {
	st, cleanup, err := e.open(ctx)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer func() { err = errors.Join(err, cleanup()) }()
	dir, err := os.MkdirTemp(cfg.TempDir, "godwit-bench-nats-")
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer os.RemoveAll(dir)
	srv, err := bus.StartServer(bus.ServerConfig{StoreDir: dir, Listen: "127.0.0.1:0", Auth: st})
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = errors.Join(err, srv.Stop(sctx))
	}()
	hubNC, err := srv.ConnectHub("godwit-bench-ingest")
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer hubNC.Close()
	js, err := jetstream.New(hubNC)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		return 0, 0, 0, 0, err
	}
	ing := ingest.New(ingest.Config{JS: js, Store: st, Batch: cfg.IngestBatch, Logger: slog.New(slog.DiscardHandler)})
	if err := ing.Start(ctx); err != nil {
		return 0, 0, 0, 0, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = errors.Join(err, ing.Stop(sctx))
	}()

	pubNC, err := srv.ConnectHub("godwit-bench-publisher")
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer pubNC.Close()
	var pubErrs atomic.Int64
	var firstErr atomic.Value
	pjs, err := jetstream.New(pubNC, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			pubErrs.Add(1)
			firstErr.CompareAndSwap(nil, err)
		}))
	if err != nil {
		return 0, 0, 0, 0, err
	}
	msgs, _, err := src.encode(cfg.Events)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	quiesce()

	start, meter := time.Now(), newCPUMeter("self")
	pubDone := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			msg := &nats.Msg{Subject: wire.EventSubject(m.agent), Header: nats.Header{bus.HeaderMsgID: []string{m.id}}, Data: m.payload}
			if _, err := pjs.PublishMsgAsync(msg); err != nil {
				pubDone <- err
				return
			}
		}
		select {
		case <-pjs.PublishAsyncComplete():
			pubDone <- nil
		case <-ctx.Done():
			pubDone <- ctx.Err()
		}
	}()

	// Poll the consumer (cheap) until it has nothing pending or unacknowledged, then confirm with
	// CountEvents: an event is acknowledged only after its transaction committed.
	deadline := time.Now().Add(max(2*time.Minute, time.Duration(cfg.Events)*time.Millisecond))
	var pubFinished bool
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0, 0, 0, 0, ctx.Err()
		case err := <-pubDone:
			if err != nil {
				return 0, 0, 0, 0, fmt.Errorf("publish: %w", err)
			}
			published, pubFinished = time.Since(start), true
			if n := pubErrs.Load(); n > 0 {
				return 0, 0, 0, 0, fmt.Errorf("publish: %d events not acknowledged by the stream, first: %v", n, firstErr.Load())
			}
		case <-t.C:
		}
		if !pubFinished {
			continue
		}
		pending, ackPending, err := ing.Lag(ctx)
		if err != nil || pending > 0 || ackPending > 0 {
			if time.Now().After(deadline) {
				return 0, 0, 0, 0, fmt.Errorf("ingest did not catch up within the deadline (pending %d, unacknowledged %d, %v)", pending, ackPending, err)
			}
			continue
		}
		n, err := st.CountEvents(ctx)
		if err != nil {
			return 0, 0, 0, 0, err
		}
		if n == int64(cfg.Events) {
			total = time.Since(start)
			own, others := meter.cores()
			cpu, otherCPU = own[0], others
			return total, published, cpu, otherCPU, nil
		}
		if time.Now().After(deadline) {
			return 0, 0, 0, 0, fmt.Errorf("the store holds %d of %d events after the deadline (dead letters?)", n, cfg.Events)
		}
	}
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// quiesce collects garbage and writes dirty pages back before a timed phase, so that it does not
// pay for what an earlier phase (or event generation) left behind.
func quiesce() {
	runtime.GC()
	syscall.Sync()
}
