// Package hub is the composition root of the hub process: it claims the data dir, opens the
// store, starts (or connects to) NATS JetStream, and runs the API and the controllers.
//
// Start order follows dependencies (store → bus → controllers → HTTP), Stop runs it backwards,
// so the hub never serves a request it cannot back with state.
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/buildinfo"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/datadir"
	"godwit.dev/godwit/internal/ingest"
	"godwit.dev/godwit/internal/lease"
	"godwit.dev/godwit/internal/liveness"
	"godwit.dev/godwit/internal/migration/controller"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/sweep"
	"godwit.dev/godwit/internal/ui"
	"godwit.dev/godwit/internal/wire"
)

// File names inside the data dir.
const (
	AdminTokenFile = "admin.token"
	EndpointFile   = "endpoint.json"
	sqliteFile     = "hub.db"
	jetstreamDir   = "jetstream"
)

// Endpoint is written to the data dir on start so local clients (the CLI, tests) find the hub.
type Endpoint struct {
	API  string   `json:"api"`
	NATS []string `json:"nats"`
	PID  int      `json:"pid"`
}

// Hub is one hub replica.
type Hub struct {
	cfg *config.Hub
	log *slog.Logger
	// Out receives the one-time admin token notice.
	out io.Writer

	mu       sync.Mutex
	started  bool
	dir      *datadir.Dir
	store    store.Store
	server   *bus.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	buckets  bus.Buckets
	live     *liveness.Controller
	ingest   *ingest.Ingester
	migrate  *controller.Controller
	sweeps   *sweep.Service
	id       string
	http     *http.Server
	listener net.Listener
	registry *prometheus.Registry
	endpoint Endpoint

	clock     controller.Clock
	wrapStore func(store.Store) store.Store
}

// New returns a hub for a validated configuration.
func New(cfg *config.Hub, log *slog.Logger, out io.Writer, opts ...Option) *Hub {
	h := &Hub{cfg: cfg, log: log, out: out}
	for _, o := range opts {
		o(h)
	}
	return h
}

// Option adjusts a hub; the options exist for tests and outage drills.
type Option func(*Hub)

// WithClock makes the migration controller count deadlines on clock (tests jump hours with it).
func WithClock(c controller.Clock) Option { return func(h *Hub) { h.clock = c } }

// WithStore wraps the store the hub opens (fault injection: "the database is down").
func WithStore(wrap func(store.Store) store.Store) Option { return func(h *Hub) { h.wrapStore = wrap } }

// Bus returns the embedded NATS server (nil with an external one), for outage drills.
func (h *Hub) Bus() *bus.Server { return h.server }

// Start brings the hub up. On error everything already started is stopped again.
func (h *Hub) Start(ctx context.Context) (err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started {
		return nil
	}
	defer func() {
		if err != nil {
			h.stopLocked(context.Background())
		}
	}()
	if h.dir, err = datadir.Open(h.cfg.DataDir, datadir.KindHub); err != nil {
		return err
	}
	if h.id == "" {
		host, _ := os.Hostname()
		h.id = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if err = h.openStore(ctx); err != nil {
		return err
	}
	if err = h.initAdminToken(ctx); err != nil {
		return err
	}
	if err = h.startBus(ctx); err != nil {
		return err
	}
	h.registry = prometheus.NewRegistry()
	h.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h.live = liveness.New(h.buckets.Heartbeats, h.store, h.log, h.cfg.Liveness.HeartbeatInterval.D(), h.cfg.Liveness.Grace.D())
	if err = h.live.Start(ctx); err != nil {
		return err
	}
	h.ingest = ingest.New(ingest.Config{JS: h.js, Store: h.store, Logger: h.log, Registry: h.registry})
	if err = h.ingest.Start(ctx); err != nil {
		return fmt.Errorf("event ingest: %w", err)
	}
	h.migrate = controller.New(controller.Config{
		Store: h.store, Desired: h.buckets.Desired, Observed: h.buckets.Observed, Logger: h.log.With("component", "migrations"),
		Leader: lease.StoreEpoch{Store: h.store, Name: controller.LeadershipName, Holder: h.id}, Publish: h.publishEvent, HubID: h.id, Clock: h.clock,
		Settle:    h.cfg.Liveness.Settle.D(),
		Registry:  h.registry,
		Connected: h.nc.IsConnected,
	})
	if err = h.migrate.Start(ctx); err != nil {
		return err
	}
	h.sweeps = sweep.New(sweep.Config{Store: h.store, Requests: h.buckets.Sweep, Results: h.buckets.SweepResults,
		Leader: lease.StoreEpoch{Store: h.store, Name: sweep.LeadershipName, Holder: h.id}, Logger: h.log.With("component", "sweeps"),
		Publish: h.publishEvent, HubID: h.id, Registry: h.registry, NudgeMigrations: h.migrate.Nudge})
	if err = h.sweeps.Start(ctx); err != nil {
		return err
	}
	if err = h.startHTTP(); err != nil {
		return err
	}
	h.started = true
	h.log.Info("hub started", "version", buildinfo.String(), "api", h.endpoint.API, "nats", strings.Join(h.endpoint.NATS, ","),
		"store", h.store.Engine(), "data_dir", h.dir.Path)
	return nil
}

func (h *Hub) openStore(ctx context.Context) error {
	var st store.Store
	var err error
	if h.cfg.Database == "" {
		st, err = sqlite.Open(ctx, h.dir.Join(sqliteFile))
	} else {
		st, err = postgres.Open(ctx, h.cfg.Database)
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	h.store = st
	if h.wrapStore != nil {
		h.store = h.wrapStore(st)
	}
	return nil
}

// initAdminToken creates the admin token on the first start of a hub (or of the first hub of a
// shared database): stored hashed, printed once, and saved 0600 in the data dir for the local CLI.
func (h *Hub) initAdminToken(ctx context.Context) error {
	tok := credential.New(credential.PrefixAdmin)
	created, err := h.store.InitAdminToken(ctx, credential.Hash(tok), time.Now())
	if err != nil {
		return err
	}
	if !created {
		return nil
	}
	path := h.dir.Join(AdminTokenFile)
	if err := h.dir.WriteFile(AdminTokenFile, []byte(tok+"\n")); err != nil {
		return fmt.Errorf("save admin token: %w", err)
	}
	fmt.Fprintf(h.out, "Admin token (shown once; also saved to %s):\n  %s\n", path, tok)
	return nil
}

func (h *Hub) startBus(ctx context.Context) error {
	var err error
	opts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				h.log.Warn("nats", "subject", sub.Subject, "err", err)
				return
			}
			h.log.Warn("nats", "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				h.log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { h.log.Info("nats reconnected") }),
	}
	if h.cfg.NATS.URL == "" {
		h.server, err = bus.StartServer(bus.ServerConfig{
			StoreDir: h.dir.Join(jetstreamDir), Listen: h.cfg.NATS.Listen, Auth: h.store, Logger: h.log,
		})
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		h.nc, err = h.server.ConnectHub("godwit-hub", opts...)
	} else {
		h.nc, err = nats.Connect(h.cfg.NATS.URL, append(opts, nats.Name("godwit-hub"))...)
	}
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	if h.js, err = jetstream.New(h.nc); err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	h.buckets, err = bus.EnsureBuckets(bctx, h.js, bus.BucketOptions{Replicas: h.cfg.NATS.Replicas, HeartbeatMaxAge: h.cfg.Retention.Heartbeats.D()})
	if err != nil {
		return fmt.Errorf("jetstream buckets: %w", err)
	}
	if err = bus.EnsureStreams(bctx, h.js, bus.StreamOptions{Replicas: h.cfg.NATS.Replicas,
		MaxAge: h.cfg.Retention.Events.D(), DeadLetterMaxAge: h.cfg.Retention.DeadLetters.D()}); err != nil {
		return fmt.Errorf("jetstream streams: %w", err)
	}
	h.endpoint.NATS = h.cfg.NATS.Advertise
	if len(h.endpoint.NATS) == 0 {
		if h.server != nil {
			h.endpoint.NATS = []string{h.server.ClientURL()}
		} else {
			h.endpoint.NATS = strings.Split(h.cfg.NATS.URL, ",")
		}
	}
	return nil
}

func (h *Hub) startHTTP() error {
	pipe := pipeline{h: h, ing: h.ingest}
	srv := api.New(api.Config{
		Store: h.store, Bus: busAdapter{h}, Pipeline: pipe, Migrations: h.migrate, Sweeps: h.sweeps,
		Logger: h.log, Registry: h.registry,
		MaxBodyBytes: h.cfg.MaxBodyBytes, HeartbeatInterval: h.cfg.Liveness.HeartbeatInterval.D(),
	})
	web := ui.New(ui.Config{Store: h.store, Migrations: h.migrate, Pipeline: pipe, Sweeps: h.sweeps, Logger: h.log.With("component", "ui"),
		Version: buildinfo.String()})
	// The web UI under /ui/, the API and everything else as before; "/" leads people to the UI.
	mux := http.NewServeMux()
	mux.Handle("/ui/", web)
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	mux.Handle("/", srv)
	ln, err := net.Listen("tcp", h.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", h.cfg.Listen, err)
	}
	h.listener = ln
	h.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelWarn)}
	// Live UI streams never end by themselves: Shutdown would wait for them until its deadline.
	h.http.RegisterOnShutdown(web.Close)
	go func() {
		if err := h.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("http server stopped", "err", err)
		}
	}()
	h.endpoint.API = "http://" + ln.Addr().String()
	h.endpoint.PID = os.Getpid()
	b, _ := json.MarshalIndent(h.endpoint, "", "  ")
	return h.dir.WriteFile(EndpointFile, b)
}

// Endpoint returns where the hub listens (valid after Start).
func (h *Hub) Endpoint() Endpoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.endpoint
}

// Store returns the hub's store (valid after Start).
func (h *Hub) Store() store.Store { return h.store }

// Stop drains and stops everything within ctx. Safe to call twice.
func (h *Hub) Stop(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.started {
		return nil
	}
	h.started = false
	return h.stopLocked(ctx)
}

func (h *Hub) stopLocked(ctx context.Context) error {
	var errs []error
	if h.http != nil {
		errs = append(errs, h.http.Shutdown(ctx))
		h.http = nil
	}
	if h.sweeps != nil {
		errs = append(errs, h.sweeps.Stop(ctx))
		h.sweeps = nil
	}
	if h.migrate != nil {
		errs = append(errs, h.migrate.Stop(ctx))
		h.migrate = nil
	}
	// Stop taking new work first: the ingester finishes its in-flight batch and acks what
	// committed, within the budget of ctx.
	if h.ingest != nil {
		errs = append(errs, h.ingest.Stop(ctx))
		h.ingest = nil
	}
	if h.live != nil {
		errs = append(errs, h.live.Stop(ctx))
		h.live = nil
	}
	if h.nc != nil {
		// Everything that consumed from this connection has stopped above; flush what was
		// published and close before the embedded server goes away.
		_ = h.nc.FlushTimeout(2 * time.Second)
		h.nc.Close()
		h.nc = nil
	}
	if h.server != nil {
		errs = append(errs, h.server.Stop(ctx))
		h.server = nil
	}
	if h.store != nil {
		errs = append(errs, h.store.Close())
		h.store = nil
	}
	if h.dir != nil {
		errs = append(errs, h.dir.Close())
		h.dir = nil
	}
	return errors.Join(errs...)
}

// Run starts the hub, waits for ctx to end (SIGTERM/SIGINT), then stops within the configured
// shutdown budget.
func (h *Hub) Run(ctx context.Context) error {
	if err := h.Start(ctx); err != nil {
		return err
	}
	var fatal error
	select {
	case <-ctx.Done():
	case fatal = <-h.ingest.Fatal():
		// A worker panicked: its stack is logged; stop cleanly, then exit non-zero so a
		// supervisor restarts the hub rather than leaving it half alive.
		h.log.Error("hub stopping after a worker panic", "err", fatal)
	}
	h.log.Info("hub stopping", "budget", h.cfg.ShutdownTimeout.D())
	sctx, cancel := context.WithTimeout(context.Background(), h.cfg.ShutdownTimeout.D())
	defer cancel()
	if err := h.Stop(sctx); err != nil {
		return errors.Join(fatal, fmt.Errorf("stop: %w", err))
	}
	h.log.Info("hub stopped")
	return fatal
}

// publishEvent records a hub event in the events stream; the ingest stores it like any other.
func (h *Hub) publishEvent(ctx context.Context, e wire.Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = h.js.Publish(ctx, bus.HubEventSubject, b, jetstream.WithMsgID(e.ID))
	return err
}

// busAdapter gives the API what it needs of the bus.
type busAdapter struct{ h *Hub }

func (b busAdapter) Ready(ctx context.Context) error {
	if b.h.server != nil && !b.h.server.Ready() {
		return errors.New("embedded nats server not ready")
	}
	if b.h.nc == nil || !b.h.nc.IsConnected() {
		return errors.New("not connected to nats")
	}
	if _, err := b.h.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

func (b busAdapter) AgentURLs() []string { return b.h.endpoint.NATS }

func (b busAdapter) DisconnectAgent(id string) int {
	if b.h.server == nil {
		return 0
	}
	return b.h.server.DisconnectAgent(id)
}
