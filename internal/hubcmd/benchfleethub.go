package hubcmd

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"godwit.dev/godwit/internal/bench"
	"godwit.dev/godwit/internal/cli"
)

// newBenchFleetHubCmd is the hub `godwit bench fleet` starts as its child process when it
// multiplexes agents: `godwit hub` with relay connections accepted (bus.RelayUser). It is hidden
// and takes only the settings the benchmark passes, on the fresh data dir it made; `godwit hub`
// has no configuration or flag that accepts relays.
func newBenchFleetHubCmd(stdio cli.IO) *cobra.Command {
	var c bench.FleetHubConfig
	var format string
	cmd := &cobra.Command{
		Use:    "fleet-hub",
		Short:  "The hub of godwit bench fleet with multiplexed agents (started by it; not for use)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "json" {
				return fmt.Errorf("--log-format: only json is supported (got %q)", format)
			}
			// As `godwit hub`: the soft memory limit, the heap profile on SIGUSR1 (bench fleet
			// asks for it at the hub's peak) and the CPU profile of --hub-cpuprofile.
			defer hubProcess(cmd.Context(), c.DataDir, slog.New(slog.NewJSONHandler(stdio.Out, nil)))()
			return bench.RunFleetHub(cmd.Context(), c, stdio.Out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.DataDir, "data-dir", "", "the hub's data dir")
	f.StringVar(&c.Listen, "listen", "127.0.0.1:0", "the API's address")
	f.StringVar(&c.NATSListen, "nats-listen", "127.0.0.1:0", "the embedded NATS server's address")
	f.DurationVar(&c.Heartbeat, "heartbeat-interval", 5*time.Second, "the agents' heartbeat interval")
	f.DurationVar(&c.Grace, "liveness-grace", 20*time.Second, "the liveness grace")
	var settle time.Duration
	f.DurationVar(&settle, "settle", 0, "accepted for godwit hub's flags; the settle time follows the liveness grace")
	f.StringVar(&format, "log-format", "json", "the log's format: json only")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}
