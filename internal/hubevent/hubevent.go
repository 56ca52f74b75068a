// Package hubevent sends the hub's own events — state changes, operator actions and the
// transitions its workers mark — to the event stream.
//
// An event that cannot be sent (the broker is away, or did not answer in time) is kept and sent
// again, in order and with the same id, before the next one: a broker outage delays the hub's
// events rather than losing them, and an event the broker stored although its answer was lost
// is stored once (the stream de-duplicates by message id for a while, and the event store has a
// unique index on the id for good). What is kept lives in memory, bounded: a hub that stops
// with events unsent loses those, and the sender logs how many it dropped at its bound and
// counts them in godwit_hub_events_dropped_total{component} (Dropped), which an alert watches.
package hubevent

import (
	"context"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/collector"
	"godwit.dev/godwit/internal/wire"
)

// DefaultMax bounds the events one sender keeps while it cannot send.
const DefaultMax = 10_000

// Sender sends events through publish, keeping those it could not send. It is safe for
// concurrent use. The zero value is not usable; call New.
type Sender struct {
	publish func(context.Context, wire.Event) error
	log     *slog.Logger
	max     int

	counted prometheus.Counter // nil: not exported

	mu      sync.Mutex
	unsent  []wire.Event
	dropped int
	failing bool // the last attempt failed (logged once until one succeeds)
}

// New returns a sender. A nil publish drops every event (a hub part built without a bus); a nil
// logger logs nothing.
func New(publish func(context.Context, wire.Event) error, log *slog.Logger) *Sender {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sender{publish: publish, log: log, max: DefaultMax}
}

// Dropped returns godwit_hub_events_dropped_total, registered with reg (nil: not exported): the
// hub's own events dropped at a sender's bound, by component.
func Dropped(reg prometheus.Registerer) *prometheus.CounterVec {
	return collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "godwit_hub_events_dropped_total",
		Help: "The hub's own events dropped because too many could not be sent (the bus away for long).",
	}, []string{"component"}))
}

// CountedIn makes s count the events it drops in Dropped(reg) under component (the series
// exists at 0 from now on, so an alert on its increase sees it), and returns s. A nil reg
// changes nothing.
func (s *Sender) CountedIn(reg prometheus.Registerer, component string) *Sender {
	if reg != nil {
		s.counted = Dropped(reg).WithLabelValues(component)
	}
	return s
}

// Send sends e after every event kept from before it, or keeps it if that is not possible now.
func (s *Sender) Send(ctx context.Context, e wire.Event) {
	if s.publish == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unsent = append(s.unsent, e)
	if over := len(s.unsent) - s.max; over > 0 {
		s.unsent = s.unsent[over:]
		s.dropped += over
		if s.counted != nil {
			s.counted.Add(float64(over))
		}
		s.log.Error("hub events dropped: too many could not be sent", "dropped", over, "dropped_total", s.dropped, "kept", s.max)
	}
	s.flushLocked(ctx)
}

// Flush sends the events kept so far, in order, and stops at the first that cannot be sent.
// Workers call it at the start of each pass, so kept events go out as soon as the broker is back
// even when nothing new happens.
func (s *Sender) Flush(ctx context.Context) {
	if s.publish == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked(ctx)
}

func (s *Sender) flushLocked(ctx context.Context) {
	sent := 0
	for _, e := range s.unsent {
		if err := s.publish(ctx, e); err != nil {
			if !s.failing && ctx.Err() == nil {
				s.log.Warn("hub event not sent yet; kept to send again", "type", e.Type, "kept", len(s.unsent)-sent, "err", err)
			}
			s.failing = true
			break
		}
		sent++
	}
	if sent > 0 {
		if s.failing && sent == len(s.unsent) {
			s.log.Info("kept hub events sent", "events", sent)
		}
		s.unsent = append(s.unsent[:0], s.unsent[sent:]...)
	}
	if len(s.unsent) == 0 {
		s.failing = false
	}
}

// Pending is how many events are kept, not yet sent.
func (s *Sender) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.unsent)
}
