package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"time"

	member "godwit.dev/godwit/internal/agent/failover"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/lease"
)

// StartAll starts every member at once.
func (c *Cluster) StartAll() error {
	for _, id := range c.IDs {
		if err := c.Start(id); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) failover() time.Duration { return time.Duration(c.T.Failover) * time.Millisecond }

// settle waits for one healthy primary and for every live member to have reported a state
// (a member reports one once its first read of the store answered: it is connected, and a
// later cut only makes it reconnect — a cut during its first connection would end it, as a
// member whose first connection fails exits).
func (c *Cluster) settle(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*c.failover()+10*time.Second)
	defer cancel()
	for {
		reported := true
		for _, id := range c.IDs {
			if r, _, _ := c.State(id); c.Alive(id) && r == "" {
				reported = false
			}
		}
		if reported {
			break
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("a member reported no state: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return c.WaitPrimary(ctx, "")
}

// Kinds is how many kinds of fault Step picks from: 6 (kills, pauses, a graceful stop, a
// restart), and 4 more on a cluster with proxies (NewOnNATSCluster): a cut of the primary, a
// cut of a replica, a latency blip on the primary, a latency blip on a replica.
func (c *Cluster) Kinds() int {
	if len(c.proxies) > 0 {
		return 10
	}
	return 6
}

// Step applies one random fault to the group and waits until it has one healthy primary again.
// It returns what it did: a kind of two words ("kill primary", "cut replica") and details.
func (c *Cluster) Step(ctx context.Context, rng *rand.Rand) (string, error) {
	return c.StepKind(ctx, rng, rng.IntN(c.Kinds()))
}

// StepKind is Step with the kind of fault given (0 ≤ kind < Kinds()); rng draws its durations.
func (c *Cluster) StepKind(ctx context.Context, rng *rand.Rand, kind int) (string, error) {
	if kind < 0 || kind >= c.Kinds() {
		return "", fmt.Errorf("fault kind %d: this drill has kinds 0 to %d", kind, c.Kinds()-1)
	}
	// Between steps every member runs: one that exited on its own is a finding, not a fault
	// the drill applied (it would leave the group smaller for every later step).
	for _, id := range c.IDs {
		if pr := c.proc(id); pr != nil && !c.Alive(id) {
			return "", fmt.Errorf("member %s exited on its own (%s); its log: %s", id, pr.cmd.ProcessState, filepath.Join(c.Dir, id+".log"))
		}
	}
	p, err := c.settle(ctx)
	if err != nil {
		return "", err
	}
	var replica string
	for _, id := range c.IDs {
		if id != p && c.Alive(id) {
			replica = id
		}
	}
	ft := c.failover()
	wait := func(not string) error {
		wctx, cancel := context.WithTimeout(ctx, 20*ft+10*time.Second)
		defer cancel()
		_, err := c.WaitPrimary(wctx, not)
		return err
	}
	// around draws a duration from lo to hi times the failover timeout.
	around := func(lo, hi float64) time.Duration {
		return time.Duration(float64(ft) * (lo + (hi-lo)*rng.Float64())).Round(time.Millisecond)
	}
	// blip delays the server's bytes to member id by more than heartbeatTimeout for d.
	blip := func(id string, d time.Duration) time.Duration {
		lag := time.Duration(c.T.Timeout) * time.Millisecond * 3 / 2
		c.note(id, "delay")
		c.proxies[id].SetDelay(lag)
		time.Sleep(d) // the fault itself: how long NATS answers late
		c.proxies[id].SetDelay(0)
		c.note(id, "undelay")
		return lag
	}
	switch n := kind; {
	case n == 0 || replica == "": // kill the primary, restart it once replaced
		what := "kill primary"
		if replica == "" {
			what += " (no live replica: " + c.Describe() + ")"
		}
		c.Kill(p)
		if replica != "" {
			if err := wait(p); err != nil {
				return what, err
			}
		}
		return what, c.Start(p)
	case n == 1: // pause the primary for a random time around the failover timeout
		d := around(0.2, 2)
		c.Pause(p)
		time.Sleep(d)
		c.Resume(p)
		return fmt.Sprintf("pause primary %s", d), wait("")
	case n == 2: // graceful stop of the primary: hand over
		c.Term(p)
		if err := wait(p); err != nil {
			return "stop primary", err
		}
		return "stop primary", c.Start(p)
	case n == 3: // restart of the primary within the timeout: reconciles
		c.Kill(p)
		if err := c.Start(p); err != nil {
			return "restart primary", err
		}
		return "restart primary", wait("")
	case n == 4: // kill a replica
		c.Kill(replica)
		return "kill replica", c.Start(replica)
	case n == 5: // pause a replica past the timeout
		c.Pause(replica)
		time.Sleep(around(0.5, 1.5))
		c.Resume(replica)
		return "pause replica", wait("")
	case n == 6: // cut the primary off from NATS for a random time around the failover timeout
		d := around(0.2, 2)
		c.Cut(p)
		time.Sleep(d) // the fault itself
		c.Heal(p)
		return fmt.Sprintf("cut primary %s", d), c.waitSettled(ctx)
	case n == 7: // cut a replica off, past the timeout or not
		d := around(0.2, 2)
		c.Cut(replica)
		time.Sleep(d)
		c.Heal(replica)
		return fmt.Sprintf("cut replica %s", d), c.waitSettled(ctx)
	case n == 8: // the primary's acknowledgements late for a while
		d := around(0.2, 1.5)
		lag := blip(p, d)
		return fmt.Sprintf("delay primary %s for %s", lag, d), c.waitSettled(ctx)
	default: // a replica's replies late for a while
		d := around(0.2, 1.5)
		lag := blip(replica, d)
		return fmt.Sprintf("delay replica %s for %s", lag, d), c.waitSettled(ctx)
	}
}

// waitSettled waits until one live member is a healthy primary and every other live member
// watches as a replica: the outcome of a cut or a blip once it has ended, whichever member the
// group kept or chose.
func (c *Cluster) waitSettled(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*c.failover()+10*time.Second)
	defer cancel()
	for {
		p, ok := c.Primary()
		settled := ok
		for _, id := range c.IDs {
			if !settled {
				break
			}
			if id == p || !c.Alive(id) {
				continue
			}
			if r, s, _ := c.State(id); r != "replica" || s != "watching" {
				settled = false
			}
		}
		if settled {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the group did not settle (one healthy primary, the others watching): %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Switchover asks the primary of epoch to hand over to to, as the hub does: a compare-and-set
// of the control key.
func (c *Cluster) Switchover(ctx context.Context, to string, epoch uint64) error {
	b, _ := json.Marshal(member.Control{SwitchoverTo: to, SwitchoverEpoch: epoch})
	cell := lease.Cell{KV: c.kv, Key: member.KeyControl, Timeout: 5 * time.Second}
	e, err := cell.Read(ctx)
	switch {
	case errors.Is(err, fault.ErrNotFound):
		_, err = cell.Create(ctx, b)
	case err == nil:
		_, err = cell.Swap(ctx, e.Revision, b)
	}
	return err
}

// PromotionDelays kills the primary n times and returns, for each kill, the store time from
// the dead primary's last write of the group record to the promoting write of its successor
// (both on the server's clock), restarting the killed member as a replica each time.
func (c *Cluster) PromotionDelays(ctx context.Context, n int, progress func(i int, d time.Duration)) ([]time.Duration, error) {
	var out []time.Duration
	for i := range n {
		p, err := c.settle(ctx)
		if err != nil {
			return out, err
		}
		c.Kill(p)
		wctx, cancel := context.WithTimeout(ctx, 20*c.failover()+10*time.Second)
		next, err := c.WaitPrimary(wctx, p)
		cancel()
		if err != nil {
			return out, err
		}
		hist, err := c.RecordHistory(ctx)
		if err != nil {
			return out, err
		}
		d, ok := delay(hist, p, next)
		if !ok {
			return out, fmt.Errorf("kill %d: no promotion of %s after %s in the record's history", i+1, next, p)
		}
		out = append(out, d)
		if progress != nil {
			progress(i, d)
		}
		if err := c.Start(p); err != nil {
			return out, err
		}
	}
	return out, nil
}

// delay finds the last promotion of next (a write naming it with no epoch) and the write by
// old just before it.
func delay(hist []RecordWrite, old, next string) (time.Duration, bool) {
	for i := len(hist) - 1; i > 0; i-- {
		if hist[i].Primary == next && hist[i].Epoch == 0 {
			for j := i - 1; j >= 0; j-- {
				if hist[j].Primary == old {
					return hist[i].Created.Sub(hist[j].Created), true
				}
			}
			return 0, false
		}
	}
	return 0, false
}
