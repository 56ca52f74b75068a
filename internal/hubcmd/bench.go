package hubcmd

import (
	"context"
	"errors"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/bench"
	"godwit.dev/godwit/internal/cli"
	"godwit.dev/godwit/internal/lease"
)

func newBenchCmd(stdio cli.IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the hub on this machine and print figures (ingest, fleet, ui, failover, ha)",
	}
	cmd.AddCommand(newBenchIngestCmd(stdio), newBenchFleetCmd(stdio), newBenchUICmd(stdio), newBenchFailoverCmd(stdio),
		newBenchHACmd(stdio), newBenchFleetHubCmd(stdio))
	return cmd
}

func newBenchIngestCmd(stdio cli.IO) *cobra.Command {
	cfg := bench.IngestConfig{Out: stdio.Out}
	var profile string
	cmd := &cobra.Command{
		Use:   "ingest",
		Short: "Events per second through NATS JetStream and the ingest into SQLite and PostgreSQL, against the raw insert rate",
		Long: `ingest publishes --events valid agent events into an embedded NATS server's events stream and times
them until a real ingester has stored every one, for SQLite (a temp dir) and PostgreSQL (a temporary
database, created and dropped). It also times store.InsertEvents of as many events in batches of
--batch (by default the ingester's transaction size on that engine) into a fresh database of the same
engine, and prints both rates and their ratio.`,
		Args: cobra.NoArgs,
		RunE: profiled(&profile, func(ctx context.Context) error {
			_, err := bench.RunIngest(ctx, cfg)
			return err
		}),
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Events, "events", 200_000, "events to publish end to end, and to insert raw")
	f.IntVar(&cfg.Agents, "agents", 1000, "agent subjects the events are spread over")
	f.IntVar(&cfg.Batch, "batch", 0, "events per InsertEvents call in the raw measurement; 0 is the ingester's events per transaction")
	f.IntVar(&cfg.IngestBatch, "ingest-batch", 0, "the ingester's fetch size; 0 is its default")
	f.IntVar(&cfg.WriteBatch, "write-batch", 0, "the ingester's events per transaction; 0 is what the hub uses on each engine (1000 on SQLite, the fetch size on PostgreSQL)")
	f.IntVar(&cfg.PerMessage, "per-message", 1, "events of one agent per message: 1 publishes each alone, more sends event batches as agents do")
	f.StringVar(&cfg.Postgres, "postgres", "", "PostgreSQL server DSN to create a temporary database on (default: try "+bench.DefaultPostgres+", skip if unreachable)")
	f.StringSliceVar(&cfg.Engines, "engines", []string{bench.EngineSQLite, bench.EnginePostgres}, "engines to measure")
	f.StringVar(&cfg.TempDir, "temp-dir", "", "directory for the SQLite files and JetStream storage (default: the system's)")
	f.StringVar(&profile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	return cmd
}

func newBenchFleetCmd(stdio cli.IO) *cobra.Command {
	cfg := bench.FleetConfig{Out: stdio.Out}
	var profile string
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Time a no-op migration across N simulated agents on a real hub; events/s and the hub's peak RSS",
		Long: `fleet starts a real hub (by default a child process, godwit hub, with SQLite and embedded NATS in a
temp dir), enrolls --agents simulated agents through its API and connects them to NATS with their own
credentials. Each heartbeats, watches and reads its desired state, and runs the assignments it gets as
a real agent would report them (observed state and events), with no-op steps. The benchmark applies a
--steps-step migration at 100% batch and prints the time from apply to succeeded, the events ingested
per second meanwhile and the hub's peak RSS. It samples the hub's memory every second (resident set,
Go heap in use, goroutine stacks) and, once every agent event is stored, takes a heap profile of the
hub (SIGUSR1 to a child hub) and prints its largest entries and where the file is.

Before the hub starts it measures, on this machine, the raw limits of the same nats-server build (KV
put+get round trips per second) and of the same store (SQLite InsertEvents rate), and prints Godwit's
figures of the rollout as a ratio of them.

The open-file limit is raised to its hard limit. If the agents do not fit it one connection each (or
with --connections below --agents), all of them are multiplexed over relay connections, up to 30
agents each: every agent is still enrolled with its own credentials, which the hub checks, and uses
only its own subjects under the union of the carried agents' permissions in the agents' account. The
hub then runs as "godwit bench fleet-hub", a child process that is "godwit hub" with relay connections
accepted (godwit hub never accepts them). The output says so.`,
		Args: cobra.NoArgs,
		RunE: profiled(&profile, func(ctx context.Context) error {
			_, err := bench.RunFleet(ctx, cfg)
			return err
		}),
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Agents, "agents", 1000, "simulated agents")
	f.IntVar(&cfg.Steps, "steps", 3, "steps of the no-op migration")
	f.IntVar(&cfg.Connections, "connections", 0, "NATS connections for the agents (0: one each if they fit the open-file limit, else all multiplexed over relay connections of up to 30 agents)")
	f.StringVar(&cfg.Hub, "hub", bench.HubAuto, "where the hub runs: auto, child or in-process")
	f.DurationVar(&cfg.Heartbeat, "heartbeat", 5*time.Second, "the hub's heartbeat interval (the liveness grace is 4 times it)")
	f.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "how long the rollout may take")
	f.StringVar(&cfg.TempDir, "temp-dir", "", "directory for the hub's data dir (default: the system's)")
	f.BoolVar(&cfg.Keep, "keep", false, "keep the hub's data dir and log afterwards")
	f.StringVar(&profile, "cpuprofile", "", "write a CPU profile of this process to this file (go tool pprof)")
	f.StringVar(&cfg.HeapProfile, "memprofile", "", "write a heap profile of this process to this file once the rollout is over")
	f.StringVar(&cfg.HubCPUProfile, "hub-cpuprofile", "", "write a CPU profile of the child hub during the rollout (apply to succeeded) to this file")
	f.StringVar(&cfg.AgentsCPUProfile, "rollout-cpuprofile", "", "write a CPU profile of this process (the simulated agents) during the rollout to this file")
	f.BoolVar(&cfg.SkipRawLimits, "skip-raw-limits", false, "do not measure the raw NATS and store limits before the hub starts")
	f.StringVar(&cfg.HubMemoryLimit, "hub-memory-limit", "", "the child hub's GOMEMLIMIT, e.g. 900MiB (GC tuning; default: the environment's, else the hub's own choice)")
	f.StringVar(&cfg.HubHeapProfile, "hub-memprofile", "", "keep the hub's heap profile (taken once every agent event is stored, and summed up in the output) in this file (default: a new file in --temp-dir, or the system's temp dir)")
	return cmd
}

func newBenchHACmd(stdio cli.IO) *cobra.Command {
	cfg := bench.HAConfig{Out: stdio.Out}
	cmd := &cobra.Command{
		Use:   "ha",
		Short: "Leader failover time of three hub processes (PostgreSQL, embedded JetStream cluster) over --kills kills of the leader",
		Long: `ha starts three hub child processes on a temporary PostgreSQL database, their embedded NATS servers
routed into one JetStream cluster with R3 streams and buckets, then kills the leading hub with SIGKILL
--kills times. Each time it measures how long until another replica's GET /api/v1/status says it leads
under a newer epoch (each survivor polled every 5 ms), restarts the killed hub and waits until it is ready.
It prints every failover — from the kill to the start of the new leader's term (the since its status
reports), and to its status saying so — and their min, median, p99 and max next to the configured lease
ttl and ttl + renew interval. The lease timing defaults to the hub's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := bench.RunHA(cmd.Context(), cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Kills, "kills", 50, "how many times to kill the leader")
	f.StringVar(&cfg.Postgres, "postgres", "", "PostgreSQL server DSN to create a temporary database on (default: "+bench.DefaultPostgres+")")
	def := lease.DefaultTiming()
	f.DurationVar(&cfg.TTL, "lease-ttl", def.TTL, "the hubs' lease ttl (default: the hub's)")
	f.DurationVar(&cfg.Renew, "lease-renew-interval", def.RenewInterval, "the hubs' lease renew interval (default: the hub's)")
	f.DurationVar(&cfg.Call, "lease-call-timeout", def.CallTimeout, "the hubs' lease call timeout (default: the hub's)")
	f.DurationVar(&cfg.Margin, "lease-margin", def.Margin, "the hubs' lease margin (default: the hub's)")
	f.StringVar(&cfg.TempDir, "temp-dir", "", "directory for the hubs' data dirs (default: the system's)")
	f.BoolVar(&cfg.Keep, "keep", false, "keep the data dirs and logs afterwards")
	return cmd
}

func newBenchUICmd(stdio cli.IO) *cobra.Command {
	cfg := bench.UIConfig{Out: stdio.Out}
	var profile string
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Server time (p50, p95) of the busiest web UI pages and API listings at 10,000 agents and 1,000,000 events",
		Long: `ui seeds a store straight through its interface — --agents agents (15% offline), 51 migrations of which
one spans the fleet mid-rollout with failures rolled back and failed rollbacks, a sweep, and --events events
over 30 days (3% errors, 7% warnings) — for SQLite (a temp dir) and PostgreSQL (a temporary database,
created and dropped). --sqlite-file and --postgres-db keep the fixture instead, built on the first run
and reused as it is by the next ones. It then serves each page --requests times through the hub's UI and API handlers in
this process, with a logged-in session or the admin token, and prints p50, p95 and the largest time per
page (server time: store queries and rendering, no network). The target is 200 ms p95; nothing fails
over it, the table marks it.`,
		Args: cobra.NoArgs,
		RunE: profiled(&profile, func(ctx context.Context) error {
			_, err := bench.RunUI(ctx, cfg)
			return err
		}),
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Agents, "agents", 10000, "agents in the fleet")
	f.IntVar(&cfg.Events, "events", 1000000, "events stored")
	f.IntVar(&cfg.Requests, "requests", 20, "timed requests per page (after two to warm up)")
	f.StringVar(&cfg.Postgres, "postgres", "", "PostgreSQL server DSN to create a temporary database on (default: try "+bench.DefaultPostgres+", skip if unreachable)")
	f.StringSliceVar(&cfg.Engines, "engines", []string{bench.EngineSQLite, bench.EnginePostgres}, "engines to measure")
	f.StringVar(&cfg.TempDir, "temp-dir", "", "directory for the SQLite file (default: the system's)")
	f.StringVar(&cfg.SQLiteFile, "sqlite-file", "", "SQLite database to measure: built there if absent and kept, reused as it is if present (--agents and --events then do not apply)")
	f.StringVar(&cfg.PostgresDB, "postgres-db", "", "PostgreSQL database to measure, on the --postgres server: created and built if absent and kept, reused as it is if present (--agents and --events then do not apply; drop it to build a new one)")
	f.StringVar(&profile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	return cmd
}

// profiled runs a benchmark, with a CPU profile written to *profile when it names a file.
func profiled(profile *string, run func(context.Context) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) (err error) {
		stop, err := bench.CPUProfile(*profile)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, stop()) }()
		return run(cmd.Context())
	}
}
