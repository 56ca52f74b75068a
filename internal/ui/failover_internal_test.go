package ui

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

// The failover pages' live mark moves when a group is stored or paused and when a member reports
// a transition, and not when nothing they show changed.
func TestFailoverMark(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	s := New(Config{Store: st})
	t.Cleanup(s.Close)
	mark := func() string {
		t.Helper()
		m, err := s.mark(ctx, topicFailover)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if !validTopic(topicFailover) {
		t.Fatal("the failover topic is not a live topic")
	}
	m0 := mark()
	if mark() != m0 {
		t.Fatal("the mark moved with nothing changed")
	}
	now := time.Now().UTC()
	g, err := st.PutFailoverGroup(ctx, wire.FailoverGroup{Name: "pg", Spec: json.RawMessage(`{}`), SpecHash: "h", CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	m1 := mark()
	if m1 == m0 {
		t.Fatal("a new group did not move the mark")
	}
	g.Paused = true
	if _, err := st.PutFailoverGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	m2 := mark()
	if m2 == m1 {
		t.Fatal("a pause did not move the mark")
	}
	extra, _ := json.Marshal(wire.FailoverTransition{Group: "pg", Member: "m", Role: "primary", From: "healthy", To: "fencing", Epoch: 3})
	ev := wire.NewEvent(wire.AgentSource("m"), wire.EventFailoverTransition, wire.SeverityWarning, wire.EventData{Extra: extra})
	if _, err := st.InsertEvents(ctx, []store.StoredEvent{{Event: ev, ReceivedAt: now}}, nil); err != nil {
		t.Fatal(err)
	}
	if mark() == m2 {
		t.Fatal("a transition did not move the mark")
	}
}
