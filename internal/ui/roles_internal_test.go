package ui

import (
	"strings"
	"testing"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/wire"
)

// Every post of the web UI has a role (the capability of the API route it does the work of),
// and every capability names a route of the API's table; a post added without one fails here
// (it would need the admin role meanwhile).
func TestEveryPostHasARole(t *testing.T) {
	s := New(Config{})
	posts := 0
	for _, p := range s.patterns {
		if !strings.HasPrefix(p, "POST ") || p == "POST /ui/login" {
			continue
		}
		posts++
		if _, ok := routeCapabilities[p]; !ok {
			t.Errorf("%s has no entry in routeCapabilities (roles.go)", p)
		}
	}
	if posts < 6 {
		t.Fatalf("only %d posts registered", posts)
	}
	for pattern, capability := range routeCapabilities {
		if capability == "" {
			continue
		}
		route, ok := capabilities[capability]
		if !ok {
			t.Errorf("%s: capability %q unknown", pattern, capability)
			continue
		}
		if need, public := api.RoleFor(route); public || !need.Valid() {
			t.Errorf("capability %s: %s needs %q", capability, route, need)
		}
	}
	// The capabilities need what their API routes need.
	c := &current{}
	for role, may := range map[wire.Role][]string{
		wire.RoleViewer:   nil,
		wire.RoleOperator: {"migrate", "runSweep", "suspendSweep", "replay", "pauseFailover", "resumeFailover", "switchover"},
		wire.RoleAdmin: {"migrate", "runSweep", "suspendSweep", "replay", "purge", "purgeAll", "audit",
			"pauseFailover", "resumeFailover", "switchover"},
	} {
		c.Role = role
		for capability := range capabilities {
			want := false
			for _, m := range may {
				want = want || m == capability
			}
			if c.May(capability) != want {
				t.Errorf("%s may %s: %v, want %v", role, capability, c.May(capability), want)
			}
		}
	}
	if c.May("no such thing") {
		t.Error("an unknown capability is allowed")
	}
}
