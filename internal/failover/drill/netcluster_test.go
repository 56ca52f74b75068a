package drill

import (
	"testing"
	"time"
)

func natsCluster(t *testing.T, members int, tm Timing) *Cluster {
	t.Helper()
	c, err := NewOnNATSCluster(exe, t.TempDir(), members, tm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAndReport(t, c) })
	return c
}

// waitLog polls the hook log until found returns true.
func waitLog(t *testing.T, c *Cluster, what string, timeout time.Duration, found func([]HookLine) bool) []HookLine {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		lines, err := ReadLog(c.Log)
		if err != nil {
			t.Fatal(err)
		}
		if found(lines) {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not in the hook log after %s; members: %s", what, timeout, c.Describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitState waits until member id reports role/state.
func waitState(t *testing.T, c *Cluster, id, role, state string, timeout time.Duration) uint64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if r, s, e := c.State(id); r == role && s == state {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not %s/%s after %s; members: %s", id, role, state, timeout, c.Describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// On a 3-node JetStream cluster (the bucket R3), the primary's member process is cut off from
// NATS — its connection black-holed by the proxy it reaches its server through, the cluster
// keeping its quorum. The hook log shows the timing rule: the cut-off primary's onFence ended
// before another member's onPromote started; one member per epoch (the checker). Healed, the
// old primary sees the newer epoch, runs onDemote and watches; the new primary keeps its epoch.
func TestPartitionedPrimaryOnNATSCluster(t *testing.T) {
	c := natsCluster(t, 3, FastTiming)
	p := startSettled(t, c)
	_, _, e0 := c.State(p)
	cut := time.Now()
	c.Cut(p)
	var promo HookLine
	lines := waitLog(t, c, "a promotion after the cut", time.Minute, func(ls []HookLine) bool {
		for _, l := range ls {
			if l.Hook == "onPromote" && l.Phase == "start" && l.Member != p && l.Epoch > e0 {
				promo = l
				return true
			}
		}
		return false
	})
	var fenceStart, fenceEnd time.Time
	for _, l := range lines {
		if l.Member == p && l.Hook == "onFence" && l.At.After(cut) {
			if l.Phase == "start" && fenceStart.IsZero() {
				fenceStart = l.At
			}
			if l.Phase == "end" && fenceEnd.IsZero() {
				fenceEnd = l.At
			}
		}
	}
	if fenceEnd.IsZero() {
		t.Fatalf("the cut-off primary %s had not fenced when %s promoted at epoch %d", p, promo.Member, promo.Epoch)
	}
	if !fenceEnd.Before(promo.At) {
		t.Fatalf("the cut-off primary's onFence ended at %s, after %s's onPromote started at %s",
			fenceEnd.Format(time.StampMicro), promo.Member, promo.At.Format(time.StampMicro))
	}
	t.Logf("cut at epoch %d: onFence started %s and ended %s after the cut; onPromote (epoch %d) started %s after the cut, %s after the fence (failoverTimeout %dms)",
		e0, fenceStart.Sub(cut).Round(time.Millisecond), fenceEnd.Sub(cut).Round(time.Millisecond), promo.Epoch,
		promo.At.Sub(cut).Round(time.Millisecond), promo.At.Sub(fenceEnd).Round(time.Millisecond), c.T.Failover)

	// Healed: the old primary demotes and watches; the roles are those of the promotion.
	c.Heal(p)
	waitLog(t, c, "the old primary's onDemote", time.Minute, func(ls []HookLine) bool {
		for _, l := range ls {
			if l.Member == p && l.Hook == "onDemote" && l.Phase == "end" && l.At.After(promo.At) {
				return true
			}
		}
		return false
	})
	waitState(t, c, p, "replica", "watching", time.Minute)
	if e := waitState(t, c, promo.Member, "primary", "healthy", time.Minute); e != promo.Epoch {
		t.Fatalf("after the heal %s is primary at epoch %d, want %d", promo.Member, e, promo.Epoch)
	}
	for _, id := range c.IDs {
		if id != p && id != promo.Member {
			waitState(t, c, id, "replica", "watching", time.Minute)
		}
	}
	hist, err := c.RecordHistory(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if last := hist[len(hist)-1]; last.Primary != promo.Member || last.Epoch != promo.Epoch {
		t.Fatalf("the group record names %s at epoch %d, want %s at %d", last.Primary, last.Epoch, promo.Member, promo.Epoch)
	}
	r := check(t, c)
	if r.Zombies != 0 {
		t.Fatalf("%d zombies: a cut-off member is no paused one, it must fence by the timing rule", r.Zombies)
	}
}

// latencyTiming tolerates a few late heartbeats: 200ms × 8 + 500ms < 2.5s.
var latencyTiming = Timing{Interval: 100, Timeout: 200, Threshold: 8, Margin: 500, Failover: 2500, FenceMS: 300}

// On a 3-node JetStream cluster, the primary's acknowledgements and replies arrive 300 ms late
// (above heartbeatTimeout 200 ms) for half a second — a few late heartbeats, fewer than
// failureThreshold. No hook runs (no fence, no promotion, no demotion), the group record names
// the same primary at the same epoch for more than a failover timeout after the blip on the
// store's clock, and every member keeps its state: no failover, no flap.
func TestLatencyBlipOnNATSCluster(t *testing.T) {
	c := natsCluster(t, 3, latencyTiming)
	p := startSettled(t, c)
	_, _, e0 := c.State(p)
	for _, id := range c.IDs {
		if id != p {
			waitState(t, c, id, "replica", "watching", time.Minute)
		}
	}
	before, err := ReadLog(c.Log)
	if err != nil {
		t.Fatal(err)
	}
	h0, err := c.RecordHistory(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	from := h0[len(h0)-1].Rev
	c.note(p, "delay")
	c.Proxy(p).SetDelay(300 * time.Millisecond)
	time.Sleep(500 * time.Millisecond) // the fault itself: how long NATS answers late
	c.Proxy(p).SetDelay(0)
	c.note(p, "undelay")
	if c.Proxy(p).Held() == 0 {
		t.Fatal("no byte was delayed: the blip did not reach the primary")
	}
	// Gate: the store shows the primary's heartbeats for more than a failover timeout past the
	// blip (its first write, on the store's clock).
	var hist []RecordWrite
	deadline := time.Now().Add(time.Minute)
	for {
		hist, err = c.RecordHistory(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		var first, last time.Time
		for _, w := range hist {
			if w.Rev > from {
				if first.IsZero() {
					first = w.Created
				}
				last = w.Created
			}
		}
		if !first.IsZero() && last.Sub(first) > c.failover()+time.Duration(c.T.Interval)*time.Millisecond*5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat span of a failover timeout after the blip; members: %s", c.Describe())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var gap time.Duration
	prev := time.Time{}
	for _, w := range hist {
		if w.Rev <= from {
			prev = w.Created
			continue
		}
		if w.Primary != p || w.Epoch != e0 {
			t.Fatalf("record write %d names %s at epoch %d (state %s): the primary was %s at %d", w.Rev, w.Primary, w.Epoch, w.State, p, e0)
		}
		if !prev.IsZero() && w.Created.Sub(prev) > gap {
			gap = w.Created.Sub(prev)
		}
		prev = w.Created
	}
	after, err := ReadLog(c.Log)
	if err != nil {
		t.Fatal(err)
	}
	if extra := after[len(before):]; len(extra) > 0 {
		t.Fatalf("hooks ran after the latency blip: %v", extra)
	}
	if r, s, e := c.State(p); r != "primary" || s != "healthy" || e != e0 {
		t.Fatalf("the primary is %s/%s at epoch %d, was healthy at %d", r, s, e, e0)
	}
	for _, id := range c.IDs {
		if r, s, _ := c.State(id); id != p && (r != "replica" || s != "watching") {
			t.Fatalf("replica %s is %s/%s", id, r, s)
		}
	}
	check(t, c)
	t.Logf("%d chunks held 300ms; largest gap between the primary's record writes %s (store clock; heartbeatInterval %dms, heartbeatTimeout %dms)",
		c.Proxy(p).Held(), gap.Round(time.Millisecond), c.T.Interval, c.T.Timeout)
}
