package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/human"
	"godwit.dev/godwit/internal/wire"
)

func newGetCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{Use: "get", Short: "List resources (agents, migrations)"}
	cmd.PersistentFlags().StringVarP(&output, "output", "o", "", "table, wide (agents: host and policy digest too), json or yaml")
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
			agents, err := listAgents(cmd.Context(), c)
			if err != nil {
				return err
			}
			now := time.Now()
			return printOutput(stdio.Out, output, agents, func(tw *tabwriter.Writer) {
				wide := output == "wide"
				head := "ID\tNAME\tSTATUS\tLAST SEEN\tVERSION\tLABELS\tDEGRADED"
				if wide {
					head += "\tHOST\tPOLICY"
				}
				fmt.Fprintln(tw, head)
				for _, a := range agents {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s", a.ID, a.Name, displayStatus(a), human.Ago(a.LastSeen, now), a.Version,
						labelString(a.Labels), degradedString(a))
					if wide {
						fmt.Fprintf(tw, "\t%s\t%s", orDash(a.System.Hostname), policyString(a))
					}
					fmt.Fprintln(tw)
				}
			})
		},
	})
	return cmd
}

// listAgents reads every agent, following GET /api/v1/agents page by page.
func listAgents(ctx context.Context, c *client) ([]wire.Agent, error) {
	all := []wire.Agent{}
	cursor := ""
	for {
		var l wire.List[wire.Agent]
		path := "/api/v1/agents?limit=1000"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		if err := c.do(ctx, http.MethodGet, path, nil, &l); err != nil {
			return nil, err
		}
		all = append(all, l.Items...)
		if l.NextCursor == "" || l.NextCursor == cursor {
			return all, nil
		}
		cursor = l.NextCursor
	}
}

// degradedString is the start of why the agent takes no new work ("disk full: cannot write…"),
// or "-"; `describe agent` and -o json have all of it.
func degradedString(a wire.Agent) string {
	if a.Degraded == "" {
		return "-"
	}
	return firstLine(a.Degraded)
}

// policyString is the digest of the agent policy the agent enforces, or "none" when it runs
// whatever the hub asks (it was started without --policy).
func policyString(a wire.Agent) string {
	if a.System.PolicyDigest == "" {
		return "none"
	}
	return a.System.PolicyDigest
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
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
