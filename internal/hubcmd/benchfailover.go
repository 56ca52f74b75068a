package hubcmd

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"godwit.dev/godwit/internal/cli"
	"godwit.dev/godwit/internal/failover/drill"
)

func newBenchFailoverCmd(stdio cli.IO) *cobra.Command {
	var kills, trials, members int
	var t drill.Timing = drill.FastTiming
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Promotion delay over repeated kills of a failover group's primary, and randomized fault trials under the checker",
		Long: `failover starts an embedded NATS server and the members of a failover group as real processes
(godwit failover member), kills the primary with SIGKILL --kills times and prints the promotion
delay — from the dead primary's last write of the group record to its successor's promoting write,
both on the NATS server's clock — as min / median / p99 against failoverTimeout. Then it runs
--trials randomized fault steps on a second group, run on a 3-node JetStream cluster (the bucket
R3) with each member behind a loopback proxy: kills, pauses around the timeout, graceful stops,
restarts, cuts of the primary or a replica off from NATS around the timeout, and latency blips
(the server's answers held above heartbeatTimeout) on the primary or a replica; it prints how many
steps of each kind ran and checks the hook log: one member per epoch, epochs grow, never two
primaries (a cut member held to the rule like any running one), a resumed zombie fences first.
It exits non-zero on any violation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "godwit-bench-failover")
			if err != nil {
				return err
			}
			keep := false
			defer func() {
				if !keep {
					os.RemoveAll(dir)
				}
			}()
			c, err := drill.New(exe, dir, members, t)
			if err != nil {
				return err
			}
			closed := false
			defer func() {
				if !closed {
					c.Close()
				}
			}()
			if err := c.StartAll(); err != nil {
				return err
			}
			out := stdio.Out
			fmt.Fprintf(out, "failover group of %d members: heartbeatInterval %dms, heartbeatTimeout %dms × failureThreshold %d + safetyMargin %dms < failoverTimeout %dms\n",
				members, t.Interval, t.Timeout, t.Threshold, t.Margin, t.Failover)
			if kills > 0 {
				ds, err := c.PromotionDelays(cmd.Context(), kills, nil)
				if err != nil {
					keep = true
					return fmt.Errorf("%w; members: %s (logs kept in %s)", err, c.Describe(), dir)
				}
				slices.Sort(ds)
				ft := time.Duration(t.Failover) * time.Millisecond
				pct := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
				fmt.Fprintf(out, "promotion delay over %d kills: min %s  median %s  p99 %s  max %s  (failoverTimeout %s; min - timeout = %s)\n",
					len(ds), ds[0].Round(time.Millisecond), pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond),
					ds[len(ds)-1].Round(time.Millisecond), ft, (ds[0] - ft).Round(time.Millisecond))
				if ds[0] < ft {
					return fmt.Errorf("a replica promoted %s after the primary's last heartbeat, before failoverTimeout", ds[0])
				}
			}
			if trials > 0 {
				c.Close()
				closed = true
				c, err := drill.NewOnNATSCluster(exe, filepath.Join(dir, "trials"), members, t)
				if err != nil {
					return err
				}
				defer c.Close()
				if err := c.StartAll(); err != nil {
					return err
				}
				seed := uint64(time.Now().UnixNano())
				rng := rand.New(rand.NewPCG(seed, 1))
				counts := map[string]int{}
				for i := range trials {
					what, err := c.Step(cmd.Context(), rng)
					if err != nil {
						keep = true
						return fmt.Errorf("trial %d (%s): %w; members: %s (logs kept in %s)", i+1, what, err, c.Describe(), dir)
					}
					if strings.Contains(what, "no live replica") {
						fmt.Fprintf(out, "  trial %d: %s\n", i+1, what)
					}
					f := strings.Fields(what)
					counts[f[0]+" "+f[1]]++
				}
				lines, err := drill.ReadLog(c.Log)
				if err != nil {
					return err
				}
				r := drill.Check(lines, c.Faults(), time.Duration(t.Failover)*time.Millisecond)
				fmt.Fprintf(out, "randomized trials on a 3-node JetStream cluster: %d (seed %d): %d promotions, %d zombies fenced first, %d violations\n",
					trials, seed, r.Promotions, r.Zombies, len(r.Violations))
				kinds := slices.Sorted(maps.Keys(counts))
				for _, k := range kinds {
					fmt.Fprintf(out, "  %-16s %d\n", k, counts[k])
				}
				for _, v := range r.Violations {
					fmt.Fprintln(out, "  violation:", v)
				}
				if len(r.Violations) > 0 {
					keep = true
					return fmt.Errorf("%d violations (hook log kept in %s)", len(r.Violations), c.Log)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&kills, "kills", 50, "kills of the primary to time")
	f.IntVar(&trials, "trials", 200, "randomized fault steps to check")
	f.IntVar(&members, "members", 3, "members of the group")
	f.IntVar(&t.Failover, "failover-timeout-ms", t.Failover, "failoverTimeout")
	f.IntVar(&t.Interval, "heartbeat-interval-ms", t.Interval, "heartbeatInterval")
	f.IntVar(&t.Timeout, "heartbeat-timeout-ms", t.Timeout, "heartbeatTimeout")
	return cmd
}
