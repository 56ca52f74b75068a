package ui

// Live updates. A page names a topic and the topic's mark at the time its data was read (data-
// live-topic, data-live-mark on <body>). The page's script opens /ui/live for that topic; the hub
// polls the topic's mark — a few indexed reads, never the page's data — once per interval, with
// one poller per topic however many browsers watch it, and sends "change" when the mark moves.
// The script then fetches the page again and swaps the regions marked data-live.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Topics. Those ending in ":" take an id or name.
const (
	topicDashboard   = "dashboard"
	topicAgents      = "agents"
	topicAgent       = "agent:"
	topicEvents      = "events"
	topicMigrations  = "migrations"
	topicMigration   = "migration:"
	topicDeadLetters = "dlq"
	topicSweeps      = "sweeps"
	topicSweep       = "sweep:"
	topicFailover    = "failover"
)

// keepAlive is how often an idle stream gets a comment line (proxies close silent connections)
// and its session is checked again.
const keepAlive = 15 * time.Second

func validTopic(t string) bool {
	if len(t) > 300 {
		return false
	}
	switch t {
	case topicDashboard, topicAgents, topicEvents, topicMigrations, topicDeadLetters, topicSweeps, topicFailover:
		return true
	}
	for _, p := range []string{topicAgent, topicMigration, topicSweep} {
		if rest, ok := strings.CutPrefix(t, p); ok && rest != "" {
			return true
		}
	}
	return false
}

// latestEvent is the id of the newest event matching q ("" if none).
func (s *Server) latestEvent(ctx context.Context, q store.EventQuery) (string, error) {
	q.Limit = 1
	page, _, err := s.cfg.Store.QueryEvents(ctx, q)
	if err != nil || len(page) == 0 {
		return "", err
	}
	return page[0].ID, nil
}

func countsMark(c map[string]int) string {
	return fmt.Sprintf("%d.%d.%d.%d", c[wire.StatusOnline], c[wire.StatusOffline], c[wire.StatusUnknown], c[store.AgentRevoked])
}

// mark is a short string that changes when what a topic's page shows changes.
func (s *Server) mark(ctx context.Context, topic string) (string, error) {
	st := s.cfg.Store
	parts := []string{}
	add := func(v string, err error) error {
		parts = append(parts, v)
		return err
	}
	switch {
	case topic == topicDashboard:
		counts, err := st.CountAgentsByStatus(ctx)
		if err != nil {
			return "", err
		}
		parts = append(parts, countsMark(counts))
		if err := add(st.MigrationsMark(ctx)); err != nil {
			return "", err
		}
		if err := add(s.latestEvent(ctx, store.EventQuery{Severities: []string{wire.SeverityError}})); err != nil {
			return "", err
		}
		parts = append(parts, s.pipelineMark(ctx, true))
	case topic == topicAgents:
		counts, err := st.CountAgentsByStatus(ctx)
		if err != nil {
			return "", err
		}
		parts = append(parts, countsMark(counts))
	case strings.HasPrefix(topic, topicAgent):
		id := strings.TrimPrefix(topic, topicAgent)
		a, err := st.GetAgent(ctx, id)
		if err != nil && statusOf(err) != http.StatusNotFound {
			return "", err
		}
		parts = append(parts, a.Status, strconv.FormatBool(a.RevokedAt != nil))
		if err := add(s.latestEvent(ctx, store.EventQuery{AgentID: id})); err != nil {
			return "", err
		}
		if err := add(st.MigrationsMark(ctx)); err != nil {
			return "", err
		}
	case topic == topicEvents:
		if err := add(s.latestEvent(ctx, store.EventQuery{})); err != nil {
			return "", err
		}
	case topic == topicMigrations:
		if err := add(st.MigrationsMark(ctx)); err != nil {
			return "", err
		}
	case strings.HasPrefix(topic, topicMigration):
		name := strings.TrimPrefix(topic, topicMigration)
		m, err := st.GetMigration(ctx, name)
		if err != nil && statusOf(err) != http.StatusNotFound {
			return "", err
		}
		// Not the version: the controller writes a running migration on every pass (its active
		// time), which would redraw the page every second for nothing.
		parts = append(parts, m.State, m.Reason, strconv.Itoa(m.CurrentBatch), strconv.Itoa(m.ApprovedBatch))
		counts, err := st.CountAssignments(ctx, name)
		if err != nil {
			return "", err
		}
		states := make([]string, 0, len(counts))
		for k, n := range counts {
			states = append(states, k+"="+strconv.Itoa(n))
		}
		sort.Strings(states)
		parts = append(parts, strings.Join(states, ","))
		if err := add(s.latestEvent(ctx, store.EventQuery{Migration: name})); err != nil {
			return "", err
		}
	case topic == topicDeadLetters:
		parts = append(parts, s.pipelineMark(ctx, false))
	case topic == topicSweeps:
		if err := add(s.sweepsMark(ctx, "")); err != nil {
			return "", err
		}
	case strings.HasPrefix(topic, topicSweep):
		if err := add(s.sweepsMark(ctx, strings.TrimPrefix(topic, topicSweep))); err != nil {
			return "", err
		}
	case topic == topicFailover:
		if err := add(s.failoverMark(ctx)); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("unknown live topic %q", topic)
	}
	return strings.Join(parts, "|"), nil
}

// pipelineMark is the dead-letter count and, with lag, the ingest's backlog.
func (s *Server) pipelineMark(ctx context.Context, lag bool) string {
	if s.cfg.Pipeline == nil {
		return "none"
	}
	st, err := api.IngestStatus(ctx, s.cfg.Pipeline)
	if err != nil {
		return "error"
	}
	if lag {
		return fmt.Sprintf("%d.%d.%d", st.DeadLetters, st.Pending, st.AckPending)
	}
	return strconv.FormatUint(st.DeadLetters, 10)
}

// liveStream is the server-sent events endpoint: GET /ui/live?topic=…&since=<mark>.
func (s *Server) liveStream(w http.ResponseWriter, r *http.Request) {
	c := sessionFrom(r.Context())
	topic := r.URL.Query().Get("topic")
	if !validTopic(topic) {
		http.Error(w, "unknown topic", http.StatusBadRequest)
		return
	}
	cur, err := s.mark(r.Context(), topic)
	if err != nil {
		s.log.Warn("ui: live mark failed", "topic", topic, "err", err)
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(event, data string) bool {
		_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, strings.ReplaceAll(data, "\n", " "))
		return err == nil && rc.Flush() == nil
	}
	if _, err := fmt.Fprint(w, "retry: 3000\n\n"); err != nil {
		return
	}
	// The page may be older than the mark already (it changed while the page loaded).
	if since := r.URL.Query().Get("since"); since != cur {
		if !send("change", cur) {
			return
		}
	} else if rc.Flush() != nil {
		return
	}
	ch, unsubscribe := s.live.subscribe(topic, cur)
	defer unsubscribe()
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.closed:
			return
		case m := <-ch:
			if !send("change", m) {
				return
			}
		case <-tick.C:
			if _, err := s.cfg.Store.GetSession(r.Context(), c.IDHash, s.now()); err != nil {
				if statusOf(err) == http.StatusUnauthorized {
					send("logout", "session ended")
					return
				}
				continue // the store will answer again; the session is checked next time
			}
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

// watcher runs one poller per watched topic and fans its changes out to the subscribers.
type watcher struct {
	interval time.Duration
	mark     func(ctx context.Context, topic string) (string, error)
	log      *slog.Logger

	mu     sync.Mutex
	topics map[string]*watched
	done   bool
}

type watched struct {
	subs map[chan string]struct{}
	last string
	stop context.CancelFunc
}

func newWatcher(interval time.Duration, mark func(ctx context.Context, topic string) (string, error), log *slog.Logger) *watcher {
	return &watcher{interval: interval, mark: mark, log: log, topics: map[string]*watched{}}
}

// subscribe returns a channel that receives the topic's new mark when it changes, and the
// function that ends the subscription. current is the mark the subscriber has seen.
func (w *watcher) subscribe(topic, current string) (<-chan string, func()) {
	ch := make(chan string, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return ch, func() {}
	}
	t := w.topics[topic]
	if t == nil {
		ctx, cancel := context.WithCancel(context.Background())
		t = &watched{subs: map[chan string]struct{}{}, last: current, stop: cancel}
		w.topics[topic] = t
		go w.poll(ctx, topic, t)
	}
	t.subs[ch] = struct{}{}
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(t.subs, ch)
		if len(t.subs) == 0 && w.topics[topic] == t {
			t.stop()
			delete(w.topics, topic)
		}
	}
}

func (w *watcher) poll(ctx context.Context, topic string, t *watched) {
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 10*w.interval)
		m, err := w.mark(qctx, topic)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				w.log.Debug("ui: live poll failed", "topic", topic, "err", err)
			}
			continue
		}
		w.mu.Lock()
		if m != t.last {
			t.last = m
			for ch := range t.subs {
				select {
				case ch <- m:
				default:
					// A change is already waiting for this subscriber; it refetches the page
					// and so sees this one too. Replace it with the newest mark.
					select {
					case <-ch:
					default:
					}
					ch <- m
				}
			}
		}
		w.mu.Unlock()
	}
}

// close stops every poller; subscriptions made afterwards never receive anything.
func (w *watcher) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	for name, t := range w.topics {
		t.stop()
		delete(w.topics, name)
	}
}
