// Package collector registers the hub's Prometheus collectors, so that one place decides what
// happens when a metric is registered twice: by two instances of one component on the same
// registry, or by two components that share a metric (godwit_worker_panics_total).
package collector

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg and returns it, or returns the collector of the same type
// already registered under the same description. With a nil reg, c is returned unregistered:
// the component keeps its metrics, nobody exports them. Any other failure to register is a
// programming error (two metrics of one name with different labels or help) and panics.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("collector: register: " + err.Error())
	}
	return c
}
