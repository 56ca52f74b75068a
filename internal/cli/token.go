package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// Token kinds as the command line names them.
const (
	kindEnrollment = "enrollment"
	kindAPI        = "api"
)

// Default lifetimes: an enrollment token is for a rollout today, an API token for a person or
// a pipeline for a month.
const (
	defaultEnrollTTL = "24h"
	defaultAPITTL    = "720h"
)

// tokenRow is one line of godwit token list: either kind, with the fields of its record.
type tokenRow struct {
	Kind        string     `json:"kind"`
	ID          string     `json:"id"`
	Role        wire.Role  `json:"role,omitempty"`
	MaxUses     int        `json:"max_uses,omitempty"`
	Uses        int        `json:"uses,omitempty"`
	Description string     `json:"description,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	CreatedBy   string     `json:"created_by,omitempty"`
}

func newTokenCmd(stdio IO, opts *rootOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage tokens: enrollment tokens for agents, API tokens with a role for people and pipelines",
		Long: `Two kinds of token:

  enrollment  gwe_…  lets agents enroll, a number of times (--uses), until it expires
  api         gwt_…  calls the API and logs in to the web UI with a role (--role viewer,
                     operator or admin) until it expires or is revoked

godwit token create makes an API token when given --role, an enrollment token otherwise.`,
	}
	var uses int
	var role, ttl, desc, output, kind string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token (the secret is printed once): --role for an API token, else an enrollment token",
		Example: `  godwit token create --uses 20 --ttl 2h --description "rack 4"     # enrollment
  godwit token create --role viewer --ttl 720h --description "grafana"  # API token
  godwit token create --role operator --description "deploy pipeline"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role != "" && cmd.Flags().Changed("uses") {
				return usageError{errors.New("--role makes an API token and --uses an enrollment token: give one of them")}
			}
			if role != "" && !wire.Role(role).Valid() {
				return usageError{fmt.Errorf("--role: %q is not viewer, operator or admin", role)}
			}
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			if role != "" {
				if ttl == "" {
					ttl = defaultAPITTL
				}
				var resp wire.CreateAPITokenResponse
				req := wire.CreateAPITokenRequest{Role: wire.Role(role), TTL: ttl, Description: desc}
				if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/api-tokens", req, &resp); err != nil {
					return err
				}
				if output == "" {
					fmt.Fprintln(stdio.Out, resp.Token)
					fmt.Fprintf(stdio.Err, "api token %s: role %s, expires %s\n", resp.ID, resp.Role, resp.ExpiresAt.Local().Format(time.RFC3339))
					return nil
				}
				return printOutput(stdio.Out, output, resp, nil)
			}
			if ttl == "" {
				ttl = defaultEnrollTTL
			}
			var resp wire.CreateTokenResponse
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/tokens", wire.CreateTokenRequest{Uses: uses, TTL: ttl, Description: desc}, &resp); err != nil {
				return err
			}
			if output == "" {
				fmt.Fprintln(stdio.Out, resp.Token)
				fmt.Fprintf(stdio.Err, "enrollment token %s: %d use(s), expires %s\n", resp.ID, resp.MaxUses, resp.ExpiresAt.Local().Format(time.RFC3339))
				return nil
			}
			return printOutput(stdio.Out, output, resp, nil)
		},
	}
	create.Flags().StringVar(&role, "role", "", "make an API token with this role: viewer, operator or admin")
	create.Flags().IntVar(&uses, "uses", 1, "make an enrollment token: how many agents may enroll with it")
	create.Flags().StringVar(&ttl, "ttl", "", "how long it stays valid (default 24h for an enrollment token, 720h for an API token)")
	create.Flags().StringVar(&desc, "description", "", "who or what it is for: shown in token list, and an API token's name in events and the audit log")
	create.Flags().StringVarP(&output, "output", "o", "", "json or yaml (default: print only the secret)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens of both kinds (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			rows, err := listTokens(cmd.Context(), c, kind)
			if err != nil {
				return err
			}
			now := time.Now()
			return printOutput(stdio.Out, output, rows, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "KIND\tID\tROLE/USES\tEXPIRES\tSTATUS\tDESCRIPTION")
				for _, t := range rows {
					scope := string(t.Role)
					if t.Kind == kindEnrollment {
						scope = fmt.Sprintf("%d/%d uses", t.Uses, t.MaxUses)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Kind, t.ID, scope, t.ExpiresAt.Local().Format(time.RFC3339), tokenStatus(t, now), t.Description)
				}
			})
		},
	}
	list.Flags().StringVar(&kind, "kind", "all", "all, enrollment or api")
	list.Flags().StringVarP(&output, "output", "o", "", "table, json or yaml")

	revoke := &cobra.Command{
		Use:   "revoke TOKEN_ID",
		Short: "Revoke a token: an API token stops working at once (and its web UI sessions end); an enrollment token is deleted",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var t wire.APIToken
			err = c.do(cmd.Context(), http.MethodPost, "/api/v1/api-tokens/"+url.PathEscape(args[0])+"/revoke", nil, &t)
			if err == nil {
				fmt.Fprintf(stdio.Out, "api token %s (%s) revoked at %s\n", t.ID, t.Role, t.RevokedAt.Local().Format(time.RFC3339))
				return nil
			}
			if !errors.Is(err, fault.ErrNotFound) {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(args[0]), nil, nil); err != nil {
				if errors.Is(err, fault.ErrNotFound) {
					return fmt.Errorf("no api or enrollment token %s: %w", args[0], fault.ErrNotFound)
				}
				return err
			}
			fmt.Fprintf(stdio.Out, "enrollment token %s deleted (agents it enrolled keep their credentials)\n", args[0])
			return nil
		},
	}
	del := &cobra.Command{
		Use:   "delete TOKEN_ID",
		Short: "Delete an enrollment token (agents it enrolled keep their credentials)",
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
	cmd.AddCommand(create, list, revoke, del)
	return cmd
}

// listTokens reads the tokens of the kind asked for ("all" for both), enrollment tokens first.
func listTokens(ctx context.Context, c *client, kind string) ([]tokenRow, error) {
	if kind != "all" && kind != kindEnrollment && kind != kindAPI {
		return nil, usageError{fmt.Errorf("--kind: %q is not all, enrollment or api", kind)}
	}
	rows := []tokenRow{}
	if kind != kindAPI {
		var l wire.List[wire.EnrollToken]
		if err := c.do(ctx, http.MethodGet, "/api/v1/tokens", nil, &l); err != nil {
			return nil, err
		}
		for _, t := range l.Items {
			rows = append(rows, tokenRow{Kind: kindEnrollment, ID: t.ID, MaxUses: t.MaxUses, Uses: t.Uses, Description: t.Description,
				CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt})
		}
	}
	if kind != kindEnrollment {
		var l wire.List[wire.APIToken]
		if err := c.do(ctx, http.MethodGet, "/api/v1/api-tokens", nil, &l); err != nil {
			return nil, err
		}
		for _, t := range l.Items {
			rows = append(rows, tokenRow{Kind: kindAPI, ID: t.ID, Role: t.Role, Description: t.Description, CreatedAt: t.CreatedAt,
				ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt, CreatedBy: t.CreatedBy})
		}
	}
	return rows, nil
}

func tokenStatus(t tokenRow, now time.Time) string {
	switch {
	case t.RevokedAt != nil:
		return "revoked"
	case !t.ExpiresAt.After(now):
		return "expired"
	case t.Kind == kindEnrollment && t.Uses >= t.MaxUses:
		return "used up"
	}
	return "valid"
}
