package hub

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/migration/state"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Causes of a paused migration: the cause label of godwit_migrations_paused.
const (
	PauseFailureBudget = "failure_budget" // more agents failed than the rollout allows (onFailure: pause)
	PauseDeadline      = "deadline"       // a deadline passed (onTimeout: pause)
	PauseApproval      = "approval"       // approval: manual, waiting for the next batch's approval
	PauseOperator      = "operator"       // godwit pause
	PauseOther         = "other"
)

var pauseCauses = []string{PauseFailureBudget, PauseDeadline, PauseApproval, PauseOperator, PauseOther}

// PauseCause tells why a paused migration is paused, from the reason the migration controller
// recorded with the state (internal/migration/controller: advanceRunning, the deadline checks,
// the manual approval gate and the operator's pause). The hub's tests drive the real controller
// into each cause they can reach and check the label, so a reworded reason cannot go unnoticed.
func PauseCause(reason string) string {
	switch {
	case strings.HasPrefix(reason, "failure budget exceeded") || strings.Contains(reason, "onFailure: pause"):
		return PauseFailureBudget
	case strings.Contains(reason, "onTimeout: pause"):
		return PauseDeadline
	case strings.HasPrefix(reason, "waiting for approval"):
		return PauseApproval
	case strings.HasPrefix(reason, "paused by operator"):
		return PauseOperator
	default:
		return PauseOther
	}
}

// fleetCollector exports counts read from the store on every scrape: agents by status and
// migrations by state and pause cause. Reading on scrape keeps one source of truth (SQL) and
// gives every hub replica the same figures; the queries are counts over small tables.
type fleetCollector struct {
	store   store.Store
	log     *slog.Logger
	timeout time.Duration

	up, agents, migrations, paused *prometheus.Desc
}

func newFleetCollector(st store.Store, log *slog.Logger) *fleetCollector {
	return &fleetCollector{store: st, log: log, timeout: 5 * time.Second,
		up: prometheus.NewDesc("godwit_store_up",
			"1 if the store answered this scrape's fleet queries, 0 if not (then the godwit_agents and godwit_migrations series are left out).", nil, nil),
		agents: prometheus.NewDesc("godwit_agents",
			"Enrolled agents by status: online, offline, unknown (not heard from since the hub could judge) or revoked.", []string{"status"}, nil),
		migrations: prometheus.NewDesc("godwit_migrations",
			"Migrations by state.", []string{"state"}, nil),
		paused: prometheus.NewDesc("godwit_migrations_paused",
			"Paused migrations by cause: failure_budget, deadline, approval, operator or other.", []string{"cause"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.agents
	ch <- c.migrations
	ch <- c.paused
}

// Collect implements prometheus.Collector. A store that does not answer costs these series, not
// the whole scrape: the ingest's figures matter most exactly when the database is down.
func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	agents, migrations, paused, err := c.read(ctx)
	if err != nil {
		c.log.Warn("metrics: fleet counts from the store", "err", err)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, st := range []string{wire.StatusOnline, wire.StatusOffline, wire.StatusUnknown, store.AgentRevoked} {
		ch <- prometheus.MustNewConstMetric(c.agents, prometheus.GaugeValue, float64(agents[st]), st)
	}
	for _, st := range state.MigrationStates() {
		ch <- prometheus.MustNewConstMetric(c.migrations, prometheus.GaugeValue, float64(migrations[string(st)]), string(st))
	}
	for _, cause := range pauseCauses {
		ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, float64(paused[cause]), cause)
	}
}

func (c *fleetCollector) read(ctx context.Context) (agents, migrations, paused map[string]int, err error) {
	if agents, err = c.store.CountAgentsByStatus(ctx); err != nil {
		return nil, nil, nil, err
	}
	if migrations, err = c.store.CountMigrationsByState(ctx); err != nil {
		return nil, nil, nil, err
	}
	paused = map[string]int{}
	if migrations[string(state.MigrationPaused)] == 0 {
		return agents, migrations, paused, nil
	}
	q := store.MigrationQuery{State: string(state.MigrationPaused), Limit: 1000}
	for {
		page, next, err := c.store.PageMigrations(ctx, q)
		if err != nil {
			return nil, nil, nil, err
		}
		for _, m := range page {
			paused[PauseCause(m.Reason)]++
		}
		if next == "" {
			return agents, migrations, paused, nil
		}
		q.Cursor = next
	}
}
