package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/collector"
	"godwit.dev/godwit/internal/worker"
)

// Dead-letter reasons: the value of the Godwit-Dlq-Reason header, DeadLetter.Reason and the
// reason label of godwit_ingest_dead_letters_total.
const (
	ReasonDecode        = "decode"         // the payload is not a JSON event
	ReasonInvalid       = "invalid"        // wire.Event.Validate refused it, the subject is not an event subject, or the batch is malformed
	ReasonHubOnly       = "hub_only"       // an agent sent a type only the hub emits (wire.ErrHubOnlyType)
	ReasonQuota         = "quota"          // the agent sent more than its quota (Config.Quota)
	ReasonTooLarge      = "too_large"      // an event larger than wire.MaxEventBytes, or a batch larger than wire.MaxBatchBytes
	ReasonMaxDeliveries = "max_deliveries" // the store kept refusing it until the delivery limit
)

var reasons = []string{ReasonDecode, ReasonInvalid, ReasonHubOnly, ReasonQuota, ReasonTooLarge, ReasonMaxDeliveries}

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
	// streamMissing counts the times the events stream was found missing.
	streamMissing prometheus.Counter
	// clamped counts agents' events whose time was replaced by the receipt time.
	clamped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ingested: collector.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_ingest_events_ingested_total",
			Help: "Events stored in SQL for the first time.",
		})),
		duplicates: collector.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_ingest_events_duplicate_total",
			Help: "Valid events that were already stored (redeliveries, re-publishes, replays) and were skipped.",
		})),
		batchSize: collector.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "godwit_ingest_batch_size",
			Help:    "Messages per fetched batch (an event batch message counts once).",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000},
		})),
		pending: collector.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "godwit_ingest_consumer_pending",
			Help: "Events in the stream not yet delivered to the ingest consumer (lag), as of the last refresh.",
		})),
		ackPending: collector.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "godwit_ingest_consumer_ack_pending",
			Help: "Events delivered to some hub replica and not yet acknowledged, as of the last refresh.",
		})),
		redeliveries: collector.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_ingest_redeliveries_total",
			Help: "Messages received that had been delivered before (crashed replica, ack wait expired, negative ack).",
		})),
		deadLetters: collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_ingest_dead_letters_total",
			Help: "Dead letters written, by reason: one per refused event (an event of a batch on its own), or per message that is not a readable event batch.",
		}, []string{"reason"})),
		rehydrations: collector.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_ingest_rehydrations_total",
			Help: "Agents whose derived event state was loaded from SQL (first event after a start or a Rehydrate).",
		})),
		streamMissing: collector.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_ingest_stream_missing_total",
			Help: "Times the ingest found the events stream missing (and declared it again when it could).",
		})),
		clamped: collector.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_ingest_clock_skew_clamped_total",
			Help: "Agents' events further ahead of their receipt than the allowed clock skew, stored at the receipt time.",
		})),
		panics: worker.Panics(reg).WithLabelValues("ingest"),
	}
	for _, r := range reasons {
		m.deadLetters.WithLabelValues(r)
	}
	return m
}
