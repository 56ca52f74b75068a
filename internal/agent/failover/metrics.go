package failover

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"godwit.dev/godwit/internal/agent/failover/machine"
	"godwit.dev/godwit/internal/collector"
)

// states are every state a member reports, for the state gauge (one series per state, 1 for
// the current one).
var states = []machine.State{machine.Initializing, machine.Healthy, machine.Failed, machine.Fencing, machine.Fenced,
	machine.FenceFailed, machine.Recovering, machine.Yielding, machine.Activating, machine.Watching, machine.Promoting}

// metrics of one membership, labelled by group (and state, hook, result).
type metrics struct {
	state       *prometheus.GaugeVec
	primary     prometheus.Gauge
	epoch       prometheus.Gauge
	transitions *prometheus.CounterVec
	hookSeconds prometheus.ObserverVec
	hookResults *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, group string) *metrics {
	l := prometheus.Labels{"group": group}
	m := &metrics{
		state: collector.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "godwit_failover_state",
			Help: "1 for the member's current state in its failover group (role primary or replica in the role label), 0 for the others.",
		}, []string{"group", "role", "state"})).MustCurryWith(l),
		primary: collector.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "godwit_failover_is_primary",
			Help: "1 while this member is the group's healthy primary, else 0.",
		}, []string{"group"})).With(l),
		epoch: collector.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "godwit_failover_epoch",
			Help: "The epoch this member knows: its own as primary, the primary's as replica.",
		}, []string{"group"})).With(l),
		transitions: collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_failover_transitions_total",
			Help: "State transitions of this member by the state entered.",
		}, []string{"group", "to"})).MustCurryWith(l),
		hookSeconds: collector.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "godwit_failover_hook_duration_seconds",
			Help:    "How long the group's hooks ran on this member.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"group", "hook"})).MustCurryWith(l),
		hookResults: collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_failover_hook_results_total",
			Help: "Hook runs by result: succeeded, failed, timed_out, cancelled (fence failures are the ones to alert on).",
		}, []string{"group", "hook", "result"})).MustCurryWith(l),
	}
	return m
}

func (m *metrics) transition(role machine.Role, to machine.State, epoch uint64) {
	if m == nil {
		return
	}
	for _, r := range []machine.Role{machine.Primary, machine.Replica} {
		for _, s := range states {
			v := 0.0
			if r == role && s == to {
				v = 1
			}
			m.state.WithLabelValues(string(r), string(s)).Set(v)
		}
	}
	p := 0.0
	if role == machine.Primary && to == machine.Healthy {
		p = 1
	}
	m.primary.Set(p)
	m.epoch.Set(float64(epoch))
	m.transitions.WithLabelValues(string(to)).Inc()
}

func (m *metrics) hook(name, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.hookSeconds.WithLabelValues(name).Observe(d.Seconds())
	m.hookResults.WithLabelValues(name, result).Inc()
}
