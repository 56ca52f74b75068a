package cli

import (
	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/logging"
)

func newHubCmd(stdio IO, hub Hub) *cobra.Command {
	var cfgFile string
	cfg := config.DefaultHub()
	cmd := &cobra.Command{
		Use:   "hub",
		Short: "Run a hub: API, controllers, SQL store and (by default) an embedded NATS JetStream server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.Load(cfg, cfgFile, cmd.Flags()); err != nil {
				return usageError{err}
			}
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			log := logging.New(stdio.Err, cfg.Log.Level, cfg.Log.Format)
			return hub.Run(cmd.Context(), cfg, log, stdio.Err)
		},
	}
	cmd.Flags().StringVar(&cfgFile, "config", "", "YAML config file (settings: defaults < file < GODWIT_* env < flags)")
	config.RegisterFlags(cmd.Flags(), cfg)
	return cmd
}
