// Package cli is the godwit command line: the agent daemon and the kubectl-style client
// commands, one file per subcommand, and the commands that run a hub (hub, demo, bench), which
// get the hub through the Hub interface (package hubcmd) so that this package, which speaks only
// the API's wire types, links neither the hub nor its store or controllers. Main maps errors to
// exit codes: 2 for bad usage or configuration, 3 for an agent whose state directory needs an
// operator, 1 for everything else.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/agent"
	"godwit.dev/godwit/internal/buildinfo"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
	// ExitNeedsOperator: the agent's state directory needs an operator (read-only, not
	// writable, or a damaged journal or outbox); restarting does not help, so a supervisor
	// should not (systemd: RestartPreventExitStatus=3). A full disk is not one: the agent
	// stays up, degraded, and resumes by itself.
	ExitNeedsOperator = 3
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

// Hub runs a hub in this process, for the commands that start one. The client commands only
// speak the hub's API: the hub itself, with its store and controllers, is handed in by the
// binary (package hubcmd), so that this package links neither (deps_test.go checks it).
type Hub interface {
	// Run runs a hub until ctx ends (godwit hub); notices gets the one-time admin token notice.
	Run(ctx context.Context, cfg *config.Hub, log *slog.Logger, notices io.Writer) error
	// Start starts a hub (godwit demo) and returns where it listens and a function that stops it.
	Start(ctx context.Context, cfg *config.Hub, log *slog.Logger) (wire.HubEndpoint, func(context.Context) error, error)
	// Commands are the hub side's own commands (godwit bench).
	Commands(stdio IO) []*cobra.Command
}

// Main runs the godwit command line and returns the process exit code. Without a hub (nil) the
// commands that start one (hub, demo, bench) are missing.
func Main(ctx context.Context, args []string, stdio IO, hub Hub) int {
	root := newRoot(stdio, hub)
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
	if errors.Is(err, agent.ErrNeedsOperator) {
		return ExitNeedsOperator
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
	hub, token, hubCA, config, output string
}

func newRoot(stdio IO, hub Hub) *cobra.Command {
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
	pf.StringVar(&opts.token, "token", "", "admin or API token for client commands (GODWIT_TOKEN)")
	pf.StringVar(&opts.hubCA, "hub-ca", "", "CA certificate (PEM) of the hub's TLS for client commands (GODWIT_HUB_CA; default: the local hub's)")
	pf.StringVar(&opts.config, "client-config", "", "client config file with hub: and token: (default ~/.godwit/config.yaml)")
	if hub != nil {
		root.AddCommand(newHubCmd(stdio, hub))
	}
	root.AddCommand(newAgentCmd(stdio, opts), newTokenCmd(stdio, opts), newGetCmd(stdio, opts), newDescribeCmd(stdio, opts))
	if hub != nil {
		root.AddCommand(newDemoCmd(stdio, hub))
	}
	root.AddCommand(newEventsCmd(stdio, opts), newDLQCmd(stdio, opts), newStatusCmd(stdio, opts), newApplyCmd(stdio, opts))
	root.AddCommand(migrationActionCmds(stdio, opts)...)
	root.AddCommand(newDeleteCmd(stdio, opts))
	addSweepCommands(root, stdio, opts)
	addFailoverCommands(root, stdio, opts)
	root.AddCommand(newCheckCmd(stdio, opts), newAuditCmd(stdio, opts))
	root.AddCommand(newVersionCmd(stdio, opts), newSignCmd(stdio))
	if hub != nil {
		addMerged(root, hub.Commands(stdio)...)
	}
	return root
}

// addMerged adds commands to root; a command named like one root has already gives its
// subcommands to that one (the hub side's `failover member` joins `godwit failover`).
func addMerged(root *cobra.Command, cmds ...*cobra.Command) {
	for _, c := range cmds {
		var existing *cobra.Command
		for _, e := range root.Commands() {
			if e.Name() == c.Name() {
				existing = e
			}
		}
		if existing == nil {
			root.AddCommand(c)
			continue
		}
		subs := c.Commands()
		c.RemoveCommand(subs...)
		existing.AddCommand(subs...)
	}
}
