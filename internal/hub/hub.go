// Package hub is the composition root of the hub process: it claims the data dir, opens the
// store, starts (or connects to) NATS JetStream, and runs the API and the controllers.
//
// Start order follows dependencies (store → bus → controllers → HTTP), Stop runs it backwards,
// so the hub never serves a request it cannot back with state. One exception: a replica of a
// clustered embedded NATS whose peers do not answer serves, while it waits for them, what the
// database alone backs (waiting.go).
package hub

import (
	"context"
	"crypto/tls"
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
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/buildinfo"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/datadir"
	"godwit.dev/godwit/internal/failover/groups"
	"godwit.dev/godwit/internal/ingest"
	"godwit.dev/godwit/internal/lease"
	"godwit.dev/godwit/internal/liveness"
	"godwit.dev/godwit/internal/migration/controller"
	"godwit.dev/godwit/internal/pki"
	"godwit.dev/godwit/internal/ratelimit"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/sweep"
	"godwit.dev/godwit/internal/ui"
	"godwit.dev/godwit/internal/wire"
	"godwit.dev/godwit/internal/worker"
	"golang.org/x/term"
)

// File names inside the data dir, besides wire.AdminTokenFile and wire.HubEndpointFile, which
// local clients read.
const (
	// ClusterConfigFile is the external cluster's configuration with this hub's callout keys
	// filled in (bus.ClusterConfig), written on every start with an external cluster.
	ClusterConfigFile = "nats-cluster.conf"
	sqliteFile        = "hub.db"
	jetstreamDir      = "jetstream"
)

// Hub is one hub replica.
type Hub struct {
	cfg *config.Hub
	log *slog.Logger
	// Out receives the one-time admin token notice.
	out io.Writer

	mu          sync.Mutex
	started     bool
	dir         *datadir.Dir
	store       store.Store
	tls         *pki.Bundle // nil when the hub serves plaintext
	natsCA      []byte      // PEM of the external cluster's CA (nats.ca)
	server      *bus.Server
	nc          *nats.Conn
	callout     *bus.Callout      // external cluster only
	calloutKeys *bus.CalloutKeys  // external cluster only
	sysNC       *nats.Conn        // external cluster only: the system account
	system      *bus.SystemClient // external cluster only
	js          jetstream.JetStream
	// ctlNC carries the lease alone, so that its renewals do not queue behind the agents'
	// traffic on nc: the events the ingest pulls, the heartbeats liveness watches, the
	// observed state the migration controller watches. In a fleet-wide reconnect storm nc's
	// deliveries back up for seconds, and a renewal answered after them is a lost lease.
	ctlNC *nats.Conn
	ctlJS jetstream.JetStream
	// desNC carries the migration controller's desired-state puts alone. A fleet-wide apply is
	// thousands of puts pipelined at once (controller.desiredInFlight); on nc they queued behind
	// the ingest's acknowledgements and everything else the hub sends, and nc's traffic behind
	// them. desired is the desired bucket on it.
	desNC    *nats.Conn
	desired  jetstream.KeyValue
	buckets  bus.Buckets
	live     *liveness.Controller
	ingest   *ingest.Ingester
	migrate  *controller.Controller
	sweeps   *sweep.Service
	exits    chan worker.Exit            // leader-only workers that ended by themselves
	lease    atomic.Pointer[lease.Lease] // set while contending
	leader   *leader
	natsID   string // the NATS cluster's identity (docs/ha.md)
	replica  replicaRow
	failover *groups.Service
	id       string
	http     *http.Server
	listener net.Listener
	front    front       // what the HTTP server serves: the waiting handler, then the full one
	waiting  atomic.Bool // true while a clustered replica waits for its JetStream cluster
	waitWeb  *ui.Server  // the waiting handler's web UI, closed when the full one takes over
	access   *api.Access // shared by the API and the UI, and by both handlers
	registry *prometheus.Registry
	endpoint wire.HubEndpoint

	clock     controller.Clock
	wrapStore func(store.Store) store.Store
	relays    bool
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

// WithAgentRelays makes the embedded NATS server accept relay connections (bus.RelayUser): one
// connection carrying several agents, each with its own credentials checked and its own
// permissions. Only `godwit bench fleet` uses it, to carry more simulated agents than the
// open-file limit allows one connection each; no configuration or flag of `godwit hub` reaches
// it (see internal/bus/relay.go for why it stays out of production).
func WithAgentRelays() Option { return func(h *Hub) { h.relays = true } }

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
			// Bounded: a replica stopped while it waited for its peers was serving already.
			sctx, cancel := context.WithTimeout(context.Background(), h.cfg.ShutdownTimeout.D())
			defer cancel()
			h.stopLocked(sctx)
		}
	}()
	if h.dir, err = datadir.Open(h.cfg.DataDir, datadir.KindHub); err != nil {
		if errors.Is(err, datadir.ErrInUse) && h.cfg.Database == "" {
			return fmt.Errorf("%w; its SQLite store serves one hub only: run hub replicas on PostgreSQL (--database, docs/ha.md)", err)
		}
		return err
	}
	if h.dir.Tightened != 0 {
		h.log.Warn("data dir was open to other users; tightened to 0700", "data_dir", h.dir.Path,
			"was", fmt.Sprintf("%#o", h.dir.Tightened))
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
	if err = h.setupTLS(); err != nil {
		return err
	}
	h.registry = prometheus.NewRegistry()
	h.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newFleetCollector(h.store, h.log))
	if h.access, err = h.newAccess(); err != nil {
		return err
	}
	if err = h.startBus(ctx); err != nil {
		return err
	}
	lim := h.cfg.AgentLimits
	h.ingest = ingest.New(ingest.Config{JS: h.js, Store: h.store, Logger: h.log, Registry: h.registry, EnsureStreams: h.ensureStreams,
		ClockSkew: lim.ClockSkew.D(), Quota: ingest.Quota{EventsPerSecond: float64(lim.EventRate), EventBurst: float64(lim.EventBurst),
			BytesPerSecond: float64(lim.ByteRate), ByteBurst: float64(lim.ByteBurst)}})
	for attempt := 1; ; attempt++ {
		if err = h.ingest.Start(ctx); err == nil {
			break
		}
		// On a cluster that just lost or regained a server, the consumer's leader may be
		// being elected: try again for a while.
		if !h.jetStreamCluster() || attempt >= 30 || ctx.Err() != nil {
			return fmt.Errorf("event ingest: %w", err)
		}
		h.log.Warn("event ingest not ready; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	h.exits = make(chan worker.Exit, 8)
	h.leader = newLeader(h)
	// The leader-only workers write through the term's checks; the API's writes (operators')
	// are not fenced and go to the store directly.
	leaderStore := fencedStore{Store: h.store, check: h.leader.check}
	h.live = liveness.New(liveness.Config{KV: h.buckets.Heartbeats, Store: h.store, Logger: h.log.With("component", "liveness"),
		Interval: h.cfg.Liveness.HeartbeatInterval.D(), Grace: h.cfg.Liveness.Grace.D(), LastSeenEvery: h.cfg.Liveness.LastSeenEvery.D(),
		Settle: h.cfg.Liveness.Settle.D(), OnExit: h.workerExited, Registry: h.registry,
		Publish: h.publishEvent, HubID: h.id,
		// The migration controller (created below; both run while this replica leads) keeps
		// its reachability index from the changes liveness stores.
		OnStatus: func(id, status string) { h.migrate.AgentStatus(id, status) }})
	h.migrate = controller.New(controller.Config{
		Store: leaderStore, Desired: h.desired, Observed: h.buckets.Observed, Logger: h.log.With("component", "migrations"),
		Leader: termLeadership{l: h.leader, name: controller.LeadershipName}, Publish: h.publishEvent, HubID: h.id, Clock: h.clock,
		Settle:   h.cfg.Liveness.Settle.D(),
		Registry: h.registry,
		// The controller watches on nc and puts on desNC: it is connected when both are, and a
		// document must fit the smaller payload of their servers (on an external cluster they
		// may be two servers).
		Connected:  func() bool { return h.nc.IsConnected() && h.desNC.IsConnected() },
		MaxPayload: func() int64 { return min(h.nc.MaxPayload(), h.desNC.MaxPayload()) },
		Referenced: func(ctx context.Context, migration string) ([]string, error) {
			return h.sweeps.RemediatingWith(ctx, migration)
		},
		OnExit: h.workerExited,
	})
	h.sweeps = sweep.New(sweep.Config{Store: leaderStore, Requests: h.buckets.Sweep, Results: h.buckets.SweepResults,
		Leader: termLeadership{l: h.leader, name: sweep.LeadershipName}, Logger: h.log.With("component", "sweeps"),
		Publish: h.publishEvent, HubID: h.id, Registry: h.registry, NudgeMigrations: h.migrate.Nudge, OnExit: h.workerExited})
	h.failover = &groups.Service{Store: h.store, Publisher: &groups.Bus{Store: h.store, JS: h.js, Assignments: h.buckets.Failover,
		Replicas: h.cfg.NATS.Replicas, Disconnect: h.disconnectAgent}}
	// Members learn their groups from the bus: a hub that starts publishes them all again.
	if err := h.failover.Publisher.Publish(ctx, wire.FailoverGroup{}); err != nil {
		h.log.Warn("failover groups could not be published to their members yet (apply again to retry)", "err", err)
	}
	if err = h.serveAll(); err != nil {
		return err
	}
	// The API serves from here on; the leader-only workers run while this replica holds the
	// lease.
	if err = h.startLease(ctx); err != nil {
		return err
	}
	h.started = true
	h.log.Info("hub started", "version", buildinfo.String(), "api", h.endpoint.API, "nats", strings.Join(h.endpoint.NATS, ","),
		"store", h.store.Engine(), "data_dir", h.dir.Path)
	return nil
}

// agentAuth is the store as the NATS server's authenticator: credentials, and the failover
// group whose bucket an agent may reach (bus.FailoverGroups).
type agentAuth struct{ store.Store }

func (a agentAuth) FailoverBucket(ctx context.Context, agentID string) (string, error) {
	return groups.FailoverBucket(ctx, a.Store, agentID)
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
// shared database): stored hashed and saved 0600 in the data dir for the local CLI. It is printed
// once, and only to a terminal: output that goes to a file or a log collector never holds it, and
// the log says where the file is instead.
func (h *Hub) initAdminToken(ctx context.Context) error {
	tok := credential.New(credential.PrefixAdmin)
	created, err := h.store.InitAdminToken(ctx, credential.Hash(tok), time.Now())
	if err != nil {
		return err
	}
	if !created {
		return nil
	}
	path := h.dir.Join(wire.AdminTokenFile)
	if err := h.dir.WriteFile(wire.AdminTokenFile, []byte(tok+"\n")); err != nil {
		return fmt.Errorf("save admin token: %w", err)
	}
	if isTerminal(h.out) {
		fmt.Fprintf(h.out, "Admin token (shown once; also saved to %s):\n  %s\n", path, tok)
		return nil
	}
	h.log.Info("admin token created; not printed because the output is not a terminal: read it from its file (mode 0600)", "path", path)
	return nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
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
		sc := bus.ServerConfig{StoreDir: h.dir.Join(jetstreamDir), Listen: h.cfg.NATS.Listen, Auth: agentAuth{h.store}, Logger: h.log,
			Verbose: h.log.Enabled(ctx, slog.LevelDebug), Relays: h.relays}
		if h.tls != nil {
			sc.TLS = h.tls.ServerConfig()
		}
		if sc.Cluster, err = h.routes(ctx); err != nil {
			return err
		}
		h.server, err = bus.StartServer(sc)
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		h.nc, err = h.server.ConnectHub("godwit-hub", opts...)
		if err == nil {
			h.ctlNC, err = h.server.ConnectHub("godwit-hub-control", opts...)
		}
		if err == nil {
			h.desNC, err = h.server.ConnectHub("godwit-hub-desired", opts...)
		}
	} else {
		h.nc, err = h.connectExternal(h.cfg.NATS.URL, "godwit-hub", opts...)
		if err == nil {
			h.ctlNC, err = h.connectExternal(h.cfg.NATS.URL, "godwit-hub-control", opts...)
		}
		if err == nil {
			h.desNC, err = h.connectExternal(h.cfg.NATS.URL, "godwit-hub-desired", opts...)
		}
	}
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	if h.ctlJS, err = jetstream.New(h.ctlNC); err != nil {
		return err
	}
	if h.server == nil {
		if err = h.startCallout(ctx); err != nil {
			return err
		}
	}
	if h.js, err = jetstream.New(h.nc); err != nil {
		return err
	}
	h.endpoint.NATS = h.cfg.NATS.Advertise
	if len(h.endpoint.NATS) == 0 {
		if h.server != nil {
			h.endpoint.NATS = []string{h.server.ClientURL()}
		} else {
			h.endpoint.NATS = strings.Split(h.cfg.NATS.URL, ",")
		}
	}
	// What agents are handed (and the endpoint file holds) never carries the hub's credentials.
	for i, u := range h.endpoint.NATS {
		if h.endpoint.NATS[i], err = credential.StripUserinfo(strings.TrimSpace(u)); err != nil {
			return err
		}
	}
	if h.cfg.Clustered() {
		// Waiting for the peers below may take as long as they stay down: meanwhile the
		// operator gets answers (waiting.go).
		if err = h.serveWhileWaiting(ctx); err != nil {
			return err
		}
	}
	if err = h.ensureJetStream(ctx); err != nil {
		return err
	}
	if h.server == nil {
		return h.probeExternal(ctx)
	}
	return nil
}

// ensureJetStream declares the buckets and streams. On a clustered embedded NATS it waits
// for the JetStream cluster (a quorum of the replicas' servers), saying which peers it waits
// for; a replica that cannot reach its peers never leads alone.
func (h *Hub) ensureJetStream(ctx context.Context) error {
	// A request sent before the cluster has a meta leader, or racing the same request of another
	// replica starting at the same time, may never be answered: on a cluster each try is short,
	// and tried again (what the last try created is found at once).
	timeout := 30 * time.Second
	if h.jetStreamCluster() {
		timeout = 3 * time.Second
	}
	try := func() error {
		bctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var err error
		h.buckets, err = bus.EnsureBuckets(bctx, h.js, bus.BucketOptions{Replicas: h.cfg.NATS.Replicas, HeartbeatMaxAge: h.cfg.Retention.Heartbeats.D()})
		if err != nil {
			return fmt.Errorf("jetstream buckets: %w", err)
		}
		djs, err := jetstream.New(h.desNC)
		if err == nil {
			h.desired, err = djs.KeyValue(bctx, wire.BucketDesired)
		}
		if err != nil {
			return fmt.Errorf("jetstream buckets: %s on its own connection: %w", wire.BucketDesired, err)
		}
		return h.ensureStreams(bctx)
	}
	if !h.jetStreamCluster() {
		return try()
	}
	began := time.Now()
	for {
		var missing []string
		if h.server != nil {
			var n int
			n, missing = h.server.PeerStatus()
			if len(missing) > 0 {
				h.log.Warn("waiting for the other hub replicas' NATS servers: this replica follows until the JetStream cluster has a quorum (it serves the API and the UI from the database meanwhile)",
					"waiting_for", strings.Join(missing, ","), "connected", n, "api", h.endpoint.API)
			}
		}
		err := try()
		if err == nil {
			return nil
		}
		settling := placementPending(err) && time.Since(began) < externalPlacementWait
		if h.server == nil && !unanswered(err) && !settling {
			// An external cluster that answers, and refuses: it will not change its mind.
			return fmt.Errorf("%w (nats.replicas is %d: the NATS cluster must have at least that many JetStream servers)", err, h.cfg.NATS.Replicas)
		}
		h.log.Warn("jetstream cluster not ready; retrying", "err", err)
		select {
		case <-ctx.Done():
			if len(missing) == 0 {
				return fmt.Errorf("jetstream cluster: %w (last: %v)", ctx.Err(), err)
			}
			return fmt.Errorf("jetstream cluster: %w (waiting for %s)", ctx.Err(), strings.Join(missing, ","))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// jetStreamCluster reports whether the hub's JetStream is a cluster of servers: the embedded
// server routed to the other replicas', or an external cluster holding R>1 streams. A request to
// a cluster that has no meta leader or stream leader yet (just started, or restarted to add the
// auth callout as docs/security.md asks) may never be answered, so on a cluster the hub's start
// tries each declaration briefly, and again.
func (h *Hub) jetStreamCluster() bool {
	return h.cfg.Clustered() || (h.cfg.NATS.URL != "" && h.cfg.NATS.Replicas > 1)
}

// jsClusterNotAvailable is nats-server's JSClusterNotAvailErr, "JetStream system temporarily
// unavailable": the cluster has no meta leader yet.
const jsClusterNotAvailable jetstream.ErrorCode = 10008

// jsNoPlacement is nats-server's JSClusterNoPeersErrF ("no suitable peers for placement"): too
// few JetStream servers for the replicas, or a cluster just started whose meta leader has not
// yet heard from them all.
const jsNoPlacement jetstream.ErrorCode = 10005

// externalPlacementWait is how long a hub on an external cluster takes "no suitable peers for
// placement" for a cluster still gathering its servers before it believes it.
const externalPlacementWait = 30 * time.Second

// placementPending reports whether err is "no suitable peers for placement".
func placementPending(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jsNoPlacement
}

// unanswered reports whether a JetStream request failed for want of an answer (or with the
// cluster's "temporarily unavailable"), which a cluster electing its leaders gives for a while.
// Other refusals, such as too few servers for the replicas, stay as they are.
func unanswered(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || (errors.As(err, &api) && api.ErrorCode == jsClusterNotAvailable)
}

// routes is the embedded server's cluster configuration; nil for a one-server NATS. The
// routes' password is shared through the database, so only replicas of one database route to
// each other.
func (h *Hub) routes(ctx context.Context) (*bus.Routes, error) {
	if !h.cfg.Clustered() {
		return nil, nil
	}
	pw, err := h.store.EnsureSetting(ctx, "nats_route_password", newID(), time.Now())
	if err != nil {
		return nil, fmt.Errorf("nats routes: %w", err)
	}
	cl := h.cfg.NATS.Cluster
	return &bus.Routes{Name: cl.Name, Listen: cl.Listen, Peers: cl.Routes, ServerName: cl.ServerName,
		User: "godwit-route", Password: pw}, nil
}

// ensureStreams declares the events and dead-letter streams; the ingest calls it again if the
// events stream goes missing.
func (h *Hub) ensureStreams(ctx context.Context) error {
	if err := bus.EnsureStreams(ctx, h.js, bus.StreamOptions{Replicas: h.cfg.NATS.Replicas,
		MaxAge: h.cfg.Retention.Events.D(), DeadLetterMaxAge: h.cfg.Retention.DeadLetters.D(),
		MaxBytes: h.cfg.Retention.EventsMaxBytes, DeadLetterMaxBytes: h.cfg.Retention.DeadLettersMaxBytes,
		MaxMsgsPerAgent: h.cfg.AgentLimits.StreamEvents}); err != nil {
		return fmt.Errorf("jetstream streams: %w", err)
	}
	return nil
}

// handler builds the API and the web UI. Until the JetStream cluster is ready (waiting), the
// parts that need it are left out: their routes answer 503 saying why (api.Config.Pending).
func (h *Hub) handler(waiting bool) (http.Handler, *ui.Server) {
	ac := api.Config{
		Store: h.store, Bus: busAdapter{h}, Logger: h.log,
		MaxBodyBytes: h.cfg.MaxBodyBytes, HeartbeatInterval: h.cfg.Liveness.HeartbeatInterval.D(),
		CAFingerprint: h.caFingerprint(), NATSCA: h.agentNATSCA(), Access: h.access, Leadership: h.leadership,
	}
	uc := ui.Config{Store: h.store, Logger: h.log.With("component", "ui"), Version: buildinfo.String(), Access: h.access,
		Leadership: h.leadership}
	mux := http.NewServeMux()
	if waiting {
		ac.Pending = h.pending
		// The API's request metrics are registered once, by the full API; the rest of the
		// registry is served from the start.
		mux.Handle("GET /metrics", promhttp.HandlerFor(h.registry, promhttp.HandlerOpts{Registry: h.registry}))
	} else {
		pipe := pipeline{h: h, ing: h.ingest}
		ac.Pipeline, ac.Migrations, ac.Sweeps, ac.Failover, ac.Registry = pipe, h.migrate, h.sweeps, h.failover, h.registry
		uc.Migrations, uc.Pipeline, uc.Sweeps, uc.Failover = h.migrate, pipe, h.sweeps, h.failover
	}
	web := ui.New(uc)
	// The web UI under /ui/, the API and everything else as before; "/" leads people to the UI.
	mux.Handle("/ui/", web)
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	mux.Handle("/", api.New(ac))
	return mux, web
}

// serveAll serves the whole API and UI: it starts the HTTP server, or, on a replica that
// served while it waited for JetStream, hands the running server over to them.
func (h *Hub) serveAll() error {
	hd, web := h.handler(false)
	if h.http == nil {
		return h.startHTTP(hd, web)
	}
	h.http.RegisterOnShutdown(web.Close)
	h.front.set(hd)
	h.waiting.Store(false)
	// The waiting UI's live pages end; browsers reconnect to the full one.
	h.waitWeb.Close()
	h.log.Info("the JetStream cluster is ready: this replica serves the whole API and runs the ingest")
	return nil
}

// startHTTP listens and serves hd; web is its UI, whose live streams end at shutdown.
func (h *Hub) startHTTP(hd http.Handler, web *ui.Server) error {
	h.front.set(hd)
	ln, err := net.Listen("tcp", h.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", h.cfg.Listen, err)
	}
	scheme := "http"
	if h.tls != nil {
		ln = tls.NewListener(ln, h.tls.ServerConfig())
		scheme = "https"
		h.endpoint.CA = h.tls.CAFile
	}
	h.listener = ln
	hs := &http.Server{Handler: &h.front, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelWarn)}
	h.http = hs
	// Live UI streams never end by themselves: Shutdown would wait for them until its deadline.
	hs.RegisterOnShutdown(web.Close)
	// The server, not h.http, which Stop clears (possibly before this goroutine runs).
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("http server stopped", "err", err)
		}
	}()
	h.endpoint.API = scheme + "://" + ln.Addr().String()
	h.endpoint.PID = os.Getpid()
	b, _ := json.MarshalIndent(h.endpoint, "", "  ")
	return h.dir.WriteFile(wire.HubEndpointFile, b)
}

// newAccess is the one authority on callers the API and the web UI share: tokens and roles, the
// failed-attempt limit per client address, and the audit log.
func (h *Hub) newAccess() (*api.Access, error) {
	limiter, err := ratelimit.New(ratelimit.Config{Burst: h.cfg.Auth.FailureBurst, Interval: h.cfg.Auth.FailureInterval.D()})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	proxies, err := h.cfg.TrustedProxyPrefixes()
	if err != nil {
		return nil, err
	}
	return api.NewAccess(api.AccessConfig{Store: h.store, Limiter: limiter, TrustedProxies: proxies,
		Logger: h.log.With("component", "access"), Registry: h.registry}), nil
}

// Endpoint returns where the hub listens (valid after Start).
func (h *Hub) Endpoint() wire.HubEndpoint {
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
	// The lease first: its term ends, the leader-only workers stop, and the key is handed on
	// to another replica at once.
	errs = append(errs, h.stopLease(ctx))
	errs = append(errs, worker.StopAll(ctx, h.leaderWorkers()...))
	h.sweeps, h.migrate, h.live = nil, nil, nil
	// The ingester finishes its in-flight batch and acks what committed, within the budget of
	// ctx.
	if h.ingest != nil {
		errs = append(errs, h.ingest.Stop(ctx))
		h.ingest = nil
	}
	if h.callout != nil {
		errs = append(errs, h.callout.Stop(ctx))
		h.callout = nil
	}
	if h.sysNC != nil {
		h.sysNC.Close()
		h.sysNC, h.system = nil, nil
	}
	if h.ctlNC != nil {
		// The lease stopped above.
		h.ctlNC.Close()
		h.ctlNC, h.ctlJS = nil, nil
	}
	if h.desNC != nil {
		// The migration controller stopped above.
		_ = h.desNC.FlushTimeout(2 * time.Second)
		h.desNC.Close()
		h.desNC, h.desired = nil, nil
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

// leaderWorkers are the workers that run on the leading hub only, in start order: liveness,
// the migration controller and the sweep scheduler. They start and stop together.
func (h *Hub) leaderWorkers() []worker.Worker {
	var ws []worker.Worker
	if h.live != nil {
		ws = append(ws, h.live)
	}
	if h.migrate != nil {
		ws = append(ws, h.migrate)
	}
	if h.sweeps != nil {
		ws = append(ws, h.sweeps)
	}
	return ws
}

// workerExited hears of a worker that ended by itself: a fenced one ends this replica's term
// (leader.exited); anything else is for Run to act on.
func (h *Hub) workerExited(e worker.Exit) {
	if h.leader != nil && h.leader.exited(e) {
		return
	}
	select {
	case h.exits <- e:
	default:
		// Only if Run is not reading (the hub is stopping anyway); the worker logged its end.
		h.log.Warn("worker exit not handled: the hub is busy stopping", "worker", e.Worker, "err", e.Err)
	}
}

// Run starts the hub, waits for ctx to end (SIGTERM/SIGINT), then stops within the configured
// shutdown budget. A worker that panics, or ends by itself for any reason but being deposed,
// stops the hub with an error (exit non-zero, so a supervisor restarts it rather than leaving
// it half alive); a deposed one ends this replica's term (leader.go), and the hub goes on as a
// follower.
func (h *Hub) Run(ctx context.Context) error {
	if err := h.Start(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// Asked to stop (SIGTERM) while it was still starting: Start undid what it had
			// begun; that is a clean stop, not a failure.
			h.log.Info("hub stopped while it was starting", "reason", err)
			return nil
		}
		return err
	}
	var fatal error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case fatal = <-h.ingest.Fatal():
			h.log.Error("hub stopping after a worker panic", "err", fatal)
			break wait
		case e := <-h.exits:
			fatal = e
			h.log.Error("hub stopping: a worker ended by itself", "worker", e.Worker, "err", e.Err)
			break wait
		}
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
	if b.h.waiting.Load() {
		return errors.New(b.h.pending())
	}
	if b.h.server != nil && !b.h.server.Ready() {
		return errors.New("embedded nats server not ready")
	}
	if b.h.nc == nil || !b.h.nc.IsConnected() {
		return errors.New("not connected to nats")
	}
	if _, err := b.h.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if ing := b.h.ingest; ing != nil {
		if err := ing.Health(); err != nil {
			return err
		}
	}
	return nil
}

func (b busAdapter) AgentURLs() []string { return b.h.endpoint.NATS }

// DisconnectAgent closes the agent's live connections: on the embedded server directly, on an
// external cluster through its system account.
func (b busAdapter) DisconnectAgent(ctx context.Context, id string) (int, error) {
	// The API calls this once the revocation is stored: the migration controller, if it runs
	// here, stops counting the agent as reachable on its next pass (on another replica it learns
	// it from liveness once the agent's heartbeats stop, or from its periodic resync).
	if b.h.migrate != nil {
		b.h.migrate.AgentRevoked(id)
	}
	return b.h.disconnectAgent(ctx, id)
}

// disconnectAgent closes the agent's live NATS connections: on the embedded server directly, on
// an external cluster through its system account.
func (h *Hub) disconnectAgent(ctx context.Context, id string) (int, error) {
	if h.server != nil {
		return h.server.DisconnectAgent(id), nil
	}
	if h.system == nil {
		return 0, errors.New("no system-account connection to the NATS cluster")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return h.system.DisconnectAgent(ctx, id)
}
