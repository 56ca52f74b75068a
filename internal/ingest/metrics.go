package ingest

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Dead-letter reasons: the value of the Godwit-Dlq-Reason header, DeadLetter.Reason and the
// reason label of godwit_ingest_dead_letters_total.
const (
	ReasonDecode        = "decode"         // the payload is not a JSON event
	ReasonInvalid       = "invalid"        // wire.Event.Validate refused it, or the subject is not an event subject
	ReasonTooLarge      = "too_large"      // larger than wire.MaxEventBytes
	ReasonMaxDeliveries = "max_deliveries" // the store kept refusing it until the delivery limit
)

var reasons = []string{ReasonDecode, ReasonInvalid, ReasonTooLarge, ReasonMaxDeliveries}

type metrics struct {
	ingested     prometheus.Counter
	duplicates   prometheus.Counter
	batchSize    prometheus.Histogram
	pending      prometheus.Gauge
	ackPending   prometheus.Gauge
	redeliveries prometheus.Counter
	deadLetters  *prometheus.CounterVec
	rehydrations prometheus.Counter
	panics       prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		ingested: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_ingest_events_ingested_total",
			Help: "Events stored in SQL for the first time.",
		})),
		duplicates: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_ingest_events_duplicate_total",
			Help: "Valid events that were already stored (redeliveries, re-publishes, replays) and were skipped.",
		})),
		batchSize: register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "godwit_ingest_batch_size",
			Help:    "Messages per fetched batch.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000},
		})),
		pending: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "godwit_ingest_consumer_pending",
			Help: "Events in the stream not yet delivered to the ingest consumer (lag), as of the last refresh.",
		})),
		ackPending: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "godwit_ingest_consumer_ack_pending",
			Help: "Events delivered to some hub replica and not yet acknowledged, as of the last refresh.",
		})),
		redeliveries: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_ingest_redeliveries_total",
			Help: "Messages received that had been delivered before (crashed replica, ack wait expired, negative ack).",
		})),
		deadLetters: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_ingest_dead_letters_total",
			Help: "Messages moved to the dead-letter stream, by reason.",
		}, []string{"reason"})),
		rehydrations: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_ingest_rehydrations_total",
			Help: "Agents whose derived event state was loaded from SQL (first event after a start or a Rehydrate).",
		})),
		panics: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_worker_panics_total",
			Help: "Panics recovered in background workers; each one ends the process.",
		}, []string{"worker"})).WithLabelValues("ingest"),
	}
	for _, r := range reasons {
		m.deadLetters.WithLabelValues(r)
	}
	return m
}

// register registers c, or returns the collector already registered under the same
// description (several ingesters, or another worker sharing godwit_worker_panics_total). With a
// nil registry the metrics are kept but not exported.
func register[C prometheus.Collector](reg *prometheus.Registry, c C) C {
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
		panic("ingest: register metric: " + err.Error())
	}
	return c
}
