package controller

import "godwit.dev/godwit/internal/wire"

// ObserveForTest injects an observed document, as one arriving live from the bucket (tests
// without a bucket).
func (c *Controller) ObserveForTest(o wire.ObservedState) { c.observe(o, true) }
