package cli

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/agent"
	"godwit.dev/godwit/internal/agent/policy"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/wire"
)

func newAgentCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var cfgFile string
	cfg := config.DefaultAgent()
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run an agent on this node (enrolls once with --enroll-token, then reuses its identity)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.Load(cfg, cfgFile, cmd.Flags()); err != nil {
				return usageError{err}
			}
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			// A policy the agent cannot keep is a configuration error (exit 2, which systemd does
			// not restart): the agent loads it again when it starts.
			if cfg.Policy != "" {
				if _, err := policy.Load(cfg.Policy); err != nil {
					return usageError{err}
				}
			}
			log := logging.New(stdio.Err, cfg.Log.Level, cfg.Log.Format)
			return agent.New(cfg, log).Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cfgFile, "config", "", "YAML config file (settings: defaults < file < GODWIT_* env < flags)")
	config.RegisterFlags(cmd.Flags(), cfg)
	cmd.AddCommand(&cobra.Command{
		Use:   "revoke AGENT_ID",
		Short: "Revoke an agent's credentials and cut its connections",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var a wire.Agent
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/agents/"+url.PathEscape(args[0])+"/revoke", nil, &a); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "agent %s (%s) revoked\n", a.ID, a.Name)
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "rehydrate AGENT_ID",
		Short: "Make the ingest reload an agent's derived state from SQL on its next event",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/agents/"+url.PathEscape(args[0])+"/rehydrate", nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "agent %s: derived state will be reloaded from SQL on its next event\n", args[0])
			return nil
		},
	})
	return cmd
}
