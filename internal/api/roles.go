package api

import "godwit.dev/godwit/internal/wire"

// routeRoles is the one table of who may call what: every API route with the least role it
// needs (a higher role may do everything a lower one may). A route registered without an
// entry here needs the admin role, and TestEveryRouteHasARole fails until it has one. The web
// UI takes the role of each of its actions from the API route the action mirrors, and
// docs/security.md shows this table (a test keeps the two equal).
var routeRoles = map[string]wire.Role{
	// Reading the fleet's state.
	"GET /api/v1/agents":                  wire.RoleViewer,
	"GET /api/v1/agents/{id}":             wire.RoleViewer,
	"GET /api/v1/status":                  wire.RoleViewer,
	"GET /api/v1/version":                 wire.RoleViewer,
	"GET /api/v1/events":                  wire.RoleViewer,
	"GET /api/v1/dlq":                     wire.RoleViewer,
	"GET /api/v1/dlq/{seq}":               wire.RoleViewer,
	"GET /api/v1/migrations":              wire.RoleViewer,
	"GET /api/v1/migrations/{name}":       wire.RoleViewer,
	"GET /api/v1/sweeps":                  wire.RoleViewer,
	"GET /api/v1/sweeps/{name}":           wire.RoleViewer,
	"GET /api/v1/sweeps/{name}/runs":      wire.RoleViewer,
	"GET /api/v1/sweeps/{name}/runs/{id}": wire.RoleViewer,
	"GET /api/v1/failovergroups":          wire.RoleViewer,
	"GET /api/v1/failovergroups/{name}":   wire.RoleViewer,

	// Changing the fleet's work. A dry run is an apply, and needs what the apply needs.
	"POST /api/v1/migrations":                       wire.RoleOperator,
	"POST /api/v1/migrations/{name}/{action}":       wire.RoleOperator, // pause, resume, approve, abort, rollback, retry
	"DELETE /api/v1/migrations/{name}":              wire.RoleOperator, // a migration in a final state
	"POST /api/v1/check":                            wire.RoleOperator, // fixes what it finds
	"POST /api/v1/sweeps":                           wire.RoleOperator,
	"DELETE /api/v1/sweeps/{name}":                  wire.RoleOperator, // its runs are kept
	"POST /api/v1/sweeps/{name}/runs":               wire.RoleOperator,
	"POST /api/v1/sweeps/{name}/suspend":            wire.RoleOperator, // no scheduled run fires; runs by hand still do
	"POST /api/v1/sweeps/{name}/resume":             wire.RoleOperator,
	"POST /api/v1/agents/{id}/rehydrate":            wire.RoleOperator, // reloads a cache from SQL
	"POST /api/v1/failovergroups":                   wire.RoleOperator,
	"DELETE /api/v1/failovergroups/{name}":          wire.RoleOperator, // its members stop acting on it
	"POST /api/v1/failovergroups/{name}/pause":      wire.RoleOperator, // maintenance: no automatic failover
	"POST /api/v1/failovergroups/{name}/resume":     wire.RoleOperator,
	"POST /api/v1/failovergroups/{name}/switchover": wire.RoleOperator, // fence the primary, promote the member named
	"POST /api/v1/dlq/{seq}/replay":                 wire.RoleOperator, // loses nothing: the event keeps its id

	// Credentials, evidence and the record of who did what.
	"POST /api/v1/agents/{id}/revoke":     wire.RoleAdmin,
	"POST /api/v1/tokens":                 wire.RoleAdmin,
	"GET /api/v1/tokens":                  wire.RoleAdmin,
	"DELETE /api/v1/tokens/{id}":          wire.RoleAdmin,
	"POST /api/v1/api-tokens":             wire.RoleAdmin,
	"GET /api/v1/api-tokens":              wire.RoleAdmin,
	"POST /api/v1/api-tokens/{id}/revoke": wire.RoleAdmin,
	"GET /api/v1/audit":                   wire.RoleAdmin,
	"DELETE /api/v1/dlq/{seq}":            wire.RoleAdmin, // a purged dead letter is gone for good
	"POST /api/v1/dlq/purge":              wire.RoleAdmin,
}

// publicRoutes need no token: enrollment is authenticated by the enrollment token in its body,
// an agent asking whether it is still enrolled by its own NATS credentials.
var publicRoutes = map[string]bool{
	"POST /api/v1/enroll":     true,
	"GET /api/v1/agents/self": true,
}

// RoleFor returns the least role an API route needs (the pattern as registered, e.g.
// "POST /api/v1/migrations/{name}/{action}"); a route without an entry needs the admin role.
// public reports a route that needs no token.
func RoleFor(route string) (need wire.Role, public bool) {
	if publicRoutes[route] {
		return "", true
	}
	if r, ok := routeRoles[route]; ok {
		return r, false
	}
	return wire.RoleAdmin, false
}
