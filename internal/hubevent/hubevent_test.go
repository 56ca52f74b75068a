package hubevent

import (
	"context"
	"errors"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"sync"
	"testing"

	"godwit.dev/godwit/internal/wire"
)

// broker is a publish function that fails while down and records what it stored.
type broker struct {
	mu     sync.Mutex
	down   bool
	stored []string
	calls  int
}

func (b *broker) publish(_ context.Context, e wire.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	if b.down {
		return errors.New("nats: no responders available for request")
	}
	b.stored = append(b.stored, e.Data.Message)
	return nil
}

func ev(msg string) wire.Event {
	return wire.NewEvent(wire.HubSource("h"), wire.EventOperatorAction, wire.SeverityInfo, wire.EventData{Message: msg})
}

// Events that cannot be sent are kept and go out, in order and once each, when the broker is
// back: with the next event, or with a Flush when nothing new happens.
func TestKeptUntilTheBrokerIsBack(t *testing.T) {
	b := &broker{}
	s := New(b.publish, nil)
	ctx := context.Background()
	s.Send(ctx, ev("1"))
	b.down = true
	s.Send(ctx, ev("2"))
	s.Send(ctx, ev("3"))
	if s.Pending() != 2 {
		t.Fatalf("pending %d, want 2", s.Pending())
	}
	// While the broker is down, each attempt stops at the first failure: one call, not one
	// per kept event.
	calls := b.calls
	s.Flush(ctx)
	if b.calls != calls+1 {
		t.Fatalf("a flush against a down broker made %d calls, want 1", b.calls-calls)
	}
	b.down = false
	s.Flush(ctx)
	s.Send(ctx, ev("4"))
	if got := b.stored; len(got) != 4 || got[0] != "1" || got[1] != "2" || got[2] != "3" || got[3] != "4" {
		t.Fatalf("stored %v, want 1 2 3 4", got)
	}
	if s.Pending() != 0 {
		t.Fatalf("pending %d after the broker came back", s.Pending())
	}
}

// The sender keeps at most its bound, dropping the oldest.
func TestBounded(t *testing.T) {
	b := &broker{down: true}
	reg := prometheus.NewRegistry()
	s := New(b.publish, nil).CountedIn(reg, "liveness")
	s.max = 3
	for _, m := range []string{"1", "2", "3", "4", "5"} {
		s.Send(context.Background(), ev(m))
	}
	if s.Pending() != 3 || s.dropped != 2 {
		t.Fatalf("pending %d, dropped %d; want 3 and 2", s.Pending(), s.dropped)
	}
	// What was dropped is counted where an alert can see it.
	var m dto.Metric
	if err := Dropped(reg).WithLabelValues("liveness").Write(&m); err != nil || m.GetCounter().GetValue() != 2 {
		t.Fatalf("godwit_hub_events_dropped_total{component=liveness} = %v (%v), want 2", m.GetCounter().GetValue(), err)
	}
	b.down = false
	s.Flush(context.Background())
	if got := b.stored; len(got) != 3 || got[0] != "3" || got[2] != "5" {
		t.Fatalf("stored %v, want the newest three", got)
	}
}

func TestNilPublishDrops(t *testing.T) {
	s := New(nil, nil)
	s.Send(context.Background(), ev("1"))
	s.Flush(context.Background())
	if s.Pending() != 0 {
		t.Fatalf("pending %d with no publish", s.Pending())
	}
}
