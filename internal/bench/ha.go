package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/wire"
)

// HAConfig configures the leader failover benchmark.
type HAConfig struct {
	Out      io.Writer
	Kills    int
	Postgres string // server DSN to create a temporary database on ("" : DefaultPostgres)
	TTL      time.Duration
	Renew    time.Duration
	Call     time.Duration
	Margin   time.Duration
	TempDir  string
	Keep     bool
}

// HAResult is what RunHA measured.
type HAResult struct {
	// Failovers are the times from each kill to the start of the next term: the Since its new
	// leader reports (taken by its lease when the term began, on the same machine's clock).
	Failovers []time.Duration
	// Observed are the times from each kill to the first answer of a survivor's status saying
	// it leads: Failovers plus the time the status took to say so.
	Observed []time.Duration
}

// haReplica is one hub child process of the benchmark's cluster.
type haReplica struct {
	dir, natsAddr, routeAddr string
	args                     []string
	h                        *hubUnderTest
}

// RunHA starts three hub processes on one PostgreSQL database with their embedded NATS servers
// in one JetStream cluster (R3), then Kills times kills the leader with SIGKILL and times how
// long until another replica's status says it leads (polled every 5 ms), restarting the killed
// one before the next kill. It prints min, median, p99 and max next to the configured ttl.
func RunHA(ctx context.Context, cfg HAConfig) (HAResult, error) {
	var res HAResult
	if cfg.Kills < 1 {
		return res, errors.New("bench ha: --kills must be at least 1")
	}
	if cfg.Postgres == "" {
		cfg.Postgres = DefaultPostgres
	}
	dsn, drop, err := postgres.TempDatabase(ctx, cfg.Postgres, "godwit_bench_")
	if err != nil {
		return res, fmt.Errorf("bench ha: %w", err)
	}
	defer func() { _ = drop() }()
	root, err := os.MkdirTemp(cfg.TempDir, "godwit-bench-ha-")
	if err != nil {
		return res, err
	}
	if !cfg.Keep {
		defer os.RemoveAll(root)
	}
	exe, err := os.Executable()
	if err != nil {
		return res, err
	}
	reps := make([]*haReplica, 3)
	for i := range reps {
		reps[i] = &haReplica{dir: filepath.Join(root, fmt.Sprintf("hub-%d", i))}
		if reps[i].natsAddr, err = freeLoopback(); err != nil {
			return res, err
		}
		if reps[i].routeAddr, err = freeLoopback(); err != nil {
			return res, err
		}
	}
	for i, r := range reps {
		r.args = []string{"hub", "--data-dir", r.dir, "--listen", "127.0.0.1:0", "--nats-listen", r.natsAddr,
			"--nats-cluster-listen", r.routeAddr, "--nats-replicas", "3", "--database", dsn, "--log-format", "json",
			"--lease-ttl", cfg.TTL.String(), "--lease-renew-interval", cfg.Renew.String(),
			"--lease-call-timeout", cfg.Call.String(), "--lease-margin", cfg.Margin.String(), "--shutdown-timeout", "5s"}
		for j, o := range reps {
			if j != i {
				r.args = append(r.args, "--nats-route", "nats://"+o.routeAddr)
			}
		}
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for _, r := range reps {
			if r.h != nil {
				_ = r.h.stop(sctx)
			}
		}
	}()
	for _, r := range reps {
		if err := r.launch(exe); err != nil {
			return res, err
		}
	}
	for _, r := range reps {
		if err := r.ready(ctx, reps); err != nil {
			return res, err
		}
	}
	fmt.Fprintf(cfg.Out, "3 hub processes, PostgreSQL, embedded JetStream cluster (R3); lease ttl %s, renew %s, call timeout %s, margin %s; %d kills\n",
		cfg.TTL, cfg.Renew, cfg.Call, cfg.Margin, cfg.Kills)
	for k := range cfg.Kills {
		// The leader now, as every replica sees it: the lease may have moved since the last
		// failover (a restarted replica's NATS server takes over a stream).
		lead, epoch, err := haAgreed(ctx, reps, 2*time.Minute)
		if err != nil {
			return res, err
		}
		// Kill at varied points of the leader's renew cycle.
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(time.Duration(k%7) * cfg.Renew / 7):
		}
		victim := reps[lead]
		killed := time.Now()
		_ = victim.h.cmd.Process.Signal(syscall.SIGKILL)
		next, err := haLeader(ctx, reps, lead, epoch, 10*cfg.TTL+time.Minute)
		if err != nil {
			return res, fmt.Errorf("kill %d: %w", k+1, err)
		}
		d, seen := next.since.Sub(killed), next.seen.Sub(killed)
		res.Failovers = append(res.Failovers, d)
		res.Observed = append(res.Observed, seen)
		fmt.Fprintf(cfg.Out, "kill %3d at %s: hub-%d (epoch %d) → hub-%d (epoch %d): leads after %s, its status said so after %s\n",
			k+1, killed.UTC().Format("15:04:05.000"), lead, epoch, next.replica, next.epoch, d.Round(time.Millisecond), seen.Round(time.Millisecond))
		<-victim.h.exit
		if err := victim.launch(exe); err != nil {
			return res, err
		}
		if err := victim.ready(ctx, reps); err != nil {
			return res, err
		}
	}
	fmt.Fprintf(cfg.Out, "\nleader failover (kill -9 → a survivor leads), %d kills:\n", len(res.Failovers))
	fmt.Fprintf(cfg.Out, "  term began     %s\n", haQuantiles(res.Failovers))
	fmt.Fprintf(cfg.Out, "  status said so %s\n", haQuantiles(res.Observed))
	fmt.Fprintf(cfg.Out, "  configured ttl %s, ttl + renew %s; within ttl + renew: %d of %d\n",
		cfg.TTL, cfg.TTL+cfg.Renew, countWithin(res.Failovers, cfg.TTL+cfg.Renew), len(res.Failovers))
	return res, nil
}

func (r *haReplica) launch(exe string) error {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(r.dir+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, r.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("hub child process: %w", err)
	}
	r.h = &hubUnderTest{cmd: cmd, pid: strconv.Itoa(cmd.Process.Pid), exit: make(chan error, 1)}
	go func() { r.h.exit <- cmd.Wait() }()
	return nil
}

// ready waits for the replica; the admin token is in the data dir of whichever replica made it
// and is copied to the others.
func (r *haReplica) ready(ctx context.Context, all []*haReplica) error {
	tokenFile := filepath.Join(r.dir, wire.AdminTokenFile)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := os.Stat(tokenFile); err != nil {
			for _, o := range all {
				if b, err := os.ReadFile(filepath.Join(o.dir, wire.AdminTokenFile)); err == nil {
					_ = os.WriteFile(tokenFile, b, 0o600)
					break
				}
			}
		}
		select {
		case err := <-r.h.exit:
			r.h.exit <- err
			return fmt.Errorf("hub %s exited before it was ready: %v (log %s.log)", r.dir, err, r.dir)
		default:
		}
		if err := r.h.tryReady(ctx, r.dir); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("hub %s not ready: %w (log %s.log)", r.dir, err, r.dir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// haAgreed waits until every replica names the same leader, which says it leads itself.
func haAgreed(ctx context.Context, reps []*haReplica, timeout time.Duration) (int, int64, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		lead, leader, epoch, agreed := -1, "", int64(0), true
		for i, r := range reps {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			var st wire.HubStatus
			err := r.h.api.do(cctx, "GET", "/api/v1/status", nil, &st)
			cancel()
			if err != nil || st.Leadership == nil || st.Leadership.Leader == "" || (leader != "" && st.Leadership.Leader != leader) {
				agreed = false
				break
			}
			leader = st.Leadership.Leader
			if st.Leadership.Replica == leader {
				lead, epoch = i, st.Leadership.Epoch
			}
		}
		if agreed && lead >= 0 {
			return lead, epoch, nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return 0, 0, fmt.Errorf("the replicas did not agree on a leader within %s", timeout)
}

// haNext is the replica that led after a kill.
type haNext struct {
	replica int
	epoch   int64
	since   time.Time // when its term began, as its status says
	seen    time.Time // when its status first said so
}

// haLeader polls every replica but skip, each in its own goroutine every 5 ms (one replica's
// slow answer delays no other's), until one says it leads under an epoch above after.
func haLeader(ctx context.Context, reps []*haReplica, skip int, after int64, timeout time.Duration) (haNext, error) {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	found := make(chan haNext, len(reps))
	for i, r := range reps {
		if i == skip || r.h == nil || r.h.api == nil {
			continue
		}
		go func() {
			for pctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(pctx, time.Second)
				var st wire.HubStatus
				err := r.h.api.do(cctx, "GET", "/api/v1/status", nil, &st)
				ccancel()
				if err == nil && st.Leadership != nil && st.Leadership.Leader == st.Leadership.Replica && st.Leadership.Epoch > after {
					found <- haNext{replica: i, epoch: st.Leadership.Epoch, since: st.Leadership.Since, seen: time.Now()}
					return
				}
				select {
				case <-pctx.Done():
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
	}
	select {
	case n := <-found:
		return n, nil
	case <-pctx.Done():
		if ctx.Err() != nil {
			return haNext{}, ctx.Err()
		}
		return haNext{}, fmt.Errorf("no replica led within %s", timeout)
	}
}

// haQuantiles formats min, median, p99 and max of ds.
func haQuantiles(ds []time.Duration) string {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))].Round(time.Millisecond) }
	return fmt.Sprintf("min %s  median %s  p99 %s  max %s", s[0].Round(time.Millisecond), q(0.5), q(0.99), s[len(s)-1].Round(time.Millisecond))
}

func countWithin(ds []time.Duration, bound time.Duration) int {
	n := 0
	for _, d := range ds {
		if d <= bound {
			n++
		}
	}
	return n
}

func freeLoopback() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
