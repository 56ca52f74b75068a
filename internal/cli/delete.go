package cli

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"
)

func newDeleteCmd(stdio IO, opts *rootOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "delete", Short: "Delete a resource (migration)"}
	cmd.AddCommand(&cobra.Command{
		Use:     "migration NAME",
		Aliases: []string{"migrations"},
		Short:   "Delete a migration that has ended: its events stay, its name cannot be used again",
		Long: `Delete a migration that has ended (succeeded, partially_succeeded, failed, rolled_back or
cancelled), with its assignments. Its events stay, as history, and its name stays taken: agents
keep the results of its attempts under that name. The hub refuses while the migration runs (abort
it first), while an agent has not confirmed that it stopped working on it (wait, or revoke an
agent that is gone for good), and while a sweep remediates with it. The deletion is recorded as
an operator.action event.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/api/v1/migrations/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "migration %s deleted\n", args[0])
			return nil
		},
	})
	return cmd
}
