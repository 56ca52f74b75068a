package controller

import "godwit.dev/godwit/internal/wire"

// ObserveForTest injects an observed document (tests without a bucket).
func (c *Controller) ObserveForTest(o wire.ObservedState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observed[o.AgentID] = o
	c.heardAt[o.AgentID] = c.cfg.Clock.Now()
}
