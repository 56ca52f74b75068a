package failover

import (
	"testing"

	"godwit.dev/godwit/internal/wire"
)

// A member's latest transition is the newest that is not a hook result.
func TestLatest(t *testing.T) {
	entry := func(member, to, hook string, epoch uint64) wire.FailoverTimelineEntry {
		return wire.FailoverTimelineEntry{FailoverTransition: wire.FailoverTransition{Member: member, To: to, Hook: hook, Epoch: epoch}}
	}
	got := Latest([]wire.FailoverTimelineEntry{ // newest first
		entry("a", "fenced", "onFence", 5),
		entry("a", "fencing", "", 5),
		entry("b", "healthy", "", 9),
		entry("a", "healthy", "", 5),
		entry("b", "watching", "", 5),
	})
	if len(got) != 2 || got["a"].To != "fencing" || got["b"].To != "healthy" || got["b"].Epoch != 9 {
		t.Fatalf("latest = %+v", got)
	}
	if len(Latest(nil)) != 0 {
		t.Fatal("an empty timeline has latest transitions")
	}
}

// A policy refusal is a member's current standing only when it is newer than the member's
// latest transition.
func TestRefused(t *testing.T) {
	refused := func(member, hook string) wire.FailoverTimelineEntry {
		return wire.FailoverTimelineEntry{Event: wire.EventFailoverPolicyRefused,
			FailoverTransition: wire.FailoverTransition{Member: member, Hook: hook, HookResult: "refused"}}
	}
	moved := func(member, to string) wire.FailoverTimelineEntry {
		return wire.FailoverTimelineEntry{Event: wire.EventFailoverTransition, FailoverTransition: wire.FailoverTransition{Member: member, To: to}}
	}
	hook := func(member string) wire.FailoverTimelineEntry {
		return wire.FailoverTimelineEntry{Event: wire.EventFailoverTransition, FailoverTransition: wire.FailoverTransition{Member: member, Hook: "onDemote", HookResult: "succeeded"}}
	}
	got := Refused([]wire.FailoverTimelineEntry{ // newest first
		refused("a", "onFence"),
		hook("b"),
		refused("b", "onPromote"),
		moved("c", "watching"),
		refused("c", "onFence"), // older than c's transition: c runs a member since
		moved("a", "healthy"),
		refused("a", "healthCheck"),
	})
	if len(got) != 2 || got["a"].Hook != "onFence" || got["b"].Hook != "onPromote" {
		t.Fatalf("refused = %+v", got)
	}
	if l := Latest([]wire.FailoverTimelineEntry{refused("a", "onFence")}); len(l) != 0 {
		t.Fatalf("a refusal taken for a transition: %+v", l)
	}
}
