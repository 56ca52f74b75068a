package ui

import (
	"bytes"
	"net/http"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/wire"
)

// capabilities name what a session may be offered, each by the API route that does the same
// work: a session may do it when its role reaches that route's (api.RoleFor), so the API's one
// table decides for the UI too. Templates ask with .Session.May "name".
var capabilities = map[string]string{
	"migrate":        "POST /api/v1/migrations/{name}/{action}",
	"runSweep":       "POST /api/v1/sweeps/{name}/runs",
	"suspendSweep":   "POST /api/v1/sweeps/{name}/suspend",
	"replay":         "POST /api/v1/dlq/{seq}/replay",
	"purge":          "DELETE /api/v1/dlq/{seq}",
	"purgeAll":       "POST /api/v1/dlq/purge",
	"audit":          "GET /api/v1/audit",
	"pauseFailover":  "POST /api/v1/failovergroups/{name}/pause",
	"resumeFailover": "POST /api/v1/failovergroups/{name}/resume",
	"switchover":     "POST /api/v1/failovergroups/{name}/switchover",
}

// routeCapabilities gives every web UI post, and every page that needs more than a viewer, the
// capability it exercises. A post missing here needs the admin role (TestEveryPostHasARole
// fails until it has an entry); logout needs only a session.
var routeCapabilities = map[string]string{
	"POST /ui/logout":                           "",
	"POST /ui/migrations/{name}/{action}":       "migrate",
	"POST /ui/sweeps/{name}/run":                "runSweep",
	"POST /ui/sweeps/{name}/suspend":            "suspendSweep",
	"POST /ui/sweeps/{name}/resume":             "suspendSweep",
	"POST /ui/dead-letters/{seq}/replay":        "replay",
	"POST /ui/dead-letters/{seq}/purge":         "purge",
	"POST /ui/dead-letters/purge":               "purgeAll",
	"GET /ui/audit":                             "audit",
	"POST /ui/failovergroups/{name}/pause":      "pauseFailover",
	"POST /ui/failovergroups/{name}/resume":     "resumeFailover",
	"POST /ui/failovergroups/{name}/switchover": "switchover",
}

// need is the API route a UI route does the work of and the role it needs.
func (s *Server) need(pattern string) (route string, role wire.Role) {
	capability, ok := routeCapabilities[pattern]
	if !ok {
		return pattern, wire.RoleAdmin
	}
	if capability == "" {
		return pattern, wire.RoleViewer
	}
	route = capabilities[capability]
	role, public := api.RoleFor(route)
	if public {
		role = wire.RoleViewer
	}
	return route, role
}

// recorder holds an answer until the call is audited, so that a client that has its answer
// finds the call in the audit log.
type recorder struct {
	header http.Header
	code   int
	wrote  bool
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}, code: http.StatusOK} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}

// WriteHeader keeps the first status, as a real response does.
func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.code, r.wrote = code, true
	}
}

// replay writes the held answer to w.
func (r *recorder) replay(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.code)
	_, _ = w.Write(r.body.Bytes())
}
