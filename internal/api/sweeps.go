package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
	Suspend(ctx context.Context, name string, req wire.SweepSuspendRequest) (wire.SweepSuspendResult, error)
	Resume(ctx context.Context, name string, req wire.SweepSuspendRequest) (wire.SweepSuspendResult, error)
	// Runs is a page of a sweep's runs, newest first, without their context snapshots, and
	// the cursor of the next page ("" after the last).
	Runs(ctx context.Context, name string, limit int, cursor string) ([]wire.SweepRun, string, error)
	Run(ctx context.Context, name, id string) (wire.SweepRunDetail, error)
}

// Run listing limits.
const (
	defaultRunLimit = 20
	maxRunLimit     = 1000
)

func (s *Server) sweepRoutes() {
	s.route("POST /api/v1/sweeps", http.StatusOK, s.applySweep)
	s.route("GET /api/v1/sweeps", http.StatusOK, s.listSweeps)
	s.route("GET /api/v1/sweeps/{name}", http.StatusOK, s.getSweep)
	s.route("DELETE /api/v1/sweeps/{name}", http.StatusOK, s.deleteSweep)
	s.route("POST /api/v1/sweeps/{name}/runs", http.StatusOK, s.triggerSweep)
	s.route("POST /api/v1/sweeps/{name}/suspend", http.StatusOK, s.suspendSweep)
	s.route("POST /api/v1/sweeps/{name}/resume", http.StatusOK, s.resumeSweep)
	s.route("GET /api/v1/sweeps/{name}/runs", http.StatusOK, s.listSweepRuns)
	s.route("GET /api/v1/sweeps/{name}/runs/{id}", http.StatusOK, s.getSweepRun)
}

func (s *Server) sweeps() (Sweeps, error) {
	if s.cfg.Sweeps == nil {
		return nil, s.notRunning("sweep service")
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
	res, err := sw.Apply(r.Context(), body, dry)
	if res.Name != "" {
		setTarget(r, "sweep %s (%s)", res.Name, res.Outcome)
	}
	return res, err
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
		req.By = s.clientBy(r)
	}
	return sw.Trigger(r.Context(), r.PathValue("name"), req)
}

// clientBy names the client of a request for an audit record that has no "by".
func (s *Server) clientBy(r *http.Request) string {
	return principal(r).Actor + " from " + s.access.Client(r).String()
}

// suspendRequest reads the optional body of a suspend or resume: {"reason": "…", "via": "cli",
// "by": "…"}; the caller names the client when the body does not.
func suspendRequest(r *http.Request) (wire.SweepSuspendRequest, error) {
	var req wire.SweepSuspendRequest
	body, err := readBody(r)
	if err != nil {
		return req, err
	}
	if len(bytes.TrimSpace(body)) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := decode(r, &req); err != nil {
			return req, err
		}
	}
	switch req.Via {
	case "", wire.SuspendViaAPI, wire.SuspendViaCLI:
	default:
		return req, fault.Invalid("via", "must be api or cli, not %q", req.Via)
	}
	return req, nil
}

// suspendSweep suspends a sweep: no scheduled run fires until it is resumed; triggered runs
// still run. The answer says whether it changed (outcome suspended or unchanged).
func (s *Server) suspendSweep(r *http.Request) (any, error) {
	return s.suspension(r, Sweeps.Suspend)
}

// resumeSweep resumes a sweep; its resumePolicy decides what happens to the firings held back.
func (s *Server) resumeSweep(r *http.Request) (any, error) {
	return s.suspension(r, Sweeps.Resume)
}

// suspension reads a suspend or resume request (the client as its author unless it names one)
// and hands it to the sweep service's act.
func (s *Server) suspension(r *http.Request, act func(Sweeps, context.Context, string, wire.SweepSuspendRequest) (wire.SweepSuspendResult, error)) (any, error) {
	sw, err := s.sweeps()
	if err != nil {
		return nil, err
	}
	req, err := suspendRequest(r)
	if err != nil {
		return nil, err
	}
	if req.By == "" {
		req.By = s.clientBy(r)
	}
	return act(sw, r.Context(), r.PathValue("name"), req)
}

func (s *Server) listSweepRuns(r *http.Request) (any, error) {
	sw, err := s.sweeps()
	if err != nil {
		return nil, err
	}
	limit := defaultRunLimit
	for k := range r.URL.Query() {
		if k != "limit" && k != "cursor" {
			return nil, fault.Invalid(k, "unknown parameter (use limit, cursor)")
		}
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxRunLimit {
			return nil, fault.Invalid("limit", "must be a number from 1 to %d, not %q", maxRunLimit, v)
		}
	}
	runs, next, err := sw.Runs(r.Context(), r.PathValue("name"), limit, r.URL.Query().Get("cursor"))
	if err != nil {
		return nil, err
	}
	return wire.List[wire.SweepRun]{Items: runs, NextCursor: next}, nil
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
