package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/wire"
)

func newGetCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{Use: "get", Short: "List resources (agents, migrations)"}
	cmd.PersistentFlags().StringVarP(&output, "output", "o", "", "table, json or yaml")
	cmd.AddCommand(newMigrationGetCmd(stdio, opts, &output))
	cmd.AddCommand(&cobra.Command{
		Use:     "agents",
		Aliases: []string{"agent"},
		Short:   "List agents with their status",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var l wire.List[wire.Agent]
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/agents", nil, &l); err != nil {
				return err
			}
			now := time.Now()
			return printOutput(stdio.Out, output, l.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tLAST SEEN\tVERSION\tLABELS")
				for _, a := range l.Items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Name, displayStatus(a), ago(a.LastSeen, now), a.Version, labelString(a.Labels))
				}
			})
		},
	})
	return cmd
}

func displayStatus(a wire.Agent) string {
	if a.RevokedAt != nil {
		return "revoked"
	}
	return a.Status
}

func newDescribeCmd(stdio IO, opts *rootOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "describe", Short: "Show one resource in detail"}
	cmd.AddCommand(newMigrationDescribeCmd(stdio, opts))
	cmd.AddCommand(&cobra.Command{
		Use:   "agent AGENT_ID",
		Short: "Show an agent",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var a wire.Agent
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/agents/"+url.PathEscape(args[0]), nil, &a); err != nil {
				return err
			}
			return printOutput(stdio.Out, "yaml", a, nil)
		},
	})
	return cmd
}
