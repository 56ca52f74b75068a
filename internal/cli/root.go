// Package cli is the godwit command line: the hub and agent daemons and the kubectl-style client
// commands, one file per subcommand. Main maps errors to exit codes: 2 for bad usage or
// configuration, 1 for everything else.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/buildinfo"
	"godwit.dev/godwit/internal/fault"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// usageError marks errors that are the user's invocation, not a failure of the operation.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// IO carries the process streams, so tests can run commands in-process.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
}

// Main runs the godwit command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdio IO) int {
	root := newRoot(stdio)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stdio.Err, "error:", err)
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return ExitUsage
	}
	var fe *fault.FieldError
	if errors.As(err, &fe) {
		return ExitUsage
	}
	return ExitError
}

func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown flag", "unknown shorthand flag", "unknown command", "invalid argument", "flag needs an argument", "accepts ", "requires at least", "required flag"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

type rootOptions struct {
	hub, token, config, output string
}

func newRoot(stdio IO) *cobra.Command {
	opts := &rootOptions{}
	root := &cobra.Command{
		Use:   "godwit",
		Short: "Run migrations across a fleet of agents, correctly, through outages",
		Long: `Godwit is a self-hosted control plane: a hub (API, controllers, SQL store, NATS JetStream)
and an agent on every node, in one binary.

  godwit hub                        start a hub (embedded NATS + SQLite under --data-dir)
  godwit token create --uses 1      make an enrollment token
  godwit agent --hub URL --enroll-token T --label env=prod
  godwit get agents                 list the fleet`,
		Version:       buildinfo.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&opts.hub, "hub-url", "", "hub API URL for client commands (GODWIT_HUB)")
	pf.StringVar(&opts.token, "token", "", "admin token for client commands (GODWIT_TOKEN)")
	pf.StringVar(&opts.config, "client-config", "", "client config file with hub: and token: (default ~/.godwit/config.yaml)")
	root.AddCommand(newHubCmd(stdio), newAgentCmd(stdio, opts), newTokenCmd(stdio, opts), newGetCmd(stdio, opts), newDescribeCmd(stdio, opts), newDemoCmd(stdio),
		newEventsCmd(stdio, opts), newDLQCmd(stdio, opts), newStatusCmd(stdio, opts), newApplyCmd(stdio, opts))
	root.AddCommand(migrationActionCmds(stdio, opts)...)
	addSweepCommands(root, stdio, opts)
	root.AddCommand(newCheckCmd(stdio, opts))
	root.AddCommand(newBenchCmd(stdio))
	return root
}
