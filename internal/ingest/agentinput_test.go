package ingest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// publishAsAgent publishes ev through the agent's own connection, as the agent would.
func publishAsAgent(t *testing.T, nc *nats.Conn, agent string, ev wire.Event) {
	t.Helper()
	b := marshalEvent(t, ev)
	m := &nats.Msg{Subject: wire.EventSubject(agent), Data: b, Header: nats.Header{"Nats-Msg-Id": {ev.ID}}}
	if _, err := nc.RequestMsgWithContext(testCtx(t), m); err != nil {
		t.Fatalf("agent publish: %v", err)
	}
}

func marshalEvent(t *testing.T, ev wire.Event) []byte {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (bd *bundle) waitDeadLetters(t *testing.T, ing *Ingester, n int) []wire.DeadLetter {
	t.Helper()
	var dls []wire.DeadLetter
	waitFor(t, 10*time.Second, func() error {
		var err error
		dls, err = ing.DeadLetters(testCtx(t), 0, 1000)
		if err != nil || len(dls) != n {
			return fmt.Errorf("%d dead letters (%v), want %d", len(dls), err, n)
		}
		return nil
	})
	return dls
}

// An agent publishing a type only the hub emits (an operator action, a revocation, anything
// under hub.*) is dead-lettered with the reason hub_only; the hub's own event of that type is
// stored.
func TestHubOnlyTypesFromAgentsAreDeadLettered(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing, reg := bd.ingester(t, "hub", Config{})
	agent, nc := bd.enroll(t)
	var types []string
	for typ := range wire.HubEventTypes {
		types = append(types, typ)
	}
	for _, typ := range types {
		publishAsAgent(t, nc, agent, agentEvent(agent, typ, time.Now(), "m1"))
	}
	ok := agentEvent(agent, wire.EventExecutionSucceeded, time.Now(), "m1")
	publishAsAgent(t, nc, agent, ok)
	hubEv := wire.NewEvent(wire.HubSource("hub-1"), wire.EventOperatorAction, wire.SeverityInfo, wire.EventData{Migration: "m1", Message: "paused"})
	bd.publish(t, bus.HubEventSubject, hubEv)

	bd.waitDrained(t, 2)
	dls := bd.waitDeadLetters(t, ing, len(types))
	for i, dl := range dls {
		if dl.Reason != ReasonHubOnly || !strings.Contains(dl.Error, "emitted only by the hub") || !strings.Contains(dl.Error, types[i]) {
			t.Errorf("dead letter of %s: reason %q, error %q", types[i], dl.Reason, dl.Error)
		}
	}
	if got := metric(t, reg, "godwit_ingest_dead_letters_total", "reason", ReasonHubOnly); got != float64(len(types)) {
		t.Errorf("dead_letters_total{reason=hub_only} = %v, want %d", got, len(types))
	}
	page, _, err := bd.store.QueryEvents(testCtx(t), store.EventQuery{Limit: 10})
	if err != nil || len(page) != 2 {
		t.Fatalf("stored %d events, %v", len(page), err)
	}
}

// An agent's event time further ahead of its receipt than the allowed skew is replaced by the
// receipt time, kept as the agent's time and counted; one within the skew is stored as sent.
// The agent's derived state is not frozen in the future.
func TestClockSkewIsClamped(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	_, reg := bd.ingester(t, "hub", Config{ClockSkew: time.Minute})
	agent, nc := bd.enroll(t)
	before := time.Now()
	within := agentEvent(agent, wire.EventDetectionSucceeded, before.Add(30*time.Second), "m1")
	ahead := agentEvent(agent, wire.EventExecutionFailed, before.Add(24*time.Hour), "m1")
	publishAsAgent(t, nc, agent, within)
	publishAsAgent(t, nc, agent, ahead)
	bd.waitDrained(t, 2)
	after := time.Now()

	page, _, err := bd.store.QueryEvents(testCtx(t), store.EventQuery{AgentID: agent, Limit: 10})
	if err != nil || len(page) != 2 {
		t.Fatalf("stored %d events, %v", len(page), err)
	}
	byID := map[string]store.StoredEvent{page[0].ID: page[0], page[1].ID: page[1]}
	w, a := byID[within.ID], byID[ahead.ID]
	if !w.Time.Equal(within.Time) || w.AgentTime != nil {
		t.Errorf("event within the skew: time %v, agent time %v; want it as sent", w.Time, w.AgentTime)
	}
	if a.AgentTime == nil || !a.AgentTime.Equal(ahead.Time) || a.Time.Before(before.Add(-time.Second)) || a.Time.After(after) ||
		!a.Time.Equal(a.ReceivedAt) {
		t.Errorf("event a day ahead: time %v (received %v), agent time %v; want the receipt time and the agent's kept", a.Time, a.ReceivedAt, a.AgentTime)
	}
	if got := metric(t, reg, "godwit_ingest_clock_skew_clamped_total"); got != 1 {
		t.Errorf("clock_skew_clamped_total = %v, want 1", got)
	}
	states, err := bd.store.AgentEventStates(testCtx(t), []string{agent})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range states {
		if st.LastTime.After(after.Add(time.Minute)) {
			t.Errorf("derived state %+v is in the future", st)
		}
	}
	if !strings.Contains(bd.logs.String(), "clock is ahead") {
		t.Error("the skewed clock was not logged")
	}
}

// Beyond its quota an agent's events are dead-lettered with the reason quota; another agent's
// are not affected, nor are the hub's.
func TestAgentQuota(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	// A rate so low that no time the test takes earns a token back: the bursts decide.
	ing, reg := bd.ingester(t, "hub", Config{Quota: Quota{EventsPerSecond: 0.0001, EventBurst: 3, BytesPerSecond: 0.0001, ByteBurst: 1e9}})
	loud, lnc := bd.enroll(t)
	quiet, qnc := bd.enroll(t)
	for range 5 {
		publishAsAgent(t, lnc, loud, agentEvent(loud, wire.EventDetectionSucceeded, time.Now(), "m1"))
	}
	for range 3 {
		publishAsAgent(t, qnc, quiet, agentEvent(quiet, wire.EventDetectionSucceeded, time.Now(), "m1"))
	}
	for range 4 {
		bd.publish(t, bus.HubEventSubject, wire.NewEvent(wire.HubSource("hub-1"), wire.EventMigrationStateChanged, wire.SeverityInfo, wire.EventData{}))
	}
	bd.waitDrained(t, 3+3+4)
	dls := bd.waitDeadLetters(t, ing, 2)
	for _, dl := range dls {
		if dl.Reason != ReasonQuota || !strings.Contains(dl.Error, loud) || !strings.Contains(dl.Error, "event quota") {
			t.Errorf("dead letter: reason %q, error %q", dl.Reason, dl.Error)
		}
	}
	if got := metric(t, reg, "godwit_ingest_dead_letters_total", "reason", ReasonQuota); got != 2 {
		t.Errorf("dead_letters_total{reason=quota} = %v, want 2", got)
	}

	// Bytes: a burst of 2.5 events' worth lets two through.
	bd2 := setup(t)
	ev := func(agent string) wire.Event {
		e := agentEvent(agent, wire.EventExecutionFailed, time.Now(), "m1")
		e.Data.OutputTail = strings.Repeat("x", 4000)
		return e
	}
	size := len(marshalEvent(t, ev(loud)))
	ing2, _ := bd2.ingester(t, "hub", Config{Quota: Quota{BytesPerSecond: 0.0001, ByteBurst: float64(size) * 2.5}})
	agent, nc := bd2.enroll(t)
	for range 4 {
		publishAsAgent(t, nc, agent, ev(agent))
	}
	bd2.waitDrained(t, 2)
	for _, dl := range bd2.waitDeadLetters(t, ing2, 2) {
		if dl.Reason != ReasonQuota || !strings.Contains(dl.Error, "byte quota") {
			t.Errorf("dead letter: reason %q, error %q", dl.Reason, dl.Error)
		}
	}
}

// The quota is judged on when the broker stored each event: a backlog sent at the allowed pace
// passes however fast it is fetched, and time running backwards earns nothing.
func TestQuotaJudgesStreamTime(t *testing.T) {
	t.Parallel()
	q := newQuotas(Quota{EventsPerSecond: 1, EventBurst: 1})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 100 {
		if err := q.take("a", 100, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatalf("event %d sent a second after the last: %v", i, err)
		}
	}
	if err := q.take("a", 100, t0.Add(99*time.Second)); err == nil {
		t.Fatal("a second event in the same second passed")
	}
	if err := q.take("a", 100, t0); err == nil {
		t.Fatal("an earlier timestamp earned a token")
	}
	if err := q.take("b", 100, t0); err != nil {
		t.Fatalf("another agent: %v", err)
	}
	if err := newQuotas(Quota{}).take("a", 1<<20, t0); err != nil {
		t.Fatalf("the zero quota refused: %v", err)
	}
	for _, bad := range []Quota{{EventsPerSecond: -1}, {EventsPerSecond: 1}, {BytesPerSecond: 5, ByteBurst: 0.5}} {
		if bad.validate() == nil {
			t.Errorf("quota %+v accepted", bad)
		}
	}
}
