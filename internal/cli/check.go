package cli

import (
	"fmt"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/wire"
)

func newCheckCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Compare the hub's records with what agents report, and resolve each difference by its rule",
		Long: `check runs the consistency check the hub also runs every minute: a request an agent never
received is sent again; an agent working on an attempt or migration the hub does not want is
reported. Each finding is also recorded as a hub.check.finding event.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var l wire.List[wire.CheckFinding]
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/check", nil, &l); err != nil {
				return err
			}
			if output == "" && len(l.Items) == 0 {
				fmt.Fprintln(stdio.Out, "no differences: every agent reports what the hub expects")
				return nil
			}
			return printOutput(stdio.Out, output, l.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "KIND\tMIGRATION\tAGENT\tATTEMPT\tDETAIL\tFIX")
				for _, f := range l.Items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", f.Kind, f.Migration, short(f.AgentID), f.Attempt, f.Detail, f.Fix)
				}
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "table, json or yaml")
	return cmd
}
