package api

import (
	"net/http"

	"godwit.dev/godwit/internal/buildinfo"
)

// version answers GET /api/v1/version: the hub binary's build (what `godwit version` prints as
// the hub's side). Cheap on purpose, unlike /status, which counts the fleet.
func (s *Server) version(*http.Request) (any, error) { return buildinfo.Get(), nil }
