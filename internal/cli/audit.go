package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/wire"
)

func newAuditCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var since, actor, action, cursor, output string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log: every call that changed something, who made it, its outcome and from where",
		Long: `Every call of a method other than GET — through the API, this command line or the web UI —
is one entry, newest first: who (the token's id and description, or the web UI session), the
role, the method and path, what it acted on, the HTTP status it was answered with, and the
client's address. Reading the audit log needs the admin role.`,
		Example: `  godwit audit --since 24h
  godwit audit --actor 0196…                         # one API token's calls (admin: the admin token)
  godwit audit --action "POST /api/v1/migrations/web-tls"
  godwit audit --action DELETE -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			for k, v := range map[string]string{"since": since, "actor": actor, "action": action, "cursor": cursor} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var page wire.List[wire.AuditEntry]
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/audit?"+q.Encode(), nil, &page); err != nil {
				return err
			}
			err = printOutput(stdio.Out, output, page.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "TIME\tWHO\tROLE\tCALL\tTARGET\tSTATUS\tFROM")
				for _, e := range page.Items {
					who := e.Actor
					if who == "" {
						who = "-"
					}
					if e.TokenID != "" && e.TokenID != e.Actor {
						who += " [" + e.TokenID + "]"
					}
					role := string(e.Role)
					if role == "" {
						role = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\t%d\t%s (%s)\n", e.Time.Local().Format(time.RFC3339), who, role,
						e.Method, e.Path, e.Target, e.Status, e.Remote, e.Via)
				}
			})
			if err != nil {
				return err
			}
			if page.NextCursor != "" && output == "" {
				fmt.Fprintf(stdio.Err, "(more: --cursor %s)\n", page.NextCursor)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&since, "since", "", "RFC 3339 time or a duration back from now (24h)")
	fl.StringVar(&actor, "actor", "", "a token id (admin for the hub's admin token) or an actor as shown")
	fl.StringVar(&action, "action", "", `what was called: "METHOD /path-prefix", "/path-prefix" or a method`)
	fl.IntVar(&limit, "limit", 50, "how many (1-1000)")
	fl.StringVar(&cursor, "cursor", "", "the cursor printed after the previous page")
	fl.StringVarP(&output, "output", "o", "", "table, json or yaml")
	return cmd
}
