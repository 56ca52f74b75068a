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
	"godwit.dev/godwit/internal/migration/controller"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Migrations is what the API needs of the migration controller.
type Migrations interface {
	Apply(ctx context.Context, yamlSpec []byte, dryRun bool) (controller.ApplyResult, error)
	Act(ctx context.Context, name string, act controller.Action, actor string) (store.Migration, error)
	Describe(ctx context.Context, name string) (controller.Description, error)
	Check(ctx context.Context) ([]controller.Finding, error)
}

func (s *Server) migrationRoutes() {
	s.admin("POST /api/v1/migrations", http.StatusOK, s.applyMigration)
	s.admin("GET /api/v1/migrations", http.StatusOK, s.listMigrations)
	s.admin("GET /api/v1/migrations/{name}", http.StatusOK, s.describeMigration)
	s.admin("POST /api/v1/migrations/{name}/{action}", http.StatusOK, s.actOnMigration)
	s.admin("POST /api/v1/check", http.StatusOK, s.check)
}

// check runs the consistency check now: hub records against what agents report.
func (s *Server) check(r *http.Request) (any, error) {
	mc, err := s.migrations()
	if err != nil {
		return nil, err
	}
	fs, err := mc.Check(r.Context())
	if fs == nil {
		fs = []controller.Finding{}
	}
	return wire.List[controller.Finding]{Items: fs}, err
}

func (s *Server) migrations() (Migrations, error) {
	if s.cfg.Migrations == nil {
		return nil, fmt.Errorf("migration controller not running: %w", fault.ErrUnavailable)
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
	return mc.Apply(r.Context(), body, dry)
}

func (s *Server) listMigrations(r *http.Request) (any, error) {
	ms, err := s.cfg.Store.ListMigrations(r.Context())
	if err != nil {
		return nil, err
	}
	return wire.List[store.Migration]{Items: ms}, nil
}

func (s *Server) describeMigration(r *http.Request) (any, error) {
	mc, err := s.migrations()
	if err != nil {
		return nil, err
	}
	return mc.Describe(r.Context(), r.PathValue("name"))
}

func (s *Server) actOnMigration(r *http.Request) (any, error) {
	mc, err := s.migrations()
	if err != nil {
		return nil, err
	}
	act := controller.Action(r.PathValue("action"))
	switch act {
	case controller.Pause, controller.Resume, controller.Approve, controller.Abort, controller.Rollback, controller.RetryFailed:
	default:
		return nil, fault.Invalid("action", "%q is not one of pause, resume, approve, abort, rollback, retry", act)
	}
	return mc.Act(r.Context(), r.PathValue("name"), act, "admin")
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
