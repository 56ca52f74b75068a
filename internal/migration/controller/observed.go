package controller

import (
	"context"
	"encoding/json"
	"reflect"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"godwit.dev/godwit/internal/wire"
)

// watchObserved keeps the latest observed document of every agent, restarting the watch if it
// breaks (NATS restarted). Its initial values give a restarted hub every agent's last report.
func (c *Controller) watchObserved(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := c.cfg.Observed.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err != nil {
			c.log.Warn("migration controller: watch observed state", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(c.cfg.Interval):
			}
			continue
		}
		// The values delivered before the watch's first nil are the stored reports; only what
		// arrives after it is an agent heard from again.
		live := false
	updates:
		for {
			var e jetstream.KeyValueEntry
			var ok bool
			select {
			case <-ctx.Done():
				_ = w.Stop()
				return
			case <-c.rewatch:
				// The bus came back: watch again from the stored values rather than wait for
				// the old watch to notice that its server went away.
				break updates
			case e, ok = <-w.Updates():
				if !ok {
					break updates
				}
			}
			if e == nil {
				live = true
				c.markSynced()
				continue
			}
			var o wire.ObservedState
			if err := json.Unmarshal(e.Value(), &o); err != nil || o.AgentID != e.Key() {
				c.log.Warn("migration controller: ignoring malformed observed state", "agent", e.Key())
				continue
			}
			c.observe(o, live)
		}
		_ = w.Stop()
	}
}

// observe records an agent's observed document (heard from again when live) and asks for a
// pass, which looks at that agent again.
func (c *Controller) observe(o wire.ObservedState, live bool) {
	c.mu.Lock()
	prev, had := c.observed[o.AgentID]
	for _, e := range o.Assignments {
		if !had || !holdsEntry(prev, e) {
			c.obsMigrations[e.Migration] = true
		}
	}
	c.observed[o.AgentID] = o
	c.obsChanged[o.AgentID] = true
	if live {
		c.heardAt[o.AgentID] = c.cfg.Clock.Now()
	}
	c.mu.Unlock()
	c.Nudge()
}

func (c *Controller) markSynced() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.synced:
	default:
		close(c.synced)
	}
}

// holdsEntry reports whether doc holds an entry equal to e. An agent republishes its observed
// document every minute, and each document lists every migration the agent still knows: an
// entry repeated as it was cannot make anything apply anew, so it does not wake a finished
// migration (see idle). An entry an agent dropped cannot either: a pass acts only on the
// entries present.
func holdsEntry(doc wire.ObservedState, e wire.ObservedAssignment) bool {
	for _, p := range doc.Assignments {
		if p.Migration == e.Migration && p.Attempt == e.Attempt {
			return reflect.DeepEqual(p, e)
		}
	}
	return false
}
