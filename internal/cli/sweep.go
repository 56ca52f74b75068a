package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/human"
	"godwit.dev/godwit/internal/wire"
)

// addSweepCommands adds `godwit sweep …` and the sweep kinds of `get` and `describe`.
func addSweepCommands(root *cobra.Command, stdio IO, opts *rootOptions) {
	root.AddCommand(newSweepCmd(stdio, opts))
	for _, c := range root.Commands() {
		switch c.Name() {
		case "get":
			c.AddCommand(newSweepGetCmd(stdio, opts), newRunsGetCmd(stdio, opts))
		case "describe":
			c.AddCommand(newSweepDescribeCmd(stdio, opts), newRunDescribeCmd(stdio, opts))
		}
	}
}

func newSweepCmd(stdio IO, opts *rootOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sweep",
		Short: "Run and manage sweeps (scheduled consistency checks across the fleet)",
		Long: `A sweep asks every matching agent "are you still as you should be?" on a schedule, and
records the answer. Apply one with godwit apply -f (kind: Sweep); list them with godwit get sweeps
and their runs with godwit get runs --sweep NAME.`,
	}
	cmd.AddCommand(newSweepRunCmd(stdio, opts), newSweepSuspendCmd(stdio, opts, true), newSweepSuspendCmd(stdio, opts, false),
		newSweepRunsCmd(stdio, opts))
	cmd.AddCommand(&cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a sweep: it fires no more; its runs stay as the audit trail",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/api/v1/sweeps/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "sweep %s deleted\n", args[0])
			return nil
		},
	})
	return cmd
}

func newSweepRunCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var maxSeconds int
	var wait bool
	var timeout time.Duration
	var output string
	cmd := &cobra.Command{
		Use:   "run NAME",
		Short: "Run a sweep now, under the same lock as its schedule",
		Long: `Starts a run of the sweep now. If a run of the same sweep is in progress, nothing runs: the
answer is a run record with lock_skipped: true (exit code 0). With --wait the command follows the
run until it ends and exits non-zero if the run itself failed (drift found is not a failure).`,
		Example: `  godwit sweep run tls-drift --max-seconds 300 --wait`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := wire.SweepTriggerRequest{Trigger: wire.TriggerCLI, By: whoAmI()}
			if cmd.Flags().Changed("max-seconds") {
				if maxSeconds <= 0 {
					return usageError{fmt.Errorf("--max-seconds must be a positive number of seconds, not %d", maxSeconds)}
				}
				req.MaxSeconds = &maxSeconds
			}
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var run wire.SweepRun
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/sweeps/"+url.PathEscape(args[0])+"/runs", req, &run); err != nil {
				return err
			}
			if !wait || run.Final() {
				if output != "" {
					return printOutput(stdio.Out, output, run, nil)
				}
				fmt.Fprintln(stdio.Out, runLine(run))
				return runError(run)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			final, err := waitRun(ctx, c, run, stdio.Out, output == "")
			if err != nil {
				return err
			}
			if output != "" {
				return printOutput(stdio.Out, output, final, nil)
			}
			printRunDetail(stdio.Out, final)
			return runError(final.SweepRun)
		},
	}
	cmd.Flags().IntVar(&maxSeconds, "max-seconds", 0, "time budget of this run (default: the spec's maxSeconds)")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the run until it ends")
	cmd.Flags().DurationVar(&timeout, "timeout", 25*time.Hour, "how long --wait waits")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml instead of the summary")
	return cmd
}

func newSweepSuspendCmd(stdio IO, opts *rootOptions, suspend bool) *cobra.Command {
	var reason, output string
	cmd := &cobra.Command{
		Use:   "suspend NAME",
		Short: "Suspend a sweep: no scheduled run fires until it is resumed (godwit sweep run still runs it)",
		Long: `Suspends a sweep on every hub: no scheduled firing runs until it is resumed. A run in progress
goes on, and godwit sweep run still runs it (the canary before a cutover). The suspension is stored
with the sweep, so it holds across hub restarts. Applying a spec that sets spec.suspended overrides
it (docs/sweeps.md); a spec that leaves the field out keeps it.`,
		Example: `  godwit sweep suspend tls-drift --reason "canary first, cutover on Friday"`,
		Args:    cobra.ExactArgs(1),
	}
	path := "/suspend"
	if !suspend {
		cmd.Use, path = "resume NAME", "/resume"
		cmd.Short = "Resume a suspended sweep; its resumePolicy decides what happens to the firings held back"
		cmd.Long = `Resumes a suspended sweep. The scheduled firings that came due while it was suspended are not
run when its spec says resumePolicy: skip (the default): the schedule goes on from now. With
resumePolicy: misfire they are missed firings and the misfire policy decides at once (skip: one
missed record; run_once: one catch-up run).`
		cmd.Example = `  godwit sweep resume tls-drift`
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := newClient(opts)
		if err != nil {
			return err
		}
		req := wire.SweepSuspendRequest{Reason: reason, Via: wire.SuspendViaCLI, By: whoAmI()}
		var res wire.SweepSuspendResult
		if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/sweeps/"+url.PathEscape(args[0])+path, req, &res); err != nil {
			return err
		}
		if output != "" {
			return printOutput(stdio.Out, output, res, nil)
		}
		printSuspendResult(stdio.Out, res)
		return nil
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit record (operator.action event)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml instead of the summary")
	return cmd
}

func printSuspendResult(w io.Writer, res wire.SweepSuspendResult) {
	switch res.Outcome {
	case "suspended":
		fmt.Fprintf(w, "sweep %s suspended: no scheduled run fires until it is resumed (godwit sweep resume %s); godwit sweep run still runs it\n",
			res.Name, res.Name)
	case "resumed":
		fmt.Fprintf(w, "sweep %s resumed", res.Name)
		switch {
		case res.HeldFirings == 0:
			fmt.Fprintln(w, ": no scheduled firing came due while it was suspended")
		case res.ResumePolicy == "misfire":
			fmt.Fprintf(w, ": %s came due while it was suspended; handed to the misfire policy (resumePolicy: misfire)\n", countText(res.HeldFirings, "firing"))
		default:
			fmt.Fprintf(w, ": %s came due while it was suspended; not run (resumePolicy: skip)\n", countText(res.HeldFirings, "firing"))
		}
		for _, r := range res.CatchUp {
			fmt.Fprintln(w, "  "+runLine(r))
		}
	case "unchanged":
		if res.Suspended {
			fmt.Fprintf(w, "sweep %s is already suspended%s\n", res.Name, suspensionText(res.Suspension))
		} else {
			fmt.Fprintf(w, "sweep %s is not suspended; nothing changed\n", res.Name)
		}
	}
	for i, t := range res.NextFirings {
		if i == 0 {
			fmt.Fprint(w, "  next firings:")
		}
		fmt.Fprintf(w, " %s", t.Local().Format(time.RFC3339))
		if i == len(res.NextFirings)-1 {
			fmt.Fprintln(w)
		}
	}
}

// suspensionText is " since T by WHO via VIA: REASON", or "" without a suspension.
func suspensionText(p *wire.SweepSuspension) string {
	if p == nil {
		return ""
	}
	out := " since " + p.Since.Local().Format(time.RFC3339)
	if p.By != "" {
		out += " by " + p.By
	}
	out += " via " + p.Via
	if p.Via == wire.SuspendViaSpec {
		out += " (spec.suspended: true)"
	}
	if p.Reason != "" {
		out += ": " + p.Reason
	}
	return out
}

func countText(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if n >= wire.MaxHeldFiringsCounted {
		return fmt.Sprintf("at least %d %ss", n, what)
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// whoAmI names the person running the CLI for the run's audit record.
func whoAmI() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		name += "@" + h
	}
	return name
}

// runError is non-nil (exit 1) when the run itself failed; drift found is a result, not a
// failure, and so is a lock skip.
func runError(r wire.SweepRun) error {
	if r.Status == wire.SweepRunFailed {
		return fmt.Errorf("sweep %s run %s failed (exit code %d): %s", r.Sweep, r.ID, deref(r.ExitCode), r.Error)
	}
	return nil
}

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func waitRun(ctx context.Context, c *client, run wire.SweepRun, w io.Writer, progress bool) (wire.SweepRunDetail, error) {
	path := "/api/v1/sweeps/" + url.PathEscape(run.Sweep) + "/runs/" + url.PathEscape(run.ID)
	last := ""
	for {
		var d wire.SweepRunDetail
		if err := c.do(ctx, http.MethodGet, path, nil, &d); err != nil {
			return d, err
		}
		if line := runLine(d.SweepRun); progress && line != last {
			fmt.Fprintln(w, line)
			last = line
		}
		if d.Final() {
			return d, nil
		}
		select {
		case <-ctx.Done():
			return d, fmt.Errorf("stopped waiting for run %s: %w", run.ID, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// runLine is one line about a run.
func runLine(r wire.SweepRun) string {
	switch {
	case r.LockSkipped:
		return fmt.Sprintf("sweep %s: lock skipped (run %s recorded): %s", r.Sweep, r.ID, r.Error)
	case r.Status == wire.SweepRunMissed:
		return fmt.Sprintf("sweep %s: %s", r.Sweep, r.Error)
	}
	settled := r.Processed + r.SkippedClean + r.SkippedMissing + r.SkippedBudget
	line := fmt.Sprintf("sweep %s run %s %s: %d/%d settled (drifted %d, clean %d, missing %d, over budget %d, errors %d)",
		r.Sweep, r.ID, r.Status, settled, r.Matched, r.Drifted, r.SkippedClean, r.SkippedMissing, r.SkippedBudget, r.Errors)
	if r.Remediation != "" {
		line += "; remediation: migration " + r.Remediation
	}
	return line
}

func newSweepGetCmd(stdio IO, opts *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "sweeps",
		Aliases: []string{"sweep"},
		Short:   "List sweeps with their schedule, next firing and latest run",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			output, _ := cmd.Flags().GetString("output")
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var l wire.List[wire.SweepSummary]
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/sweeps", nil, &l); err != nil {
				return err
			}
			now := time.Now()
			return printOutput(stdio.Out, output, l.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NAME\tSCHEDULE\tTIMEZONE\tACTION\tNEXT\tLAST RUN")
				for _, s := range l.Items {
					next := "-"
					switch {
					case s.Suspended && s.Schedule != "":
						next = fmt.Sprintf("suspended (%d held)", s.HeldFirings)
					case s.Suspended:
						next = "suspended"
					case !s.NextFireAt.IsZero():
						next = s.NextFireAt.Local().Format(time.RFC3339)
					}
					lastRun := "never"
					if s.LastRun != nil {
						lastRun = fmt.Sprintf("%s %s", runStatus(*s.LastRun), human.Ago(s.LastRun.FiredAt, now))
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, dash(s.Schedule), s.Timezone, actionText(s), next, lastRun)
				}
			})
		},
	}
}

func actionText(s wire.SweepSummary) string {
	if s.Remediate != "" {
		return s.Action + " (" + s.Remediate + ")"
	}
	return s.Action
}

// runStatus is the status column of a run: lock skips and drift are worth seeing at a glance.
func runStatus(r wire.SweepRun) string {
	switch {
	case r.LockSkipped:
		return "lock_skipped"
	case r.Status == wire.SweepRunCompleted && r.Drifted > 0:
		return "completed (drift)"
	}
	return r.Status
}

func newRunsGetCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var sweepName string
	var page runPage
	cmd := &cobra.Command{
		Use:     "runs --sweep NAME",
		Aliases: []string{"run"},
		Short:   "List a sweep's runs (the audit trail), newest first, a page at a time",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sweepName == "" {
				return usageError{fmt.Errorf("--sweep is required")}
			}
			output, _ := cmd.Flags().GetString("output")
			return listRuns(cmd, stdio, opts, sweepName, page, output)
		},
	}
	cmd.Flags().StringVar(&sweepName, "sweep", "", "the sweep whose runs to list (required)")
	page.flags(cmd)
	return cmd
}

func newSweepRunsCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var page runPage
	var output string
	cmd := &cobra.Command{
		Use:   "runs NAME",
		Short: "List a sweep's runs (the audit trail), newest first, a page at a time (as godwit get runs --sweep NAME)",
		Long: `Lists a sweep's runs newest first, --limit at a time. When there are older runs, the command
says on stderr how to get the next page (--cursor); --all follows every page.`,
		Example: `  godwit sweep runs tls-drift --limit 50
  godwit sweep runs tls-drift --limit 50 --cursor MTc0NjA5…
  godwit sweep runs tls-drift --all -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return listRuns(cmd, stdio, opts, args[0], page, output)
		},
	}
	page.flags(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml (the runs, as a list) instead of the table")
	return cmd
}

// runPage is which runs a listing asks for.
type runPage struct {
	limit  int
	cursor string
	all    bool
}

func (p *runPage) flags(cmd *cobra.Command) {
	cmd.Flags().IntVar(&p.limit, "limit", 20, "runs per page (1-1000)")
	cmd.Flags().StringVar(&p.cursor, "cursor", "", "start after this cursor (printed after a page that has older runs)")
	cmd.Flags().BoolVar(&p.all, "all", false, "follow every page to the oldest run")
}

// listRuns prints a sweep's runs, newest first: one page, or with --all every page; the cursor
// of the next page goes to stderr.
func listRuns(cmd *cobra.Command, stdio IO, opts *rootOptions, sweepName string, page runPage, output string) error {
	if page.limit < 1 || page.limit > 1000 {
		return usageError{fmt.Errorf("--limit must be from 1 to 1000, not %d", page.limit)}
	}
	c, err := newClient(opts)
	if err != nil {
		return err
	}
	items := []wire.SweepRun{}
	cursor := page.cursor
	for {
		var l wire.List[wire.SweepRun]
		q := url.Values{"limit": {fmt.Sprint(page.limit)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/sweeps/"+url.PathEscape(sweepName)+"/runs?"+q.Encode(), nil, &l); err != nil {
			return err
		}
		items, cursor = append(items, l.Items...), l.NextCursor
		if !page.all || cursor == "" {
			break
		}
	}
	if err := printRuns(stdio.Out, output, items); err != nil {
		return err
	}
	if cursor != "" {
		fmt.Fprintf(stdio.Err, "older runs: --cursor %s (or --all)\n", cursor)
	}
	return nil
}

// printRuns prints runs as a table, or as a JSON or YAML list.
func printRuns(w io.Writer, output string, runs []wire.SweepRun) error {
	return printOutput(w, output, runs, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "RUN\tTRIGGER\tBY\tSCHEDULED FOR\tFIRED\tSTATUS\tMATCHED\tDRIFTED\tCLEAN\tMISSING\tBUDGET\tERRORS\tEXIT")
		for _, r := range runs {
			scheduled := "-"
			if !r.ScheduledFor.IsZero() {
				scheduled = r.ScheduledFor.Local().Format(time.RFC3339)
			}
			exit := "-"
			if r.ExitCode != nil {
				exit = fmt.Sprint(*r.ExitCode)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", r.ID, r.Trigger, dash(r.TriggeredBy), scheduled,
				r.FiredAt.Local().Format(time.RFC3339), runStatus(r), r.Matched, r.Drifted, r.SkippedClean, r.SkippedMissing,
				r.SkippedBudget, r.Errors, exit)
		}
	})
}

func newSweepDescribeCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "sweep NAME",
		Short: "Show a sweep: settings, next firings, spec and recent runs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var s wire.SweepSummary
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/sweeps/"+url.PathEscape(args[0]), nil, &s); err != nil {
				return err
			}
			var runs wire.List[wire.SweepRun]
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/sweeps/"+url.PathEscape(args[0])+"/runs?limit=5", nil, &runs); err != nil {
				return err
			}
			if output != "" {
				return printOutput(stdio.Out, output, map[string]any{"sweep": s, "runs": runs.Items}, nil)
			}
			w := stdio.Out
			fmt.Fprintf(w, "Name:      %s\nSchedule:  %s (%s, misfire %s, resumePolicy %s)\nBudget:    %ds\nAction:    %s\n",
				s.Name, dash(s.Schedule), s.Timezone, s.Misfire, s.ResumePolicy, s.MaxSeconds, actionText(s))
			if s.Suspended {
				fmt.Fprintf(w, "Suspended: yes%s\n", suspensionText(s.Suspension))
				if s.Schedule != "" {
					fmt.Fprintf(w, "           no scheduled run fires; %s held back so far (first %s); on resume: %s\n",
						countText(s.HeldFirings, "firing"), s.NextFireAt.Local().Format(time.RFC3339), resumeText(s))
				}
			} else {
				fmt.Fprintln(w, "Suspended: no")
			}
			for i, t := range s.NextFirings {
				label := ""
				if i == 0 {
					label = "Next:"
				}
				fmt.Fprintf(w, "%-10s %s\n", label, t.Local().Format(time.RFC3339))
			}
			fmt.Fprintf(w, "\nSpec:\n%s\n", indent(s.Spec, "  "))
			fmt.Fprintln(w, "Recent runs:")
			for _, r := range runs.Items {
				fmt.Fprintf(w, "  %s  %s\n", r.FiredAt.Local().Format(time.RFC3339), runLine(r))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml instead of the summary")
	return cmd
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

func newRunDescribeCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var sweepName, output string
	cmd := &cobra.Command{
		Use:   "run RUN_ID --sweep NAME",
		Short: "Show one sweep run with every agent's answer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sweepName == "" {
				return usageError{fmt.Errorf("--sweep is required")}
			}
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var d wire.SweepRunDetail
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/sweeps/"+url.PathEscape(sweepName)+"/runs/"+url.PathEscape(args[0]), nil, &d); err != nil {
				return err
			}
			if output != "" {
				return printOutput(stdio.Out, output, d, nil)
			}
			fmt.Fprintln(stdio.Out, runLine(d.SweepRun))
			printRunDetail(stdio.Out, d)
			return nil
		},
	}
	cmd.Flags().StringVar(&sweepName, "sweep", "", "the sweep the run belongs to (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml instead of the summary")
	return cmd
}

// printRunDetail prints who fired a run, when, how it ended and every agent's answer (the
// run's summary line is the caller's).
func printRunDetail(w io.Writer, d wire.SweepRunDetail) {
	r := d.SweepRun
	fmt.Fprintf(w, "Trigger:   %s by %s\nFired:     %s\n", r.Trigger, dash(r.TriggeredBy), r.FiredAt.Local().Format(time.RFC3339))
	if !r.FinishedAt.IsZero() {
		fmt.Fprintf(w, "Finished:  %s (exit code %d)\n", r.FinishedAt.Local().Format(time.RFC3339), deref(r.ExitCode))
	}
	if r.Error != "" {
		fmt.Fprintf(w, "Error:     %s\n", r.Error)
	}
	if len(d.Agents) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  AGENT\tSTATE\tEXIT\tERROR / OUTPUT")
	for _, a := range d.Agents {
		exit := "-"
		if a.ExitCode != nil {
			exit = fmt.Sprint(*a.ExitCode)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", a.AgentName, a.State, exit, dash(firstLine(a.Error+"\n"+a.OutputTail)))
	}
	_ = tw.Flush()
}

// applySweep is `godwit apply -f` for a kind: Sweep document.
func applySweep(ctx context.Context, c *client, body []byte, dry bool, output string, stdio IO) error {
	var res wire.SweepApplyResult
	if err := c.doRaw(ctx, http.MethodPost, "/api/v1/sweeps?dry_run="+fmt.Sprint(dry), "application/yaml", body, &res); err != nil {
		return err
	}
	if output != "" {
		return printOutput(stdio.Out, output, res, nil)
	}
	switch res.Outcome {
	case "planned":
		fmt.Fprintf(stdio.Out, "sweep %s (dry run): valid, %d agents match now\n", res.Name, res.Matched)
	default:
		fmt.Fprintf(stdio.Out, "sweep %s %s: %d agents match now\n", res.Name, res.Outcome, res.Matched)
	}
	switch {
	case res.Suspension != "" && res.DryRun:
		fmt.Fprintf(stdio.Out, "  would be %s (spec.suspended)\n", res.Suspension)
	case res.Suspension != "":
		fmt.Fprintf(stdio.Out, "  %s by this apply (spec.suspended)\n", res.Suspension)
	case res.Suspended:
		fmt.Fprintln(stdio.Out, "  suspended")
	}
	for i, t := range res.NextFirings {
		if i == 0 {
			fmt.Fprint(stdio.Out, "  next firings:")
		}
		fmt.Fprintf(stdio.Out, " %s", t.Local().Format(time.RFC3339))
		if i == len(res.NextFirings)-1 {
			fmt.Fprintln(stdio.Out)
		}
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(stdio.Err, "warning:", w)
	}
	return nil
}

// resumeText says what resuming a suspended sweep does with the firings held back.
func resumeText(s wire.SweepSummary) string {
	if s.ResumePolicy == "misfire" {
		return "handed to misfire " + s.Misfire + " (resumePolicy: misfire)"
	}
	return "not run (resumePolicy: skip)"
}
