package cli

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/human"
	"godwit.dev/godwit/internal/manifest"
	"godwit.dev/godwit/internal/migration/state"
	"godwit.dev/godwit/internal/wire"
	"golang.org/x/term"
)

func newApplyCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var file, output string
	var dry, wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Apply a migration, sweep or failover group spec (idempotent); --dry-run shows which agent falls in which batch",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError{fmt.Errorf("-f/--filename is required (use - for standard input)")}
			}
			var body []byte
			var err error
			if file == "-" {
				body, err = io.ReadAll(stdio.In)
			} else {
				body, err = os.ReadFile(file)
			}
			if err != nil {
				return usageError{err}
			}
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			if manifest.KindOf(body) == kindFailoverGroup {
				if wait {
					return usageError{fmt.Errorf("--wait follows a migration; a failover group has no rollout to follow")}
				}
				return applyFailoverGroup(cmd.Context(), c, body, dry, output, stdio)
			}
			if manifest.KindOf(body) == kindSweep {
				if wait {
					return usageError{fmt.Errorf("--wait follows a migration; a sweep runs on its schedule (or: godwit sweep run NAME --wait)")}
				}
				return applySweep(cmd.Context(), c, body, dry, output, stdio)
			}
			var res wire.MigrationApplyResult
			if err := c.doRaw(cmd.Context(), http.MethodPost, "/api/v1/migrations?dry_run="+fmt.Sprint(dry), "application/yaml", body, &res); err != nil {
				return err
			}
			if output != "" {
				return printOutput(stdio.Out, output, res, nil)
			}
			printApply(stdio.Out, res)
			for _, w := range res.Warnings {
				fmt.Fprintln(stdio.Err, "warning:", w)
			}
			if !wait || dry {
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return waitMigration(ctx, c, res.Name, stdio.Out)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "spec file (YAML), or - for standard input")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "only print the plan")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the rollout with a progress bar until it ends")
	cmd.Flags().DurationVar(&timeout, "timeout", 24*time.Hour, "how long --wait waits")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml instead of the summary")
	return cmd
}

func printApply(w io.Writer, res wire.MigrationApplyResult) {
	switch res.Outcome {
	case "planned":
		fmt.Fprintf(w, "migration %s (dry run): %d agents in %d batches, failure budget %d\n", res.Name, res.Matched, len(res.Batches), res.Budget)
		for i, b := range res.Names {
			label := fmt.Sprintf("batch %d", i+1)
			fmt.Fprintf(w, "  %-9s %s\n", label+":", strings.Join(b, ", "))
		}
	case "unchanged":
		fmt.Fprintf(w, "migration %s unchanged\n", res.Name)
	default:
		fmt.Fprintf(w, "migration %s created: %d agents in %d batches\n", res.Name, res.Matched, len(res.Batches))
	}
}

// waitMigration shows progress until the migration reaches a final state. It returns an error
// (exit 1) unless the migration succeeded.
func waitMigration(ctx context.Context, c *client, name string, w io.Writer) error {
	tty := false
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	last := ""
	for {
		var d wire.MigrationDescription
		if err := c.do(ctx, http.MethodGet, "/api/v1/migrations/"+url.PathEscape(name), nil, &d); err != nil {
			return err
		}
		line := progressLine(d)
		if tty {
			fmt.Fprintf(w, "\r\033[K%s", line)
		} else if line != last {
			fmt.Fprintln(w, line)
		}
		last = line
		if state.MigrationState(d.Migration.State).Final() {
			if tty {
				fmt.Fprintln(w)
			}
			if d.Migration.State != string(state.MigrationSucceeded) {
				return fmt.Errorf("migration %s ended %s: %s", name, d.Migration.State, d.Migration.Reason)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(w)
			}
			return fmt.Errorf("stopped waiting for %s: %w", name, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func progressLine(d wire.MigrationDescription) string {
	counts := map[string]int{}
	total := 0
	for _, b := range d.Batches {
		total += b.Total
		for s, n := range b.States {
			counts[s] += n
		}
	}
	done := 0
	for s, n := range counts {
		if state.AssignmentState(s).Final() {
			done += n
		}
	}
	const width = 30
	filled := 0
	if total > 0 {
		filled = done * width / total
	}
	bar := strings.Repeat("#", filled) + strings.Repeat("-", width-filled)
	return fmt.Sprintf("%s [%s] %d/%d done (%s) %s", d.Migration.Name, bar, done, total, stateCounts(counts), d.Migration.State)
}

func stateCounts(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, counts[k])
	}
	return strings.Join(parts, ", ")
}

func newMigrationGetCmd(stdio IO, opts *rootOptions, output *string) *cobra.Command {
	return &cobra.Command{
		Use:     "migrations",
		Aliases: []string{"migration", "mig"},
		Short:   "List migrations",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var l wire.List[wire.Migration]
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/migrations", nil, &l); err != nil {
				return err
			}
			now := time.Now()
			return printOutput(stdio.Out, *output, l.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NAME\tSTATE\tBATCH\tAGE\tREASON")
				for _, m := range l.Items {
					fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\n", m.Name, m.State, m.CurrentBatch+1, m.Batches, strings.TrimSuffix(human.Ago(m.CreatedAt, now), " ago"), m.Reason)
				}
			})
		},
	}
}

func newMigrationDescribeCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "migration NAME",
		Short: "Show a migration: state, progress per batch, per-agent state, failures grouped by cause",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var d wire.MigrationDescription
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/migrations/"+url.PathEscape(args[0]), nil, &d); err != nil {
				return err
			}
			agents, err := listAgents(cmd.Context(), c)
			if err != nil {
				return err
			}
			if output != "" {
				return printOutput(stdio.Out, output, d, nil)
			}
			names := map[string]string{}
			for _, a := range agents {
				names[a.ID] = a.Name
			}
			printDescription(stdio.Out, d, names)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml instead of the summary")
	return cmd
}

func printDescription(w io.Writer, d wire.MigrationDescription, names map[string]string) {
	m := d.Migration
	fmt.Fprintf(w, "Name:     %s\nState:    %s\n", m.Name, m.State)
	if m.Reason != "" {
		fmt.Fprintf(w, "Reason:   %s\n", m.Reason)
	}
	fmt.Fprintf(w, "Batches:  %d (current %d)\nBudget:   %d failures allowed\nCreated:  %s\n", m.Batches, m.CurrentBatch+1, d.Budget, m.CreatedAt.Local().Format(time.RFC3339))
	fmt.Fprintln(w, "\nProgress:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, b := range d.Batches {
		fmt.Fprintf(tw, "  batch %d\t%d agents\t%s\n", b.Batch+1, b.Total, stateCounts(b.States))
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "\nAgents:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  AGENT\tBATCH\tATTEMPT\tSTATE\tSTEP\tERROR / FAILURE")
	for _, a := range d.Assignments {
		name := names[a.AgentID]
		if name == "" {
			name = a.AgentID
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\t%s\t%s\n", name, a.Batch+1, a.Attempt, a.State, dash(a.StepName), dash(firstLine(cmp.Or(a.Error, a.Failure))))
	}
	_ = tw.Flush()
	if len(d.Failures) > 0 {
		fmt.Fprintln(w, "\nFailures by cause:")
		for _, g := range d.Failures {
			var ns []string
			for _, id := range g.Agents {
				ns = append(ns, names[id])
			}
			step := ""
			if g.Step != "" {
				step = " at step " + g.Step
			}
			fmt.Fprintf(w, "  %d agents%s: %s\n    %s\n", g.Count, step, g.Signature, strings.Join(ns, ", "))
		}
	}
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 70 {
				return l[:67] + "..."
			}
			return l
		}
	}
	return ""
}

func newActionCmd(stdio IO, opts *rootOptions, act wire.MigrationAction, short string) *cobra.Command {
	var failed bool
	cmd := &cobra.Command{
		Use:   string(act) + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if act == wire.MigrationRetry && !failed {
				return usageError{fmt.Errorf("retry needs --failed (only failed agents are retried, with a new attempt)")}
			}
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var m wire.Migration
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/migrations/"+url.PathEscape(args[0])+"/"+string(act), nil, &m); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "migration %s: %s (%s)\n", m.Name, m.State, m.Reason)
			return nil
		},
	}
	if act == wire.MigrationRetry {
		cmd.Flags().BoolVar(&failed, "failed", false, "retry the agents whose latest attempt failed or timed out")
	}
	return cmd
}

func migrationActionCmds(stdio IO, opts *rootOptions) []*cobra.Command {
	return []*cobra.Command{
		newActionCmd(stdio, opts, wire.MigrationPause, "Pause a migration: no new agent starts; running steps finish"),
		newActionCmd(stdio, opts, wire.MigrationResume, "Resume a paused migration"),
		newActionCmd(stdio, opts, wire.MigrationApprove, "Approve the next batch of a migration with manual approval"),
		newActionCmd(stdio, opts, wire.MigrationAbort, "Abort a migration: nothing new starts, running steps are stopped"),
		newActionCmd(stdio, opts, wire.MigrationRollback, "Roll back every agent the migration changed (steps in reverse order); resumes a failed rollback"),
		newActionCmd(stdio, opts, wire.MigrationRetry, "Retry failed agents with a new attempt (--failed)"),
	}
}

// doRaw sends a non-JSON body.
func (c *client) doRaw(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	return c.send(ctx, method, path, contentType, bytes.NewReader(body), out)
}

// kindSweep is the kind of a sweep spec; apply sends every other document to the migrations
// endpoint, which names what is wrong with it.
const kindSweep = "Sweep"
