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

// Migrations is what the API needs of the migration controller.
type Migrations interface {
	Apply(ctx context.Context, yamlSpec []byte, dryRun bool) (wire.MigrationApplyResult, error)
	Act(ctx context.Context, name string, act wire.MigrationAction, actor string) (wire.Migration, error)
	// Delete deletes a migration that has ended and that no agent still works on; its events
	// stay and its name stays taken.
	Delete(ctx context.Context, name, actor string) error
	Describe(ctx context.Context, name string) (wire.MigrationDescription, error)
	// DescribeWith is Describe with the assignments chosen (every attempt, the failed, none).
	DescribeWith(ctx context.Context, name string, which wire.AssignmentsShown) (wire.MigrationDescription, error)
	Check(ctx context.Context) ([]wire.CheckFinding, error)
}

func (s *Server) migrationRoutes() {
	s.route("POST /api/v1/migrations", http.StatusOK, s.applyMigration)
	s.route("GET /api/v1/migrations", http.StatusOK, s.listMigrations)
	s.route("GET /api/v1/migrations/{name}", http.StatusOK, s.describeMigration)
	s.route("DELETE /api/v1/migrations/{name}", http.StatusOK, s.deleteMigration)
	s.route("POST /api/v1/migrations/{name}/{action}", http.StatusOK, s.actOnMigration)
	s.route("POST /api/v1/check", http.StatusOK, s.check)
}

// check runs the consistency check now: hub records against what agents report.
func (s *Server) check(r *http.Request) (any, error) {
	mc, err := s.migrations()
	if err != nil {
		return nil, err
	}
	fs, err := mc.Check(r.Context())
	if fs == nil {
		fs = []wire.CheckFinding{}
	}
	return wire.List[wire.CheckFinding]{Items: fs}, err
}

func (s *Server) migrations() (Migrations, error) {
	if s.cfg.Migrations == nil {
		return nil, s.notRunning("migration controller")
	}
	return s.cfg.Migrations, nil
}

// applyMigration takes the YAML spec as the request body; ?dry_run=true only plans it.
func (s *Server) applyMigration(r *http.Request) (any, error) {
	mc, err := s.migrations()
	if err != nil {
		return nil, err
	}
	body, dry, err := specBody(r, "migration")
	if err != nil {
		return nil, err
	}
	res, err := mc.Apply(r.Context(), body, dry)
	if res.Name != "" {
		setTarget(r, "migration %s (%s)", res.Name, res.Outcome)
	}
	return res, err
}

func (s *Server) listMigrations(r *http.Request) (any, error) {
	ms, err := s.cfg.Store.ListMigrations(r.Context())
	if err != nil {
		return nil, err
	}
	return wire.List[wire.Migration]{Items: ms}, nil
}

func (s *Server) describeMigration(r *http.Request) (any, error) {
	mc, err := s.migrations()
	if err != nil {
		return nil, err
	}
	which := wire.AssignmentsAll
	for k, v := range r.URL.Query() {
		if k != "assignments" {
			return nil, fault.Invalid(k, "unknown parameter (use assignments)")
		}
		switch w := wire.AssignmentsShown(v[0]); w {
		case wire.AssignmentsAll, wire.AssignmentsFailed, wire.AssignmentsNone:
			which = w
		default:
			return nil, fault.Invalid("assignments", "%q is not all, failed or none", v[0])
		}
	}
	return mc.DescribeWith(r.Context(), r.PathValue("name"), which)
}

// deleteMigration deletes a migration that has ended (409 while it runs, or while an agent has
// not confirmed that it stopped working on it, or while a sweep remediates with it).
func (s *Server) deleteMigration(r *http.Request) (any, error) {
	mc, err := s.migrations()
	if err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	if err := mc.Delete(r.Context(), name, principal(r).Actor); err != nil {
		return nil, err
	}
	return map[string]string{"deleted": name}, nil
}

func (s *Server) actOnMigration(r *http.Request) (any, error) {
	mc, err := s.migrations()
	if err != nil {
		return nil, err
	}
	act := wire.MigrationAction(r.PathValue("action"))
	if !act.Valid() {
		return nil, fault.Invalid("action", "%q is not one of pause, resume, approve, abort, rollback, retry", act)
	}
	return mc.Act(r.Context(), r.PathValue("name"), act, principal(r).Actor)
}

// specBody reads a YAML spec request body and the dry_run parameter, with errors that say which
// is wrong.
func specBody(r *http.Request, kind string) (body []byte, dryRun bool, err error) {
	if v := r.URL.Query().Get("dry_run"); v != "" {
		if dryRun, err = strconv.ParseBool(v); err != nil {
			return nil, false, fault.Invalid("dry_run", "%q is not true or false", v)
		}
	}
	body, err = io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, false, fmt.Errorf("spec larger than %d bytes: %w", mbe.Limit, fault.ErrTooLarge)
		}
		return nil, false, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, false, fmt.Errorf("request body is empty; send the %s's YAML spec: %w", kind, fault.ErrInvalid)
	}
	return body, dryRun, nil
}
