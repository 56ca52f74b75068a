package lease

import (
	"github.com/prometheus/client_golang/prometheus"

	"godwit.dev/godwit/internal/collector"
)

type metrics struct {
	isLeader      prometheus.Gauge
	epoch         prometheus.Gauge
	degraded      prometheus.Gauge
	renewFailures prometheus.Counter
	transitions   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, name string) *metrics {
	l := prometheus.Labels{"lease": name}
	m := &metrics{
		isLeader: collector.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "godwit_lease_is_leader",
			Help: "1 while this process holds the lease, else 0.",
		}, []string{"lease"})).With(l),
		epoch: collector.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "godwit_lease_epoch",
			Help: "The epoch of the current term when leading, else of the lease record last read.",
		}, []string{"lease"})).With(l),
		degraded: collector.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "godwit_lease_degraded",
			Help: "1 while this process's store calls for the lease are failing or have not yet succeeded enough times in a row to count as recovered.",
		}, []string{"lease"})).With(l),
		renewFailures: collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_lease_renew_failures_total",
			Help: "Renew attempts that failed or were answered after the call deadline.",
		}, []string{"lease"})).With(l),
		transitions: collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_lease_transitions_total",
			Help: "Lease transitions by reason (acquired, replaced, watchdog, released, lost, degraded, renewed-after-degraded, recovered).",
		}, []string{"lease", "reason"})).MustCurryWith(l),
	}
	for _, r := range allReasons {
		m.transitions.WithLabelValues(string(r))
	}
	return m
}
