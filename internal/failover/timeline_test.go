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
