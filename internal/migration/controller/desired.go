package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"godwit.dev/godwit/internal/wire"
)

// writeDesired puts each agent's desired document into the desired bucket when it differs from
// what this controller last wrote. An agent whose work is over gets an empty document, so it
// does not keep acting on a finished request. Documents carry the controller's epoch.
func (c *Controller) writeDesired(ctx context.Context, desired map[string][]wire.DesiredAssignment) error {
	c.mu.Lock()
	epoch := c.epoch
	agents := make([]string, 0, len(desired)+len(c.written))
	for id := range desired {
		agents = append(agents, id)
	}
	for id := range c.written {
		if _, ok := desired[id]; !ok {
			agents = append(agents, id)
		}
	}
	c.mu.Unlock()
	sort.Strings(agents)
	var errs []error
	for _, id := range agents {
		as := desired[id]
		sort.Slice(as, func(i, j int) bool { return as[i].Migration < as[j].Migration })
		doc, err := json.Marshal(wire.DesiredState{AgentID: id, Epoch: epoch, Assignments: nonNil(as)})
		if err != nil {
			return err
		}
		c.mu.Lock()
		same := c.written[id] == string(doc)
		c.mu.Unlock()
		if same {
			continue
		}
		if _, err := c.cfg.Desired.Put(ctx, id, doc); err != nil {
			errs = append(errs, fmt.Errorf("desired state of %s: %w", id, err))
			continue
		}
		c.mu.Lock()
		if len(as) == 0 {
			delete(c.written, id)
		} else {
			c.written[id] = string(doc)
		}
		c.mu.Unlock()
	}
	return errors.Join(errs...)
}

func nonNil(as []wire.DesiredAssignment) []wire.DesiredAssignment {
	if as == nil {
		return []wire.DesiredAssignment{}
	}
	return as
}
