package failover

import "godwit.dev/godwit/internal/wire"

// Latest is each member's latest transition in a timeline (newest first, as the hub serves it),
// hook results aside: its role, state and epoch as it last reported them. `godwit describe
// failovergroup` and the web UI read members' states here.
func Latest(timeline []wire.FailoverTimelineEntry) map[string]wire.FailoverTimelineEntry {
	latest := map[string]wire.FailoverTimelineEntry{}
	for _, e := range timeline {
		if _, seen := latest[e.Member]; !seen && e.Hook == "" {
			latest[e.Member] = e
		}
	}
	return latest
}
