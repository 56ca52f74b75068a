package drill

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	exe    string
	trials = flag.Int("failover.trials", 20, "randomized fault steps of TestRandomizedTrials (≥ 200 for the long run)")
	seedF  = flag.Uint64("failover.seed", 0, "seed of TestRandomizedTrials (0: from the clock)")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("drill: skipped in -short mode")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "godwit-drill-bin")
	if err != nil {
		panic(err)
	}
	exe = filepath.Join(dir, "godwit")
	cmd := exec.Command("go", "build", "-o", exe, "../../../cmd/godwit")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Println("drill: build failed:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func cluster(t *testing.T, members int) *Cluster {
	t.Helper()
	c, err := New(exe, t.TempDir(), members, FastTiming)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAndReport(t, c) })
	return c
}

// closeAndReport closes c and, when the test failed, logs the hook log, the members' states,
// the faults injected and the tail of each member's own log.
func closeAndReport(t *testing.T, c *Cluster) {
	c.Close()
	if !t.Failed() {
		return
	}
	b, _ := os.ReadFile(c.Log)
	t.Logf("hook log:\n%s", b)
	t.Logf("members: %s", c.Describe())
	for _, f := range c.Faults() {
		t.Logf("fault %d %s %s", f.At.UnixNano(), f.What, f.Member)
	}
	for _, id := range c.IDs {
		b, _ := os.ReadFile(filepath.Join(c.Dir, id+".log"))
		t.Logf("member %s log (last 4000 bytes):\n%s", id, b[max(0, len(b)-4000):])
	}
}

// startSettled starts every member and returns the primary once the group has settled.
func startSettled(t *testing.T, c *Cluster) string {
	t.Helper()
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	p, err := c.settle(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func check(t *testing.T, c *Cluster) Report {
	t.Helper()
	lines, err := ReadLog(c.Log)
	if err != nil {
		t.Fatal(err)
	}
	r := Check(lines, c.Faults(), time.Duration(c.T.Failover)*time.Millisecond)
	for _, v := range r.Violations {
		t.Error(v)
	}
	return r
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// Both members start at once: exactly one primary. Then the primary is killed: the replica
// promotes after failoverTimeout — measured between the two writes on the store's clock — and
// not before. The killed member restarts and joins as replica.
func TestKillAndSimultaneousStart(t *testing.T) {
	c := cluster(t, 2)
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	delays, err := c.PromotionDelays(ctx(t), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range delays {
		if d < time.Duration(c.T.Failover)*time.Millisecond {
			t.Errorf("promoted %s after the dead primary's last heartbeat, before failoverTimeout %dms", d, c.T.Failover)
		}
	}
	r := check(t, c)
	if r.Promotions < 3 {
		t.Fatalf("%d promotions, want the bootstrap and one per kill", r.Promotions)
	}
}

// A primary paused (SIGSTOP) past the failover timeout is replaced; resumed, it sees the newer
// epoch and fences before anything else, then runs onDemote and joins as replica (the demotion
// handshake of a returning old primary).
func TestPausedPrimaryFencesFirstAndDemotes(t *testing.T) {
	c := cluster(t, 2)
	p := startSettled(t, c)
	c.Pause(p)
	if _, err := c.WaitPrimary(ctx(t), p); err != nil {
		t.Fatal(err)
	}
	c.Resume(p)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r, s, _ := c.State(p); r == "replica" && s == "watching" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resumed old primary did not join as replica: %v", func() []string { r, s, _ := c.State(p); return []string{r, s} }())
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := check(t, c)
	if r.Zombies != 1 {
		t.Fatalf("%d zombies, want the paused primary", r.Zombies)
	}
	lines, _ := ReadLog(c.Log)
	var seq []string
	for _, l := range lines {
		if l.Member == p && l.Phase == "start" {
			seq = append(seq, l.Hook)
		}
	}
	// onFence may run more than once: a fence that failed or timed out (its timeout is 300 ms,
	// which a loaded machine can exceed) is tried again before the member demotes.
	got := strings.Join(seq, " ")
	if !regexp.MustCompile(`(^| )onPromote( onFence)+ onDemote$`).MatchString(got) {
		t.Fatalf("the old primary's hooks: %q, want them to end with onPromote, onFence (once or more), onDemote", got)
	}
}

// A switchover asked through the control key: the primary fences, the named member promotes
// at once (well before the failover timeout), the old primary demotes.
func TestSwitchover(t *testing.T) {
	c := cluster(t, 3)
	p := startSettled(t, c)
	_, _, epoch := c.State(p)
	to := c.IDs[2]
	if to == p {
		to = c.IDs[1]
	}
	asked := time.Now()
	if err := c.Switchover(ctx(t), to, epoch); err != nil {
		t.Fatal(err)
	}
	got, err := c.WaitPrimary(ctx(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if got != to {
		t.Fatalf("%s promoted, want %s", got, to)
	}
	t.Logf("switchover took %s (failoverTimeout %dms)", time.Since(asked).Round(time.Millisecond), c.T.Failover)
	check(t, c)
}

// Randomized trials on a 3-node JetStream cluster, each member behind its proxy: kills, pauses
// around the timeout, graceful stops, restarts, cuts of the primary or a replica off from NATS,
// latency blips above heartbeatTimeout on the primary or a replica, on a group of three. The
// first steps take every kind once (in random order), the rest are drawn at random; the checker
// proves that no two members were primary at once under any epoch, a cut member held to the
// same rules as any running member.
func TestRandomizedTrials(t *testing.T) {
	c := natsCluster(t, 3, FastTiming)
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	seed := *seedF
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d, %d steps", seed, *trials)
	rng := rand.New(rand.NewPCG(seed, 1))
	if *trials < c.Kinds() {
		t.Fatalf("-failover.trials %d: fewer than the %d kinds of fault, each of which the trials take once", *trials, c.Kinds())
	}
	tctx, cancel := context.WithTimeout(t.Context(), time.Duration(*trials)*30*time.Second)
	defer cancel()
	first := rng.Perm(c.Kinds())
	counts := map[string]int{}
	for i := range *trials {
		kind := rng.IntN(c.Kinds())
		if i < len(first) {
			kind = first[i]
		}
		what, err := c.StepKind(tctx, rng, kind)
		if err != nil {
			t.Fatalf("step %d (%s): %v; members: %s", i+1, what, err, c.Describe())
		}
		t.Logf("step %d: %s", i+1, what)
		f := strings.Fields(what)
		counts[f[0]+" "+f[1]]++
	}
	if len(counts) != c.Kinds() {
		t.Fatalf("steps %v: not every one of the %d kinds ran", counts, c.Kinds())
	}
	r := check(t, c)
	t.Logf("steps %v; %d promotions, %d zombies fenced first", counts, r.Promotions, r.Zombies)
}
