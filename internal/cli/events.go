package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"godwit.dev/godwit/internal/wire"
)

type eventFlags struct {
	agent, migration, typ, severity, since, until, output string
	limit                                                 int
	follow                                                bool
	interval                                              time.Duration
}

func (f *eventFlags) query() url.Values {
	v := url.Values{}
	for k, val := range map[string]string{"agent": f.agent, "migration": f.migration, "type": f.typ, "severity": f.severity, "since": f.since, "until": f.until} {
		if val != "" {
			v.Set(k, val)
		}
	}
	v.Set("limit", strconv.Itoa(f.limit))
	return v
}

func newEventsCmd(stdio IO, opts *rootOptions) *cobra.Command {
	f := &eventFlags{}
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show fleet events, newest first (or follow them as they arrive)",
		Example: `  godwit events --severity error --since 2h
  godwit events --agent 0196… --type 'migration.rollback.*'
  godwit events --follow -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(opts)
			if err != nil {
				return err
			}
			if f.follow {
				return followEvents(cmd.Context(), c, f, stdio.Out)
			}
			var page wire.List[wire.EventRecord]
			if err := c.do(cmd.Context(), "GET", "/api/v1/events?"+f.query().Encode(), nil, &page); err != nil {
				return err
			}
			if err := printEvents(stdio.Out, f.output, page.Items, true); err != nil {
				return err
			}
			if page.NextCursor != "" && f.output == "" {
				fmt.Fprintf(stdio.Err, "(more: raise --limit or page with the API cursor %s)\n", page.NextCursor)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.agent, "agent", "", "only this agent id")
	fl.StringVar(&f.migration, "migration", "", "only this migration")
	fl.StringVar(&f.typ, "type", "", "event types, comma-separated; a trailing * matches a prefix")
	fl.StringVar(&f.severity, "severity", "", "info, warning, error (comma-separated)")
	fl.StringVar(&f.since, "since", "", "RFC 3339 time or a duration back from now (2h)")
	fl.StringVar(&f.until, "until", "", "RFC 3339 time or a duration back from now")
	fl.IntVar(&f.limit, "limit", 50, "how many (1-1000)")
	fl.BoolVarP(&f.follow, "follow", "f", false, "keep printing new events as they arrive")
	fl.DurationVar(&f.interval, "poll", time.Second, "how often --follow asks the hub")
	fl.StringVarP(&f.output, "output", "o", "", "table, json (one event per line with --follow) or yaml")
	return cmd
}

// followEvents prints the latest page, then polls for newer events, oldest first, each once.
func followEvents(ctx context.Context, c *client, f *eventFlags, w io.Writer) error {
	seen := map[string]bool{}
	header := true
	q := f.query()
	for {
		var page wire.List[wire.EventRecord]
		if err := c.do(ctx, "GET", "/api/v1/events?"+q.Encode(), nil, &page); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		var fresh []wire.EventRecord
		for i := len(page.Items) - 1; i >= 0; i-- {
			if e := page.Items[i]; !seen[e.ID] {
				seen[e.ID] = true
				fresh = append(fresh, e)
			}
		}
		if len(fresh) > 0 {
			format := f.output
			if format == "json" {
				format = "jsonl"
			}
			if err := printEvents(w, format, fresh, header); err != nil {
				return err
			}
			header = false
			// Ask only for what is new from here on (events of the same instant are de-duplicated).
			q.Set("since", fresh[len(fresh)-1].Time.Format(time.RFC3339Nano))
			q.Del("until")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(f.interval):
		}
	}
}

func printEvents(w io.Writer, format string, events []wire.EventRecord, header bool) error {
	if format == "jsonl" {
		enc := json.NewEncoder(w)
		for _, e := range events {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	}
	return printOutput(w, format, events, func(tw *tabwriter.Writer) {
		if header {
			fmt.Fprintln(tw, "TIME\tSEVERITY\tTYPE\tAGENT\tMIGRATION\tDETAIL")
		}
		for _, e := range events {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05"), severityMark(e.Severity),
				e.Type, short(e.Data.AgentID), dash(e.Data.Migration), detail(e.Event))
		}
	})
}

// severityMark makes severity readable without colour.
func severityMark(s string) string {
	switch s {
	case wire.SeverityError:
		return "ERROR"
	case wire.SeverityWarning:
		return "warn"
	}
	return "info"
}

func detail(e wire.Event) string {
	d := e.Data.Message
	if e.Data.Error != "" {
		d = e.Data.Error
	}
	if e.Data.ExitCode != nil {
		d += fmt.Sprintf(" (exit %d)", *e.Data.ExitCode)
	}
	d = strings.ReplaceAll(d, "\n", " ")
	if len(d) > 80 {
		d = d[:77] + "..."
	}
	return dash(d)
}

func short(id string) string {
	if len(id) > 13 {
		return id[:8] + "…" + id[len(id)-4:]
	}
	return dash(id)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
