package collector

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestRegister(t *testing.T) {
	t.Parallel()
	opts := prometheus.CounterOpts{Name: "godwit_test_total", Help: "A counter."}
	reg := prometheus.NewRegistry()
	first := Register(reg, prometheus.NewCounter(opts))
	first.Inc()
	// A second instance of the same metric gets the registered one: both count together.
	second := Register(reg, prometheus.NewCounter(opts))
	second.Inc()
	if got := value(t, first); got != 2 || second != first {
		t.Fatalf("second registration: counter %v (want 2), same collector %v", got, second == first)
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 || mfs[0].GetMetric()[0].GetCounter().GetValue() != 2 {
		t.Fatalf("gathered %v, %v; want one series at 2", mfs, err)
	}
	// Without a registry the collector works and is exported nowhere.
	if c := Register[prometheus.Counter](nil, prometheus.NewCounter(opts)); c == nil || c == first {
		t.Fatalf("nil registry: %v", c)
	}
	// The same name with other labels is a programming error.
	defer func() {
		if p := recover(); p == nil || !strings.Contains(p.(string), "collector: register") {
			t.Fatalf("conflicting registration: panic %v", p)
		}
	}()
	Register(reg, prometheus.NewCounterVec(opts, []string{"x"}))
}
