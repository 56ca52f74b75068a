package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/agent"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/hub"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/wire"
)

func newDemoCmd(stdio IO) *cobra.Command {
	var agents int
	var keep bool
	var dir string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start a hub and local agents in a temp dir, show the fleet come online",
		Long: `demo starts, in this one process, a hub on the embedded default (SQLite + embedded NATS
JetStream) and --agents local agents, each in its own state dir under a temp dir, enrolls them with
a real enrollment token over HTTP, and waits until the hub sees every one online.

With --keep it stays up (Ctrl-C to stop) so you can point the CLI at it; otherwise it exits 0 once
the fleet is online, and non-zero if it never gets there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if agents < 1 || agents > 50 {
				return usageError{fmt.Errorf("--agents must be between 1 and 50 (got %d)", agents)}
			}
			return runDemo(cmd.Context(), stdio, dir, agents, keep)
		},
	}
	cmd.Flags().IntVar(&agents, "agents", 3, "how many local agents to start")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the hub and agents running until interrupted")
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the demo's state (default: a new temp dir, removed on exit)")
	return cmd
}

func runDemo(ctx context.Context, stdio IO, dir string, n int, keep bool) error {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "godwit-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	logFile, err := os.Create(filepath.Join(dir, "demo.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := logging.New(logFile, "info", "text")

	cfg := config.DefaultHub()
	cfg.DataDir = filepath.Join(dir, "hub")
	cfg.Listen, cfg.NATS.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Liveness.HeartbeatInterval, cfg.Liveness.Grace = config.Duration(time.Second), config.Duration(5*time.Second)
	if err := cfg.Validate(); err != nil {
		return err
	}
	h := hub.New(cfg, log, io.Discard)
	if err := h.Start(ctx); err != nil {
		return fmt.Errorf("start hub: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = h.Stop(sctx)
	}()
	ep := h.Endpoint()
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, hub.AdminTokenFile))
	if err != nil {
		return err
	}
	c := &client{base: ep.API, token: strings.TrimSpace(string(tok)), http: defaultHTTP()}
	fmt.Fprintf(stdio.Out, "hub up: API %s, NATS %s, state in %s\n", ep.API, strings.Join(ep.NATS, ","), dir)

	var enrolled wire.CreateTokenResponse
	if err := c.do(ctx, "POST", "/api/v1/tokens", wire.CreateTokenRequest{Uses: n, TTL: "10m", Description: "demo"}, &enrolled); err != nil {
		return fmt.Errorf("create enrollment token: %w", err)
	}
	actx, stopAgents := context.WithCancel(ctx)
	errs := make(chan error, n)
	for i := 1; i <= n; i++ {
		acfg := config.DefaultAgent()
		acfg.Hub, acfg.EnrollToken = ep.API, enrolled.Token
		acfg.StateDir = filepath.Join(dir, fmt.Sprintf("agent-%d", i))
		acfg.Name = fmt.Sprintf("demo-agent-%d", i)
		acfg.Labels = []string{"demo=true", fmt.Sprintf("slot=%d", i)}
		go func() { errs <- agent.New(acfg, log.With("agent", acfg.Name)).Run(actx) }()
	}
	defer func() {
		stopAgents()
		for i := 0; i < n; i++ {
			<-errs
		}
	}()
	fmt.Fprintf(stdio.Out, "started %d agents; waiting for them to come online...\n", n)

	deadline := time.Now().Add(60 * time.Second)
	var list wire.List[wire.Agent]
	for {
		if err := c.do(ctx, "GET", "/api/v1/agents", nil, &list); err != nil {
			return err
		}
		online := 0
		for _, a := range list.Items {
			if a.Status == wire.StatusOnline {
				online++
			}
		}
		if online == n && len(list.Items) == n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d agents online after 60s (log: %s)", online, n, logFile.Name())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return fmt.Errorf("an agent stopped: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	now := time.Now()
	if err := printOutput(stdio.Out, "table", list.Items, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NAME\tSTATUS\tLAST SEEN\tLABELS")
		for _, a := range list.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Name, a.Status, ago(a.LastSeen, now), labelString(a.Labels))
		}
	}); err != nil {
		return err
	}
	fmt.Fprintf(stdio.Out, "\nall %d agents online.\n", n)
	if !keep {
		return nil
	}
	fmt.Fprintf(stdio.Out, "try: GODWIT_HUB=%s GODWIT_TOKEN=$(cat %s) godwit get agents\nCtrl-C to stop.\n",
		ep.API, filepath.Join(cfg.DataDir, hub.AdminTokenFile))
	<-ctx.Done()
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	return ctx.Err()
}
