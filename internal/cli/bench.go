package cli

import (
	"errors"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/bench"
)

func newBenchCmd(stdio IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the hub on this machine and print figures (ingest, fleet)",
	}
	cmd.AddCommand(newBenchIngestCmd(stdio), newBenchFleetCmd(stdio))
	return cmd
}

func newBenchIngestCmd(stdio IO) *cobra.Command {
	cfg := bench.IngestConfig{Out: stdio.Out}
	var profile string
	cmd := &cobra.Command{
		Use:   "ingest",
		Short: "Events per second through NATS JetStream and the ingest into SQLite and PostgreSQL, against the raw insert rate",
		Long: `ingest publishes --events valid agent events into an embedded NATS server's events stream and times
them until a real ingester has stored every one, for SQLite (a temp dir) and PostgreSQL (a temporary
database, created and dropped). It also times store.InsertEvents of as many events in batches of
--batch into a fresh database of the same engine, and prints both rates and their ratio.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			stop, err := bench.CPUProfile(profile)
			if err != nil {
				return err
			}
			defer func() { err = errors.Join(err, stop()) }()
			_, err = bench.RunIngest(cmd.Context(), cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Events, "events", 200_000, "events to publish end to end, and to insert raw")
	f.IntVar(&cfg.Agents, "agents", 1000, "agent subjects the events are spread over")
	f.IntVar(&cfg.Batch, "batch", 500, "events per InsertEvents call in the raw measurement")
	f.IntVar(&cfg.IngestBatch, "ingest-batch", 0, "the ingester's batch (fetch and transaction size); 0 is its default")
	f.StringVar(&cfg.Postgres, "postgres", "", "PostgreSQL server DSN to create a temporary database on (default: try "+bench.DefaultPostgres+", skip if unreachable)")
	f.StringSliceVar(&cfg.Engines, "engines", []string{bench.EngineSQLite, bench.EnginePostgres}, "engines to measure")
	f.StringVar(&cfg.TempDir, "temp-dir", "", "directory for the SQLite files and JetStream storage (default: the system's)")
	f.StringVar(&profile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	return cmd
}

func newBenchFleetCmd(stdio IO) *cobra.Command {
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
per second meanwhile and the hub's peak RSS.

The open-file limit is raised to its hard limit. Agents that do not fit it one connection each (or all
of them, with --connections below --agents) are multiplexed over connections of the hub's own NATS user;
the hub then runs in this process and its peak RSS includes the agents. The output says so.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			stop, err := bench.CPUProfile(profile)
			if err != nil {
				return err
			}
			defer func() { err = errors.Join(err, stop()) }()
			_, err = bench.RunFleet(cmd.Context(), cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Agents, "agents", 1000, "simulated agents")
	f.IntVar(&cfg.Steps, "steps", 3, "steps of the no-op migration")
	f.IntVar(&cfg.Connections, "connections", 0, "NATS connections for the agents (0: one each, as many as the open-file limit allows)")
	f.StringVar(&cfg.Hub, "hub", bench.HubAuto, "where the hub runs: auto, child or in-process")
	f.DurationVar(&cfg.Heartbeat, "heartbeat", 5*time.Second, "the hub's heartbeat interval (the liveness grace is 4 times it)")
	f.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "how long the rollout may take")
	f.StringVar(&cfg.TempDir, "temp-dir", "", "directory for the hub's data dir (default: the system's)")
	f.BoolVar(&cfg.Keep, "keep", false, "keep the hub's data dir and log afterwards")
	f.StringVar(&profile, "cpuprofile", "", "write a CPU profile of this process to this file (go tool pprof)")
	f.StringVar(&cfg.HeapProfile, "memprofile", "", "write a heap profile of this process to this file once the rollout is over")
	return cmd
}
