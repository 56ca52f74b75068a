package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// Sweeps is what the API needs of the sweep service (sweep.Service). Every replica serves it:
// triggers take the sweep's lock in SQL, and the leader drives the runs.
type Sweeps interface {
	Apply(ctx context.Context, yamlSpec []byte, dryRun bool) (wire.SweepApplyResult, error)
	Get(ctx context.Context, name string) (wire.SweepSummary, error)
	List(ctx context.Context) ([]wire.SweepSummary, error)
	Delete(ctx context.Context, name string) error
	Trigger(ctx context.Context, name string, req wire.SweepTriggerRequest) (wire.SweepRun, error)
	Runs(ctx context.Context, name string, limit int) ([]wire.SweepRun, error)
	Run(ctx context.Context, name, id string) (wire.SweepRunDetail, error)
}

// Run listing limits.
const (
	defaultRunLimit = 20
	maxRunLimit     = 1000
)

func (s *Server) sweepRoutes() {
	s.admin("POST /api/v1/sweeps", http.StatusOK, s.applySweep)
	s.admin("GET /api/v1/sweeps", http.StatusOK, s.listSweeps)
	s.admin("GET /api/v1/sweeps/{name}", http.StatusOK, s.getSweep)
	s.admin("DELETE /api/v1/sweeps/{name}", http.StatusOK, s.deleteSweep)
	s.admin("POST /api/v1/sweeps/{name}/runs", http.StatusOK, s.triggerSweep)
	s.admin("GET /api/v1/sweeps/{name}/runs", http.StatusOK, s.listSweepRuns)
	s.admin("GET /api/v1/sweeps/{name}/runs/{id}", http.StatusOK, s.getSweepRun)
}

func (s *Server) sweeps() (Sweeps, error) {
	if s.cfg.Sweeps == nil {
		return nil, fmt.Errorf("sweep service not running: %w", fault.ErrUnavailable)
	}
	return s.cfg.Sweeps, nil
}

// applySweep takes the YAML spec as the request body; ?dry_run=true only validates it.
func (s *Server) applySweep(r *http.Request) (any, error) {
	sw, err := s.sweeps()
	if err != nil {
		return nil, err
	}
	body, dry, err := specBody(r, "sweep")
	if err != nil {
		return nil, err
	}
	return sw.Apply(r.Context(), body, dry)
}

func (s *Server) listSweeps(r *http.Request) (any, error) {
	sw, err := s.sweeps()
	if err != nil {
		return nil, err
	}
	items, err := sw.List(r.Context())
	if err != nil {
		return nil, err
	}
	return wire.List[wire.SweepSummary]{Items: items}, nil
}

func (s *Server) getSweep(r *http.Request) (any, error) {
	sw, err := s.sweeps()
	if err != nil {
		return nil, err
	}
	return sw.Get(r.Context(), r.PathValue("name"))
}

func (s *Server) deleteSweep(r *http.Request) (any, error) {
	sw, err := s.sweeps()
	if err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	if err := sw.Delete(r.Context(), name); err != nil {
		return nil, err
	}
	return map[string]string{"deleted": name}, nil
}

// triggerSweep starts a run now, under the sweep's lock. The body is optional:
// {"max_seconds": 300, "trigger": "cli", "by": "alice"}. The answer is the run record, with
// lock_skipped: true if a run of the sweep was in progress.
func (s *Server) triggerSweep(r *http.Request) (any, error) {
	sw, err := s.sweeps()
	if err != nil {
		return nil, err
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	var req wire.SweepTriggerRequest
	if len(bytes.TrimSpace(body)) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := decode(r, &req); err != nil {
			return nil, err
		}
	}
	if req.By == "" {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		req.By = "admin token from " + host
	}
	return sw.Trigger(r.Context(), r.PathValue("name"), req)
}

func (s *Server) listSweepRuns(r *http.Request) (any, error) {
	sw, err := s.sweeps()
	if err != nil {
		return nil, err
	}
	limit := defaultRunLimit
	for k := range r.URL.Query() {
		if k != "limit" {
			return nil, fault.Invalid(k, "unknown parameter (use limit)")
		}
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxRunLimit {
			return nil, fault.Invalid("limit", "must be a number from 1 to %d, not %q", maxRunLimit, v)
		}
	}
	runs, err := sw.Runs(r.Context(), r.PathValue("name"), limit)
	if err != nil {
		return nil, err
	}
	return wire.List[wire.SweepRun]{Items: runs}, nil
}

func (s *Server) getSweepRun(r *http.Request) (any, error) {
	sw, err := s.sweeps()
	if err != nil {
		return nil, err
	}
	return sw.Run(r.Context(), r.PathValue("name"), r.PathValue("id"))
}

// readBody reads a whole request body within the size limit.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("request body larger than %d bytes: %w", mbe.Limit, fault.ErrTooLarge)
		}
		return nil, err
	}
	return body, nil
}
