package sweep

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/manifest"
	"godwit.dev/godwit/internal/migration/controller"
	migspec "godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// remediate starts the sweep's migration for the drifted agents of a run, and returns the name
// of the migration it created.
//
// The migration is a copy of the named one under a derived name, <migration>-<8 hex digits of
// the run id>, planned by the migration controller's own Apply over a view of the fleet that
// holds only the drifted agents. Selectors match labels, and labels are fixed at enrollment,
// so no selector can name "these agents"; narrowing the fleet the plan is made from can, and
// it leaves the steps, the rollout policy, the failure budget and the migration's own selector
// untouched (a drifted agent the migration does not select is not remediated). The stored plan
// then runs like any migration: `godwit describe migration <name>`. The derived name and
// description depend only on the run, so finishing the same run again (a new leader after a
// crash) finds the migration unchanged instead of starting a second one.
func (s *Service) remediate(ctx context.Context, run wire.SweepRun, sp *Spec, driftedIDs []string) (string, error) {
	m, err := s.cfg.Store.GetMigration(ctx, sp.Remediate.Migration)
	if errors.Is(err, fault.ErrNotFound) {
		return "", fmt.Errorf("migration %q (spec.remediate.migration) does not exist", sp.Remediate.Migration)
	}
	if err != nil {
		return "", err
	}
	msp, err := migspec.Parse([]byte(m.Spec))
	if err != nil {
		return "", fmt.Errorf("migration %s: stored spec does not parse: %w", m.Name, err)
	}
	name := RemediationName(m.Name, run.ID)
	msp.Metadata.Name = name
	msp.Metadata.Description = fmt.Sprintf("Remediation of %d drifted agents found by sweep %s, run %s, with the steps of migration %s.",
		len(driftedIDs), run.Sweep, run.ID, m.Name)
	text, err := msp.Canonical()
	if err != nil {
		return "", fmt.Errorf("migration %s: %w", m.Name, err)
	}
	only := make(map[string]bool, len(driftedIDs))
	for _, id := range driftedIDs {
		only[id] = true
	}
	planner := controller.New(controller.Config{Store: fleetView{Store: s.cfg.Store, only: only}, Clock: s.clock,
		Publish: s.cfg.Publish, HubID: s.cfg.HubID, Logger: s.log})
	res, err := planner.Apply(ctx, text, false)
	if err != nil {
		return "", fmt.Errorf("migration %s for %d drifted agents: %w", name, len(driftedIDs), err)
	}
	if res.Matched < len(driftedIDs) {
		s.log.Warn("sweep remediation: some drifted agents are outside the migration's selector", "sweep", run.Sweep,
			"run", run.ID, "migration", name, "drifted", len(driftedIDs), "remediated", res.Matched)
	}
	if s.cfg.NudgeMigrations != nil {
		s.cfg.NudgeMigrations()
	}
	return name, nil
}

// RemediationName derives the name of a run's remediation migration: the migration's name
// (shortened to fit a DNS label) and the last 8 hex digits of the run id, which are random in a
// UUIDv7.
func RemediationName(migration, runID string) string {
	id := strings.ReplaceAll(runID, "-", "")
	suffix := id[max(0, len(id)-8):]
	base := migration
	if limit := manifest.MaxNameLength - len(suffix) - 1; len(base) > limit {
		base = strings.TrimRight(base[:limit], "-")
	}
	return base + "-" + suffix
}

// fleetView is the store as the migration planner sees it for a remediation: the fleet is only
// the drifted agents. Every other method is the real store.
type fleetView struct {
	store.Store
	only map[string]bool
}

var _ store.Store = fleetView{}

func (v fleetView) ListAgents(ctx context.Context) ([]wire.Agent, error) {
	all, err := v.Store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]wire.Agent, 0, len(v.only))
	for _, a := range all {
		if v.only[a.ID] {
			out = append(out, a)
		}
	}
	return out, nil
}
