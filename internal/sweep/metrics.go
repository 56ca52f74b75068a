package sweep

import (
	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/collector"
	"godwit.dev/godwit/internal/wire"
)

type metrics struct {
	runs      *prometheus.CounterVec
	lockSkips *prometheus.CounterVec
	missed    *prometheus.CounterVec
	agents    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		runs: collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_sweep_runs_total",
			Help: "Sweep firings by outcome: completed, failed, lock_skipped (a run of the sweep was in progress) or missed (due while no hub ran, misfire: skip).",
		}, []string{"sweep", "outcome"})),
		lockSkips: collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_sweep_lock_skips_total",
			Help: "Sweep firings (scheduled or triggered) that did not run because a run of the same sweep held the lock.",
		}, []string{"sweep"})),
		missed: collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_sweep_missed_firings_total",
			Help: "Scheduled sweep firings that were due while no hub was running, by misfire policy (skip: not run; run_once: caught up by one run).",
		}, []string{"sweep", "misfire"})),
		agents: collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_sweep_agent_checks_total",
			Help: "Agents settled in sweep runs, by result: clean, drifted, error, missing or budget.",
		}, []string{"sweep", "result"})),
	}
}

// finished counts a run record that will not change any more.
func (m *metrics) finished(r wire.SweepRun) {
	outcome := r.Status
	if r.LockSkipped {
		outcome = "lock_skipped"
		m.lockSkips.WithLabelValues(r.Sweep).Inc()
	}
	m.runs.WithLabelValues(r.Sweep, outcome).Inc()
}
