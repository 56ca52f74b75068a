package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/examples"
	"godwit.dev/godwit/internal/agent"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/migration/state"
	"godwit.dev/godwit/internal/wire"
)

const demoAgents = 3

func newDemoCmd(stdio IO, hub Hub) *cobra.Command {
	var keep bool
	var dir string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a real migration on a hub and 3 local agents, end to end",
		Long: `demo starts, in this one process, a hub on the embedded default (SQLite + embedded NATS
JetStream) and three agents, each in its own state dir under a temp dir; enrolls them with a real
enrollment token; and applies examples/demo-migration.yaml: back up a config file, then write
version 2. One agent has a (simulated) full disk: its step fails and its applied steps are rolled
back, while the other two succeed. The rollout is a canary and then a batch of two.

It prints the progress, the final per-agent table and the failure events, and exits 0 only if the
run played out that way. With --keep it stays up afterwards so you can look around with the CLI.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), stdio, hub, dir, keep)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the hub and agents running until interrupted")
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the demo's state (default: a new temp dir, removed on exit)")
	return cmd
}

func runDemo(ctx context.Context, stdio IO, hub Hub, dir string, keep bool) error {
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
	out := stdio.Out

	cfg := config.DefaultHub()
	cfg.DataDir = filepath.Join(dir, "hub")
	cfg.Listen, cfg.NATS.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Liveness.HeartbeatInterval, cfg.Liveness.Grace = config.Duration(500*time.Millisecond), config.Duration(3*time.Second)
	if err := cfg.Validate(); err != nil {
		return err
	}
	ep, stopHub, err := hub.Start(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("start hub: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = stopHub(sctx)
	}()
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, wire.AdminTokenFile))
	if err != nil {
		return err
	}
	c := &client{base: ep.API, token: strings.TrimSpace(string(tok)), http: defaultHTTP()}
	fmt.Fprintf(out, "hub up: API %s, NATS %s (state and log in %s)\n", ep.API, strings.Join(ep.NATS, ","), dir)

	var enrolled wire.CreateTokenResponse
	if err := c.do(ctx, "POST", "/api/v1/tokens", wire.CreateTokenRequest{Uses: demoAgents, TTL: "10m", Description: "demo"}, &enrolled); err != nil {
		return fmt.Errorf("create enrollment token: %w", err)
	}
	actx, stopAgents := context.WithCancel(ctx)
	errs := make(chan error, demoAgents)
	for i := 1; i <= demoAgents; i++ {
		acfg := config.DefaultAgent()
		acfg.Hub, acfg.EnrollToken = ep.API, enrolled.Token
		acfg.StateDir = filepath.Join(dir, fmt.Sprintf("agent-%d", i))
		acfg.Name = fmt.Sprintf("demo-agent-%d", i)
		acfg.Labels = []string{"demo=true", fmt.Sprintf("slot=%d", i)}
		go func() { errs <- agent.New(acfg, log.With("agent", acfg.Name)).Run(actx) }()
	}
	defer func() {
		stopAgents()
		for range demoAgents {
			<-errs
		}
	}()
	agents, err := demoWaitOnline(ctx, c, errs)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%d agents enrolled and online\n", len(agents))

	// Each agent's service config starts at version 1; agent 3's disk is "full".
	for i := 1; i <= demoAgents; i++ {
		work := filepath.Join(dir, fmt.Sprintf("agent-%d", i), "work")
		if err := os.WriteFile(filepath.Join(work, "config"), []byte("version=1\n"), 0o600); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "agent-3", "work", "simulate-disk-full"), nil, 0o600); err != nil {
		return err
	}

	var res wire.MigrationApplyResult
	if err := c.doRaw(ctx, "POST", "/api/v1/migrations", "application/yaml", examples.DemoMigration, &res); err != nil {
		return fmt.Errorf("apply the demo migration: %w", err)
	}
	fmt.Fprintf(out, "\napplied examples/demo-migration.yaml: migration %s, %d agents in %d batches\n", res.Name, res.Matched, len(res.Batches))
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := waitMigration(wctx, c, res.Name, out); err != nil && !strings.Contains(err.Error(), "ended") {
		return err
	}
	var d wire.MigrationDescription
	if err := c.do(ctx, "GET", "/api/v1/migrations/"+url.PathEscape(res.Name), nil, &d); err != nil {
		return err
	}
	problems := demoReport(out, dir, d, agents)
	// Events travel agent outbox → JetStream → ingest → SQL; give them a moment to land.
	var failures wire.List[wire.EventRecord]
	for deadline := time.Now().Add(30 * time.Second); ; {
		if err := c.do(ctx, "GET", "/api/v1/events?severity=error&migration="+res.Name, nil, &failures); err != nil {
			return err
		}
		if len(failures.Items) > 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Fprintf(out, "\nerror events recorded by the hub (godwit events --severity error):\n")
	if err := printEvents(out, "table", failures.Items, true); err != nil {
		return err
	}
	if len(failures.Items) == 0 {
		problems = append(problems, "no error event reached the hub")
	}
	fmt.Fprintf(out, "\nAPI: %s/api/v1  (OpenAPI: %s/api/v1/openapi.yaml, metrics: %s/metrics)\n", ep.API, ep.API, ep.API)
	if len(problems) > 0 {
		return fmt.Errorf("the demo did not play out as expected:\n  - %s", strings.Join(problems, "\n  - "))
	}
	fmt.Fprintln(out, "\ndemo played out as expected: 2 agents migrated, 1 failed and was rolled back to version 1.")
	if !keep {
		return nil
	}
	fmt.Fprintf(out, "still running; try:\n  GODWIT_HUB=%s GODWIT_TOKEN=$(cat %s) godwit describe migration %s\nCtrl-C to stop.\n",
		ep.API, filepath.Join(cfg.DataDir, wire.AdminTokenFile), res.Name)
	<-ctx.Done()
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	return ctx.Err()
}

func demoWaitOnline(ctx context.Context, c *client, errs <-chan error) (map[string]wire.Agent, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		agents, err := listAgents(ctx, c)
		if err != nil {
			return nil, err
		}
		online := map[string]wire.Agent{}
		for _, a := range agents {
			if a.Status == wire.StatusOnline {
				online[a.ID] = a
			}
		}
		if len(online) == demoAgents {
			return online, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("only %d of %d agents online after 60s", len(online), demoAgents)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-errs:
			return nil, fmt.Errorf("an agent stopped: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// demoReport prints the per-agent table and returns what differs from the expected outcome.
func demoReport(out io.Writer, dir string, d wire.MigrationDescription, agents map[string]wire.Agent) []string {
	var problems []string
	if d.Migration.State != string(state.MigrationPartiallySucceeded) {
		problems = append(problems, fmt.Sprintf("migration ended %s, want partially_succeeded", d.Migration.State))
	}
	fmt.Fprintf(out, "\nmigration %s: %s (%s)\n\n", d.Migration.Name, d.Migration.State, d.Migration.Reason)
	tw := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tBATCH\tSTATE\tCONFIG NOW\tFAILURE")
	for _, a := range d.Assignments {
		name := agents[a.AgentID].Name
		slot := strings.TrimPrefix(name, "demo-agent-")
		cfg, _ := os.ReadFile(filepath.Join(dir, "agent-"+slot, "work", "config"))
		got := strings.TrimSpace(string(cfg))
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", name, a.Batch+1, a.State, got, dash(firstLine(a.Failure)))
		want, wantCfg := string(state.AssignmentSucceeded), "version=2"
		if slot == "3" {
			want, wantCfg = string(state.AssignmentRolledBack), "version=1"
		}
		if a.State != want || got != wantCfg {
			problems = append(problems, fmt.Sprintf("%s: %s with %q, want %s with %q", name, a.State, got, want, wantCfg))
		}
	}
	_ = tw.Flush()
	return problems
}
