package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/buildinfo"
	"godwit.dev/godwit/internal/wire"
)

// versionOutput is what `godwit version -o json|yaml` prints.
type versionOutput struct {
	Client wire.BuildInfo `json:"client"`
	// HubURL is the hub asked; empty with --client or when no hub is configured.
	HubURL string          `json:"hub_url,omitempty"`
	Hub    *wire.BuildInfo `json:"hub,omitempty"`
	// HubError says why Hub is missing.
	HubError string `json:"hub_error,omitempty"`
}

// versionTimeout bounds the question to the hub: a version check must not hang on a hub that
// does not answer.
const versionTimeout = 10 * time.Second

func newVersionCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var output string
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this client and of the hub it talks to",
		Long: `version prints the build of this binary (version, commit, commit and build dates, Go version,
platform) and, unless --client is given, the same for the hub, from GET /api/v1/version.

Like kubectl version: when the hub cannot be asked (unreachable, or it refuses the token), the
client's part is still printed and the command exits 1 with the reason. When no hub is configured
at all (no --hub-url, GODWIT_HUB, client config or local hub data dir), only the client's part is
printed and it exits 0; --client never contacts a hub and exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch output {
			case "", "table", "json", "yaml":
			default:
				return usageError{fmt.Errorf("-o/--output: %q is not one of table, json, yaml", output)}
			}
			out := versionOutput{Client: buildinfo.Get()}
			var hubErr error
			if !clientOnly {
				out.HubURL, out.Hub, hubErr = hubVersion(cmd.Context(), opts)
				if errors.Is(hubErr, errNoHub) {
					// Nothing configured is not a failure: this is a client-only machine.
					fmt.Fprintln(stdio.Err, "note: no hub configured (--hub-url, GODWIT_HUB, ~/.godwit/config.yaml): client version only")
					hubErr = nil
				}
				if hubErr != nil {
					out.HubError = hubErr.Error()
				}
			}
			if err := printOutput(stdio.Out, output, out, func(tw *tabwriter.Writer) { versionTable(tw, out) }); err != nil {
				return err
			}
			if hubErr != nil {
				return fmt.Errorf("hub version: %w", hubErr)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print the client's version only; do not contact a hub")
	cmd.Flags().StringVarP(&output, "output", "o", "", "table, json or yaml")
	return cmd
}

// hubVersion asks the configured hub for its build.
func hubVersion(ctx context.Context, opts *rootOptions) (string, *wire.BuildInfo, error) {
	c, err := newClient(opts)
	if err != nil {
		// Not a usage error here: `godwit version` itself was invoked correctly.
		var ue usageError
		if errors.As(err, &ue) {
			err = ue.err
		}
		return "", nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	var bi wire.BuildInfo
	if err := c.do(ctx, http.MethodGet, "/api/v1/version", nil, &bi); err != nil {
		return c.base, nil, err
	}
	return c.base, &bi, nil
}

func versionTable(w io.Writer, out versionOutput) {
	fmt.Fprintln(w, "Client:")
	buildTable(w, out.Client)
	// Without an answer the hub's part is left out; the error says why (as kubectl does).
	if out.Hub != nil {
		fmt.Fprintf(w, "Hub (%s):\n", out.HubURL)
		buildTable(w, *out.Hub)
	}
}

func buildTable(w io.Writer, b wire.BuildInfo) {
	commit := orUnknown(b.Commit)
	if b.Modified {
		commit += " (modified)"
	}
	for _, row := range [][2]string{
		{"Version", b.Version}, {"Commit", commit}, {"Commit date", orUnknown(b.CommitDate)},
		{"Built", orUnknown(b.BuildDate)}, {"Go version", b.GoVersion}, {"Platform", b.Platform},
	} {
		fmt.Fprintf(w, "  %s:\t%s\n", row[0], row[1])
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
