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

// Refused is, for each member whose agent's policy refused a hook of the group since it last
// reported a transition, that refusal (failover.policy.refused): the agent runs no member of
// the group, so its last transition, if any, is not its state.
func Refused(timeline []wire.FailoverTimelineEntry) map[string]wire.FailoverTimelineEntry {
	out := map[string]wire.FailoverTimelineEntry{}
	seen := map[string]bool{}
	for _, e := range timeline {
		if seen[e.Member] {
			continue
		}
		switch {
		case e.Event == wire.EventFailoverPolicyRefused:
			out[e.Member] = e
			seen[e.Member] = true
		case e.Hook == "":
			seen[e.Member] = true
		}
	}
	return out
}
