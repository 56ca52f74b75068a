package hubcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"godwit.dev/godwit/internal/cli"

	member "godwit.dev/godwit/internal/agent/failover"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/failover"
	"godwit.dev/godwit/internal/lease"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/wire"
)

// newFailoverCmd holds the hub side's failover commands; the command line merges them into
// `godwit failover`.
func newFailoverCmd(stdio cli.IO) *cobra.Command {
	cmd := &cobra.Command{Use: "failover"}
	cmd.AddCommand(newFailoverMemberCmd(stdio))
	return cmd
}

// newFailoverMemberCmd runs one member of a group straight against a NATS server, from a
// FailoverGroup file: the runtime an agent runs for each of its groups, on its own. The
// failover drills and the benchmark run it as real processes.
func newFailoverMemberCmd(stdio cli.IO) *cobra.Command {
	var natsURL, file, self, namespace, level, metricsAddr, kvMode string
	var replicas int
	cmd := &cobra.Command{
		Use:   "member --nats URL -f GROUP.yaml --member AGENT_ID",
		Short: "Run one member of a failover group against a NATS server (the runtime an agent runs per group)",
		Long: `Runs the member state machines of docs/failover.md for one member of the group in the file,
with the group's bucket on the given NATS server (created if absent). Transitions and hook results
are printed on standard output as JSON lines (failover.transition). SIGTERM stops it gracefully:
a healthy primary hands over (handoverOnStop) or fences before it exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kvMode != "jetstream" && kvMode != "agent" {
				return fmt.Errorf("--kv: %q is neither jetstream nor agent", kvMode)
			}
			if replicas < 1 || replicas > 5 {
				return fmt.Errorf("--replicas: %d is not between 1 and 5", replicas)
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			sp, err := failover.Parse(data)
			if err == nil {
				err = sp.Validate()
			}
			if err != nil {
				return err
			}
			log := logging.New(stdio.Err, level, "json")
			// A member started while NATS is down waits for it, as after any later disconnect:
			// until it reaches the bucket it holds no role, and it retries on its own rather than
			// leaving that to its service manager.
			nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
				nats.RetryOnFailedConnect(true))
			if err != nil {
				return err
			}
			defer nc.Close()
			if !nc.IsConnected() {
				log.Warn("nats: not reachable yet; retrying", "url", natsURL)
			}
			var kv lease.KV
			switch kvMode {
			case "jetstream":
				js, err := jetstream.New(nc)
				if err != nil {
					return err
				}
				if kv, err = openBucketWhenReachable(cmd.Context(), js, namespace, sp.Name, replicas, log); err != nil {
					return fmt.Errorf("group bucket: %w", err)
				}
			case "agent":
				kv = bus.GroupKV{Conn: nc, Bucket: member.BucketName(namespace, sp.Name),
					Poll: time.Duration(sp.HeartbeatInterval) * time.Millisecond}
			}
			enc := json.NewEncoder(stdio.Out)
			events := make(chan wire.FailoverTransition, 1024)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for t := range events {
					_ = enc.Encode(t)
				}
			}()
			reg := prometheus.NewRegistry()
			if metricsAddr != "" {
				ln, err := net.Listen("tcp", metricsAddr)
				if err != nil {
					return err
				}
				srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
				go func() { _ = srv.Serve(ln) }()
				defer srv.Close()
				fmt.Fprintf(stdio.Err, "metrics on http://%s/metrics\n", ln.Addr())
			}
			m, err := member.New(member.Config{Spec: sp.Canonical(), Self: self, KV: kv, Logger: log, Registry: reg,
				Report: func(t wire.FailoverTransition) { events <- t }})
			if err != nil {
				return err
			}
			// The member runs until the command's context ends (SIGTERM), then stops gracefully.
			if err := m.Start(context.WithoutCancel(cmd.Context())); err != nil {
				return err
			}
			<-cmd.Context().Done()
			sctx, scancel := context.WithTimeout(context.Background(), time.Duration(sp.FailoverTimeout)+10*time.Second)
			defer scancel()
			err = m.Stop(sctx)
			close(events)
			<-done
			return err
		},
	}
	cmd.Flags().StringVar(&natsURL, "nats", "", "NATS server URL")
	cmd.Flags().StringVarP(&file, "filename", "f", "", "the FailoverGroup document")
	cmd.Flags().StringVar(&self, "member", "", "this member's agent id")
	cmd.Flags().StringVar(&namespace, "namespace", "godwit", "installation namespace of the group's bucket")
	cmd.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&kvMode, "kv", "jetstream", "how the member reaches the bucket: jetstream (the JetStream API; uses the bucket as it is, or creates it with --replicas) or agent (as an agent does: direct gets and compare-and-set puts only; the bucket must exist)")
	cmd.Flags().IntVar(&replicas, "replicas", 1, "replicas of the group's bucket when --kv jetstream creates it (an existing bucket is never changed)")
	cmd.Flags().StringVar(&metricsAddr, "metrics-listen", "", "serve the member's Prometheus metrics (godwit_failover_*) on this address")
	_ = cmd.MarkFlagRequired("nats")
	_ = cmd.MarkFlagRequired("filename")
	_ = cmd.MarkFlagRequired("member")
	return cmd
}

// openBucketWhenReachable opens (or creates) the group's bucket, trying again until it works or
// ctx ends: NATS may not be up yet, or its JetStream may still be electing a leader.
func openBucketWhenReachable(ctx context.Context, js jetstream.JetStream, namespace, group string, replicas int, log *slog.Logger) (jetstream.KeyValue, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		kv, err := member.OpenBucket(actx, js, namespace, group, replicas)
		cancel()
		if err == nil || ctx.Err() != nil {
			return kv, err
		}
		log.Warn("group bucket not reachable yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Second):
		}
	}
}
