package ingest

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/ratelimit"
)

// Quota bounds what one agent may send: events and bytes a second on average, and at once.
// It is judged on the events stream's timestamps — when the broker stored each event — so a
// backlog fetched after an outage is judged by when it was sent, not by how fast the ingest
// catches up, and no agent clock counts. A zero rate leaves that measure unbounded.
type Quota struct {
	EventsPerSecond float64
	EventBurst      float64
	BytesPerSecond  float64
	ByteBurst       float64
}

func (q Quota) validate() error {
	switch {
	case q.EventsPerSecond < 0 || q.EventBurst < 0 || q.BytesPerSecond < 0 || q.ByteBurst < 0:
		return fault.Invalid("Quota", "rates and bursts must not be negative")
	case q.EventsPerSecond > 0 && q.EventBurst < 1:
		return fault.Invalid("Quota.EventBurst", "must be at least 1 with an event rate")
	case q.BytesPerSecond > 0 && q.ByteBurst < 1:
		return fault.Invalid("Quota.ByteBurst", "must be at least 1 with a byte rate")
	}
	return nil
}

// maxQuotaAgents bounds the agents whose buckets are remembered; full buckets (agents within
// their quota) are forgotten when it is reached.
const maxQuotaAgents = 100000

// clampWarnEvery is how often, at most, one agent's skewed clock is logged.
const clampWarnEvery = time.Minute

// quotas holds each agent's buckets and when its skewed clock was last logged. prepare runs one
// batch at a time, but not always on the same goroutine, hence the lock.
type quotas struct {
	events, bytes ratelimit.Rate
	mu            sync.Mutex
	agents        map[string]*agentQuota
}

type agentQuota struct {
	events, bytes ratelimit.Bucket
	warned        time.Time
}

func newQuotas(q Quota) *quotas {
	return &quotas{
		events: ratelimit.Rate{PerSecond: q.EventsPerSecond, Burst: q.EventBurst},
		bytes:  ratelimit.Rate{PerSecond: q.BytesPerSecond, Burst: q.ByteBurst},
		agents: map[string]*agentQuota{},
	}
}

func (q *quotas) agent(id string, at time.Time) *agentQuota {
	a := q.agents[id]
	if a != nil {
		return a
	}
	if len(q.agents) >= maxQuotaAgents {
		for k, other := range q.agents {
			if q.full(other, at) {
				delete(q.agents, k)
			}
		}
	}
	a = &agentQuota{}
	q.agents[id] = a
	return a
}

func (q *quotas) full(a *agentQuota, at time.Time) bool {
	return (q.events.PerSecond == 0 || q.events.Level(&a.events, at) >= q.events.Burst) &&
		(q.bytes.PerSecond == 0 || q.bytes.Level(&a.bytes, at) >= q.bytes.Burst)
}

// bounded reports whether the quota bounds anything.
func (q *quotas) bounded() bool { return q.events.PerSecond > 0 || q.bytes.PerSecond > 0 }

// take charges one event of size bytes, stored at at, to the agent, or says why it is over its
// quota (and charges nothing).
func (q *quotas) take(agentID string, size int, at time.Time) error {
	if !q.bounded() {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	a := q.agent(agentID, at)
	if q.events.PerSecond > 0 && q.events.Level(&a.events, at) < 1 {
		return fmt.Errorf("agent %s is over its event quota (%g a second, %g at once)", agentID, q.events.PerSecond, q.events.Burst)
	}
	if q.bytes.PerSecond > 0 && !q.bytes.Take(&a.bytes, float64(size), at) {
		return fmt.Errorf("agent %s is over its byte quota (%g bytes a second, %g at once; this event is %d bytes)",
			agentID, q.bytes.PerSecond, q.bytes.Burst, size)
	}
	if q.events.PerSecond > 0 {
		q.events.Take(&a.events, 1, at)
	}
	return nil
}

// warnClamped logs an agent's event stored at its receipt time, at most once a minute per agent.
func (q *quotas) warnClamped(log *slog.Logger, it *item) {
	q.mu.Lock()
	a := q.agent(it.agent, it.ev.ReceivedAt)
	due := it.ev.ReceivedAt.Sub(a.warned) >= clampWarnEvery
	if due {
		a.warned = it.ev.ReceivedAt
	}
	q.mu.Unlock()
	if due {
		log.Warn("ingest: an agent's clock is ahead of the hub's: its events are stored at their receipt time", "agent", it.agent,
			"agent_time", *it.ev.AgentTime, "received", it.ev.ReceivedAt, "ahead", it.ev.AgentTime.Sub(it.ev.ReceivedAt).Round(time.Second))
	}
}
