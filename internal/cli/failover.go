package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/failover"
	"godwit.dev/godwit/internal/human"
	"godwit.dev/godwit/internal/manifest"
	"godwit.dev/godwit/internal/wire"
)

// kindFailoverGroup is the kind `godwit apply` sends to /api/v1/failovergroups.
const kindFailoverGroup = failover.Kind

// addFailoverCommands adds `godwit failover …` and the failover group kinds of `get` and
// `describe`.
func addFailoverCommands(root *cobra.Command, stdio IO, opts *rootOptions) {
	root.AddCommand(newFailoverCmd(stdio, opts))
	for _, c := range root.Commands() {
		switch c.Name() {
		case "get":
			c.AddCommand(newFailoverGetCmd(stdio, opts))
		case "describe":
			c.AddCommand(newFailoverDescribeCmd(stdio, opts))
		}
	}
}

func applyFailoverGroup(ctx context.Context, c *client, body []byte, dry bool, output string, stdio IO) error {
	var res wire.FailoverApplyResult
	if err := c.doRaw(ctx, http.MethodPost, "/api/v1/failovergroups?dry_run="+fmt.Sprint(dry), "application/yaml", body, &res); err != nil {
		return err
	}
	if output != "" {
		return printOutput(stdio.Out, output, res, nil)
	}
	fmt.Fprintf(stdio.Out, "failovergroup/%s %s (%d members)\n", res.Name, res.Outcome, len(res.Group.Members))
	for _, w := range res.Warnings {
		fmt.Fprintln(stdio.Err, "warning:", w)
	}
	return nil
}

func newFailoverCmd(stdio IO, opts *rootOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Manage failover groups (agents of which exactly one is primary)",
		Long: `A failover group is a set of agents of which exactly one is primary for a workload, decided
over a NATS KV witness (docs/failover.md). Apply one with godwit apply -f (kind: FailoverGroup);
list them with godwit get failovergroups.`,
	}
	for _, pause := range []bool{true, false} {
		var reason, output string
		use, short := "resume GROUP", "Leave maintenance mode: members fail over on their own again"
		if pause {
			use, short = "pause GROUP", "Maintenance mode: no member promotes on its own until resumed"
		}
		c := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := newClient(opts)
				if err != nil {
					return err
				}
				action := "resume"
				if pause {
					action = "pause"
				}
				var g wire.FailoverGroup
				if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/failovergroups/"+url.PathEscape(args[0])+"/"+action,
					wire.FailoverPauseRequest{Reason: reason}, &g); err != nil {
					return err
				}
				if output != "" {
					return printOutput(stdio.Out, output, g, nil)
				}
				fmt.Fprintf(stdio.Out, "failovergroup/%s %s\n", g.Name, pausedWord(g))
				return nil
			},
		}
		if pause {
			c.Flags().StringVar(&reason, "reason", "", "why, shown with the group")
		}
		c.Flags().StringVarP(&output, "output", "o", "", "json or yaml instead of the summary")
		cmd.AddCommand(c)
	}
	var to string
	sw := &cobra.Command{
		Use:   "switchover GROUP --to MEMBER",
		Short: "Planned switchover: the primary fences and hands over to MEMBER, with no failover timeout to wait",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var res wire.FailoverSwitchoverResult
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/failovergroups/"+url.PathEscape(args[0])+"/switchover",
				wire.FailoverSwitchoverRequest{To: to}, &res); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "failovergroup/%s switchover requested: %s (epoch %d) hands over to %s\n", res.Group, res.From, res.Epoch, res.To)
			return nil
		},
	}
	sw.Flags().StringVar(&to, "to", "", "the member agent id to promote")
	_ = sw.MarkFlagRequired("to")
	cmd.AddCommand(sw)
	cmd.AddCommand(&cobra.Command{
		Use:   "delete GROUP",
		Short: "Delete a failover group; its members are free to join another",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/api/v1/failovergroups/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "failovergroup %s deleted\n", args[0])
			return nil
		},
	})
	return cmd
}

func pausedWord(g wire.FailoverGroup) string {
	if g.Paused {
		if g.PauseReason != "" {
			return "paused (" + g.PauseReason + ")"
		}
		return "paused"
	}
	return "active"
}

func newFailoverGetCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "failovergroups",
		Aliases: []string{"failovergroup", "fg"},
		Short:   "List failover groups",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var l wire.List[wire.FailoverGroup]
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/failovergroups", nil, &l); err != nil {
				return err
			}
			if output == "" {
				output = cmd.Flag("output").Value.String()
			}
			now := time.Now()
			return printOutput(stdio.Out, output, l.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NAME\tMEMBERS\tSTATE\tFAILOVER TIMEOUT\tAGE")
				for _, g := range l.Items {
					timeout := "?"
					if sp, err := failover.SpecOf(g); err == nil {
						timeout = (time.Duration(sp.FailoverTimeout) * time.Millisecond).String()
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", g.Name, len(g.Members), pausedWord(g), timeout, human.Ago(g.CreatedAt, now))
				}
			})
		},
	}
	return cmd
}

func newFailoverDescribeCmd(stdio IO, opts *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "failovergroup GROUP",
		Aliases: []string{"failovergroups", "fg"},
		Short:   "Show a failover group: its spec, members, state and the timeline of transitions",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var d wire.FailoverGroupDetail
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/failovergroups/"+url.PathEscape(args[0]), nil, &d); err != nil {
				return err
			}
			printFailoverDetail(stdio.Out, d)
			return nil
		},
	}
}

func printFailoverDetail(w io.Writer, d wire.FailoverGroupDetail) {
	fmt.Fprintf(w, "Name:     %s\nState:    %s\nVersion:  %d\nCreated:  %s\n", d.Name, pausedWord(d.FailoverGroup), d.Version,
		d.CreatedAt.UTC().Format(time.RFC3339))
	c, specErr := failover.SpecOf(d.FailoverGroup)
	if specErr == nil {
		printFailoverSettings(w, c)
	}
	// The latest transition of each member says its role, state and epoch; a policy refusal
	// newer than it says the agent runs no member of the group.
	latest, refused := failover.Latest(d.Timeline), failover.Refused(d.Timeline)
	fmt.Fprintln(w, "Members:")
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "  AGENT\tENTRY\tPRIORITY\tNOFAILOVER\tROLE\tSTATE\tEPOCH\tSINCE")
	for _, m := range d.Members {
		entry, prio, nofo := "?", "?", "?"
		if specErr == nil {
			if st, ok := c.SettingsOf(m); ok {
				entry, prio, nofo = memberEntry(c, st.Entry), fmt.Sprint(st.Priority), fmt.Sprint(st.NoFailover)
			}
		}
		if r, ok := refused[m]; ok {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t-\trefused (hook %s, agent policy)\t-\t%s\n", m, entry, prio, nofo, r.Hook, r.Time.UTC().Format(time.RFC3339))
			continue
		}
		e, ok := latest[m]
		if !ok {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t-\t-\t-\t-\n", m, entry, prio, nofo)
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", m, entry, prio, nofo, e.Role, e.To, e.Epoch, e.Time.UTC().Format(time.RFC3339))
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "Timeline (newest first):")
	if len(d.Timeline) == 0 {
		fmt.Fprintln(w, "  (no transitions reported yet)")
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, e := range d.Timeline {
		what := e.From + " → " + e.To
		if e.Event == wire.EventFailoverPolicyRefused {
			what = e.Hook + " refused"
		} else if e.Hook != "" {
			what = e.Hook + " " + e.HookResult
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\tepoch %d\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Member, what, e.Epoch, e.Reason)
	}
	_ = tw.Flush()
	if specErr == nil {
		{
			b, _ := json.Marshal(failover.Document(c))
			var doc any
			_ = json.Unmarshal(b, &doc)
			fmt.Fprintln(w, "Spec:")
			var sb strings.Builder
			_ = printOutput(&sb, "yaml", doc, nil)
			for _, line := range strings.Split(strings.TrimRight(sb.String(), "\n"), "\n") {
				fmt.Fprintln(w, "  "+line)
			}
		}
	}
}

// printFailoverSettings prints what the members run with: the timing with the defaults filled
// in and the rule it keeps, and each hook with its timeout.
func printFailoverSettings(w io.Writer, c failover.Canonical) {
	ms := func(v int64) string { return manifest.FormatDuration(time.Duration(v) * time.Millisecond) }
	fmt.Fprintln(w, "Timing (defaults filled in):")
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintf(tw, "  heartbeatInterval\t%s\n  heartbeatTimeout\t%s\n  failureThreshold\t%d\n  safetyMargin\t%s\n",
		ms(c.HeartbeatInterval), ms(c.HeartbeatTimeout), c.FailureThreshold, ms(c.SafetyMargin))
	fmt.Fprintf(tw, "  failoverTimeout\t%s\t(> heartbeatTimeout × failureThreshold + safetyMargin = %s)\n", ms(c.FailoverTimeout),
		ms(c.HeartbeatTimeout*int64(c.FailureThreshold)+c.SafetyMargin))
	lag := fmt.Sprint(c.MaxLagOnFailover)
	if c.MaxLagOnFailover == 0 {
		lag = "0 (no limit)"
	}
	fmt.Fprintf(tw, "  recoveryThreshold\t%d\n  maxLagOnFailover\t%s\n  handoverOnStop\t%v\n", c.RecoveryThreshold, lag, c.HandoverOnStop)
	_ = tw.Flush()
	fmt.Fprintln(w, "Hooks:")
	tw = tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "  HOOK\tTIMEOUT\tCOMMAND")
	for _, name := range []string{"healthCheck", "onPromote", "onFence", "onDemote"} {
		h, ok := c.Hooks[name]
		if !ok || strings.TrimSpace(h.Command) == "" {
			fmt.Fprintf(tw, "  %s\t-\t(none)\n", name)
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", name, ms(h.TimeoutMS), oneLine(h.Command, 60))
	}
	_ = tw.Flush()
}

// memberEntry names the spec entry that took a member in.
func memberEntry(c failover.Canonical, i int) string {
	if i < 0 || i >= len(c.Members) {
		return "a selector (not resolved)"
	}
	if c.Members[i].Selector != nil {
		return fmt.Sprintf("spec.members[%d].selector", i)
	}
	return fmt.Sprintf("spec.members[%d].agent", i)
}

// oneLine is s's first line, cut to n runes.
func oneLine(s string, n int) string {
	s = strings.TrimSpace(s)
	cut := false
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s, cut = s[:i], true
	}
	if r := []rune(s); len(r) > n {
		s, cut = string(r[:n]), true
	}
	if cut {
		s += " …"
	}
	return s
}
