package cli

import (
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/wire"
)

func newDLQCmd(stdio IO, opts *rootOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Inspect, replay and purge dead-lettered events"}
	var output string
	var limit int
	var after uint64
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			v := url.Values{"limit": {strconv.Itoa(limit)}, "after": {strconv.FormatUint(after, 10)}}
			var l wire.List[wire.DeadLetter]
			if err := c.do(cmd.Context(), "GET", "/api/v1/dlq?"+v.Encode(), nil, &l); err != nil {
				return err
			}
			return printOutput(stdio.Out, output, l.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "SEQ\tTIME\tSUBJECT\tDELIVERIES\tREASON")
				for _, d := range l.Items {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", d.Seq, d.Time.Local().Format("2006-01-02 15:04:05"), d.Subject, d.Deliveries, d.Reason)
				}
			})
		},
	}
	list.Flags().IntVar(&limit, "limit", 100, "how many (1-1000)")
	list.Flags().Uint64Var(&after, "after", 0, "start after this sequence")
	list.Flags().StringVarP(&output, "output", "o", "", "table, json or yaml")

	show := &cobra.Command{
		Use:   "show SEQ",
		Short: "Show one dead letter: reason, headers and the original payload",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var d wire.DeadLetter
			if err := c.do(cmd.Context(), "GET", "/api/v1/dlq/"+url.PathEscape(args[0]), nil, &d); err != nil {
				return err
			}
			format := output
			if format == "" {
				format = "yaml"
			}
			return printOutput(stdio.Out, format, d, nil)
		},
	}
	show.Flags().StringVarP(&output, "output", "o", "", "yaml (default) or json")

	replay := &cobra.Command{
		Use:   "replay SEQ [SEQ…]",
		Short: "Republish dead letters to the event stream (same event id: stored at most once)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			for _, seq := range args {
				if err := c.do(cmd.Context(), "POST", "/api/v1/dlq/"+url.PathEscape(seq)+"/replay", nil, nil); err != nil {
					return fmt.Errorf("replay %s: %w", seq, err)
				}
				fmt.Fprintf(stdio.Out, "dead letter %s replayed\n", seq)
			}
			return nil
		},
	}
	var all bool
	purge := &cobra.Command{
		Use:   "purge (SEQ… | --all)",
		Short: "Delete dead letters for good",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return usageError{fmt.Errorf("give dead-letter sequence numbers or --all, not both or neither")}
			}
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var resp struct {
				Purged int `json:"purged"`
			}
			if all {
				if err := c.do(cmd.Context(), "POST", "/api/v1/dlq/purge", nil, &resp); err != nil {
					return err
				}
				fmt.Fprintf(stdio.Out, "%d dead letters purged\n", resp.Purged)
				return nil
			}
			for _, seq := range args {
				if err := c.do(cmd.Context(), "DELETE", "/api/v1/dlq/"+url.PathEscape(seq), nil, &resp); err != nil {
					return fmt.Errorf("purge %s: %w", seq, err)
				}
				fmt.Fprintf(stdio.Out, "dead letter %s purged\n", seq)
			}
			return nil
		},
	}
	purge.Flags().BoolVar(&all, "all", false, "purge every dead letter")
	cmd.AddCommand(list, show, replay, purge)
	return cmd
}

func newStatusCmd(stdio IO, opts *rootOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Hub status: store, agents by status, event pipeline lag, dead letters, the leader and the replicas",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			var st wire.HubStatus
			if err := c.do(cmd.Context(), "GET", "/api/v1/status", nil, &st); err != nil {
				return err
			}
			return printOutput(stdio.Out, output, st, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "version\t%s\n", st.Version)
				fmt.Fprintf(tw, "store\t%s\n", st.Store)
				fmt.Fprintf(tw, "agents\t%d online, %d offline, %d unknown, %d revoked\n", st.Agents[wire.StatusOnline], st.Agents[wire.StatusOffline], st.Agents[wire.StatusUnknown], st.Agents["revoked"])
				if st.Ingest != nil {
					fmt.Fprintf(tw, "ingest consumer\t%s\n", st.Ingest.Consumer)
					fmt.Fprintf(tw, "ingest lag\t%d pending, %d delivered but not yet acked\n", st.Ingest.Pending, st.Ingest.AckPending)
					fmt.Fprintf(tw, "dead letters\t%d\n", st.Ingest.DeadLetters)
				} else {
					fmt.Fprintf(tw, "ingest\tunavailable: %s\n", st.IngestError)
				}
				if l := st.Leadership; l != nil {
					leader := l.Leader
					if leader == "" {
						leader = "none"
					}
					fmt.Fprintf(tw, "leader\t%s (epoch %d)\n", leader, l.Epoch)
					if !l.Since.IsZero() {
						fmt.Fprintf(tw, "leading since\t%s\n", l.Since.UTC().Format(time.RFC3339))
					}
					fmt.Fprintf(tw, "answered by\t%s\n", l.Replica)
					if l.State == wire.LeadershipWaiting {
						fmt.Fprintf(tw, "state\twaiting: this replica has not joined its JetStream cluster yet (no ingest, no lease)\n")
					}
					if l.Degraded {
						fmt.Fprintf(tw, "lease\tdegraded: this replica's calls to NATS are failing\n")
					}
					if l.Waiting != "" {
						fmt.Fprintf(tw, "waiting for\t%s\n", l.Waiting)
					}
				}
				fmt.Fprintf(tw, "\nREPLICA\tADDRESS\tROLE\tEPOCH\tSINCE\tLAST SEEN\n")
				for _, r := range st.Replicas {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.Address, r.Role, r.Epoch,
						r.Since.UTC().Format(time.RFC3339), r.LastSeen.UTC().Format(time.RFC3339))
				}
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "table, json or yaml")
	return cmd
}
