// Package hubcmd is the hub side of the godwit command line: it runs hubs for `godwit hub` and
// `godwit demo`, and holds `godwit bench`, which measures one. The binary hands it to cli.Main
// as a cli.Hub; the client commands in package cli never link the hub, its store or its
// controllers.
package hubcmd

import (
	"context"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/bench"
	"godwit.dev/godwit/internal/cli"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/hub"
	"godwit.dev/godwit/internal/wire"
)

// Hub runs hubs in this process.
type Hub struct{}

var _ cli.Hub = Hub{}

// Run implements cli.Hub.
func (Hub) Run(ctx context.Context, cfg *config.Hub, log *slog.Logger, notices io.Writer) error {
	defer hubProcess(ctx, cfg.DataDir, log)()
	return hub.New(cfg, log, notices).Run(ctx)
}

// hubProcess sets up what a process running a hub has beside the hub: the soft memory limit
// from its cgroup, a heap profile on SIGUSR1 and, when bench.HubCPUProfileEnv names a file, a
// CPU profile between SIGUSR2s. The returned function ends the CPU profile and waits for it.
func hubProcess(ctx context.Context, dataDir string, log *slog.Logger) (done func()) {
	setMemoryLimit(log)
	heapProfileOnSignal(ctx, dataDir, log)
	pctx, cancel := context.WithCancel(ctx)
	wait := bench.ProfileOnSignals(pctx, os.Getenv(bench.HubCPUProfileEnv))
	return func() { cancel(); wait() }
}

// Start implements cli.Hub.
func (Hub) Start(ctx context.Context, cfg *config.Hub, log *slog.Logger) (wire.HubEndpoint, func(context.Context) error, error) {
	h := hub.New(cfg, log, io.Discard)
	if err := h.Start(ctx); err != nil {
		return wire.HubEndpoint{}, nil, err
	}
	return h.Endpoint(), h.Stop, nil
}

// Commands implements cli.Hub.
func (Hub) Commands(stdio cli.IO) []*cobra.Command {
	return []*cobra.Command{newBenchCmd(stdio), newFailoverCmd(stdio)}
}
