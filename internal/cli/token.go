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

func newTokenCmd(stdio IO, opts *rootOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage enrollment tokens"}
	var uses int
	var ttl, desc, output string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an enrollment token (the secret is printed once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var resp wire.CreateTokenResponse
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/tokens", wire.CreateTokenRequest{Uses: uses, TTL: ttl, Description: desc}, &resp); err != nil {
				return err
			}
			if output == "" {
				fmt.Fprintln(stdio.Out, resp.Token)
				fmt.Fprintf(stdio.Err, "token %s: %d use(s), expires %s\n", resp.ID, resp.MaxUses, resp.ExpiresAt.Local().Format(time.RFC3339))
				return nil
			}
			return printOutput(stdio.Out, output, resp, nil)
		},
	}
	create.Flags().IntVar(&uses, "uses", 1, "how many agents may enroll with it")
	create.Flags().StringVar(&ttl, "ttl", "24h", "how long it stays valid")
	create.Flags().StringVar(&desc, "description", "", "free text shown in token list")
	create.Flags().StringVarP(&output, "output", "o", "", "json or yaml (default: print only the secret)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List enrollment tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var l wire.List[wire.EnrollToken]
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/tokens", nil, &l); err != nil {
				return err
			}
			now := time.Now()
			return printOutput(stdio.Out, output, l.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tUSES\tEXPIRES\tDESCRIPTION")
				for _, t := range l.Items {
					exp := "in " + t.ExpiresAt.Sub(now).Round(time.Minute).String()
					if !t.ExpiresAt.After(now) {
						exp = "expired"
					}
					fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\n", t.ID, t.Uses, t.MaxUses, exp, t.Description)
				}
			})
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "", "table, json or yaml")
	del := &cobra.Command{
		Use:   "delete TOKEN_ID",
		Short: "Delete an enrollment token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "token %s deleted\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}
