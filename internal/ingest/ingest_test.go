package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// Two replicas on the one shared consumer split the events between them, and every event is
// stored exactly once, re-publishes included.
func TestReplicasShareTheWork(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	_, reg1 := bd.ingester(t, "hub-1", Config{Batch: 10})
	_, reg2 := bd.ingester(t, "hub-2", Config{Batch: 10})

	agents := []string{newAgentID(t), newAgentID(t), newAgentID(t)}
	const n = 300
	base := time.Now()
	var events []wire.Event
	for k := range n {
		a := agents[k%len(agents)]
		ev := agentEvent(a, wire.EventExecutionSucceeded, base.Add(time.Duration(k)*time.Millisecond), "m1")
		events = append(events, ev)
		bd.publish(t, wire.EventSubject(a), ev)
	}
	bd.waitDrained(t, n)
	h1, h2 := handled(t, reg1), handled(t, reg2)
	if h1 == 0 || h2 == 0 || h1+h2 != n {
		t.Errorf("replicas handled %v and %v events, want both > 0 and %d in all", h1, h2, n)
	}
	if got := metric(t, reg1, "godwit_ingest_events_ingested_total") + metric(t, reg2, "godwit_ingest_events_ingested_total"); got != n {
		t.Errorf("events_ingested_total = %v, want %d", got, n)
	}

	// The same events again under new Nats-Msg-Ids (an outbox retry after the duplicate window):
	// the stream takes them, the store skips them.
	for _, ev := range events {
		b := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":%q,"type":%q,"time":%q,"severity":"info"}`,
			ev.ID, ev.Source, ev.Type, ev.Time.Format(time.RFC3339Nano))
		bd.publishRaw(t, wire.EventSubject(strings.TrimPrefix(ev.Source, "/agents/")), []byte(b),
			nats.Header{"Nats-Msg-Id": {ev.ID + ":again"}})
	}
	waitFor(t, 20*time.Second, func() error {
		d := metric(t, reg1, "godwit_ingest_events_duplicate_total") + metric(t, reg2, "godwit_ingest_events_duplicate_total")
		if d != n {
			return fmt.Errorf("%v duplicates skipped, want %d", d, n)
		}
		return nil
	})
	bd.waitDrained(t, n)
}

// A replica that commits a batch and dies before acknowledging it: after the ack wait the
// survivor gets that batch again, and the store still holds every event once.
func TestCrashedReplicaWorkIsRedelivered(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	const ackWait = time.Second

	entered := make(chan int, 1)
	crashing := &wrapStore{Store: bd.store}
	crashing.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		n, err := bd.store.InsertEvents(ctx, events, states) // committed...
		select {
		case entered <- len(events):
		default:
		}
		<-ctx.Done() // ...and never acknowledged: the replica hangs until it is killed
		return n, err
	}
	nc, err := bd.srv.ConnectHub("doomed")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	bd.ingester(t, "doomed", Config{JS: js, Store: crashing, Batch: 25, AckWait: ackWait})

	a := newAgentID(t)
	const n = 100
	for k := range n {
		bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, time.Now().Add(time.Duration(k)), ""))
	}
	var inFlight int
	select {
	case inFlight = <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the doomed replica never took a batch")
	}
	nc.Close() // killed: nothing it does reaches the server any more

	_, reg := bd.ingester(t, "survivor", Config{Batch: 25, AckWait: ackWait})
	bd.waitDrained(t, n)
	if got := metric(t, reg, "godwit_ingest_events_ingested_total"); got != float64(n-inFlight) {
		t.Errorf("survivor stored %v new events, want %d (the doomed replica committed %d)", got, n-inFlight, inFlight)
	}
	if got := metric(t, reg, "godwit_ingest_events_duplicate_total"); got != float64(inFlight) {
		t.Errorf("survivor skipped %v duplicates, want %d", got, inFlight)
	}
	if got := metric(t, reg, "godwit_ingest_redeliveries_total"); got < float64(inFlight) {
		t.Errorf("redeliveries_total = %v, want at least %d", got, inFlight)
	}
}

// Stop lets the batch in flight finish, acknowledges it, and fetches nothing more.
func TestStopDrainsInFlightBatch(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	entered := make(chan int, 1)
	release := make(chan struct{})
	slow := &wrapStore{Store: bd.store}
	slow.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		select {
		case entered <- len(events):
		default:
		}
		<-release
		return bd.store.InsertEvents(ctx, events, states)
	}
	ing, _ := bd.ingester(t, "hub", Config{Store: slow, Batch: 50})

	a := newAgentID(t)
	for k := range 20 {
		bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, time.Now().Add(time.Duration(k)), ""))
	}
	inFlight := <-entered

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- ing.Stop(ctx)
	}()
	// Events published while stopping are left (or handed back) for the other replicas.
	for k := range 5 {
		bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, time.Now().Add(time.Duration(k)), ""))
	}
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a batch was in flight", err)
	default:
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if n := bd.count(t); n != int64(inFlight) {
		t.Errorf("%d events stored, want the %d of the batch in flight", n, inFlight)
	}
	// The rest was never delivered, or was delivered to this replica (read ahead, or on its open
	// pull request) and handed back for immediate redelivery; none of it is acknowledged.
	pending, ackPending := bd.consumerLag(t)
	if pending+uint64(ackPending) != uint64(25-inFlight) {
		t.Errorf("after Stop: %d pending, %d ack pending (handed back); want %d in all", pending, ackPending, 25-inFlight)
	}
	if err := ing.Stop(testCtx(t)); err != nil {
		t.Errorf("second Stop: %v", err)
	}

	// Another replica takes the rest.
	bd.ingester(t, "hub-2", Config{})
	bd.waitDrained(t, 25)
}

// When the budget runs out, Stop returns the context's error, the store call is cancelled and the
// batch is handed back at once; nothing is lost.
func TestStopBudgetExhausted(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	entered := make(chan struct{}, 1)
	stuck := &wrapStore{Store: bd.store}
	stuck.InsertEventsFunc = func(ctx context.Context, _ []store.StoredEvent, _ []store.EventState) (int, error) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return 0, ctx.Err()
	}
	ing, _ := bd.ingester(t, "hub", Config{Store: stuck})
	a := newAgentID(t)
	for k := range 10 {
		bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, time.Now().Add(time.Duration(k)), ""))
	}
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := ing.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop with an exhausted budget = %v, want DeadlineExceeded", err)
	}
	// The worker ends once the cancelled store call returns; a second Stop waits for it.
	if err := ing.Stop(testCtx(t)); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	// Handed back, not left to the ack wait (30s here): a new replica stores them right away.
	bd.ingester(t, "hub-2", Config{})
	bd.waitDrained(t, 10)
}

// A panic in the worker is reported on Fatal, counted and logged with its stack; the batch is
// left for redelivery.
func TestWorkerPanicIsFatal(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	boom := &wrapStore{Store: bd.store}
	boom.InsertEventsFunc = func(context.Context, []store.StoredEvent, []store.EventState) (int, error) {
		panic("store exploded")
	}
	ing, reg := bd.ingester(t, "hub", Config{Store: boom})
	a := newAgentID(t)
	seq := bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, time.Now(), ""))

	select {
	case err := <-ing.Fatal():
		if err == nil || !strings.Contains(err.Error(), "store exploded") {
			t.Errorf("Fatal delivered %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no error on Fatal after a panic")
	}
	if got := metric(t, reg, "godwit_worker_panics_total", "worker", "ingest"); got != 1 {
		t.Errorf("godwit_worker_panics_total = %v, want 1", got)
	}
	logs := bd.logs.String()
	if !strings.Contains(logs, "worker panicked") || !strings.Contains(logs, "goroutine ") ||
		!strings.Contains(logs, fmt.Sprintf("first_stream_seq=%d", seq)) {
		t.Errorf("panic log lacks the message, the stack or the stream sequence:\n%s", logs)
	}
	if err := ing.Stop(testCtx(t)); err != nil {
		t.Errorf("Stop after a panic: %v", err)
	}
	if _, ackPending := bd.consumerLag(t); ackPending != 1 {
		t.Errorf("ack pending = %d, want the panicking batch (1) left for redelivery", ackPending)
	}
}

func TestStartStopAreSafeTwice(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ing := New(fast(Config{JS: bd.connect(t, "hub"), Store: bd.store}))
	if err := ing.Stop(testCtx(t)); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	for range 2 {
		if err := ing.Start(testCtx(t)); err != nil {
			t.Fatalf("Start: %v", err)
		}
	}
	for range 2 {
		if err := ing.Stop(testCtx(t)); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
	// Started again after a stop, it picks up where the consumer is.
	a := newAgentID(t)
	bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, time.Now(), ""))
	if err := ing.Start(testCtx(t)); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	defer func() { _ = ing.Stop(testCtx(t)) }()
	bd.waitDrained(t, 1)
	p, ap, err := ing.Lag(testCtx(t))
	if err != nil || p != 0 || ap != 0 {
		t.Errorf("Lag = %d, %d, %v", p, ap, err)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	js := bd.connect(t, "hub")
	for field, cfg := range map[string]Config{
		"JS":         {Store: bd.store},
		"Store":      {JS: js},
		"Batch":      {JS: js, Store: bd.store, Batch: -1},
		"MaxWait":    {JS: js, Store: bd.store, MaxWait: time.Minute, AckWait: time.Second},
		"MaxDeliver": {JS: js, Store: bd.store, MaxDeliver: -1},
		"NakDelay":   {JS: js, Store: bd.store, NakDelay: -time.Second},
	} {
		err := New(cfg).Start(testCtx(t))
		var fe *fault.FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: Start = %v, want a field error naming it", field, err)
		}
	}
}

// Hub-published events are stored; they do not move any agent's state.
func TestHubEvents(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	var stateRows atomic.Int64
	counting := &wrapStore{Store: bd.store}
	counting.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		stateRows.Add(int64(len(states)))
		return bd.store.InsertEvents(ctx, events, states)
	}
	bd.ingester(t, "hub", Config{Store: counting})
	a := newAgentID(t)
	ev := wire.NewEvent(wire.HubSource("hub-1"), wire.EventAgentEnrolled, wire.SeverityInfo, wire.EventData{AgentID: a})
	bd.publish(t, "godwit.events.hub", ev)
	bd.waitDrained(t, 1)
	if n := stateRows.Load(); n != 0 {
		t.Errorf("%d state rows written for a hub event", n)
	}
	page, _, err := bd.store.QueryEvents(testCtx(t), store.EventQuery{AgentID: a, Limit: 10})
	if err != nil || len(page) != 1 || page[0].ID != ev.ID {
		t.Errorf("query by agent: %v, %v", page, err)
	}
}

// A batch is stored once its messages stop coming, not when the pull request that brought them
// expires: a few events on an otherwise idle stream are stored while the request is still open
// (MaxWait long), and the events that complete the request later are stored too.
func TestPartialBatchIsStoredBeforeTheRequestEnds(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	const maxWait, batch = 5 * time.Second, 100
	stored := make(chan time.Time, 10)
	timed := &wrapStore{Store: bd.store}
	timed.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		n, err := bd.store.InsertEvents(ctx, events, states)
		select {
		case stored <- time.Now():
		default:
		}
		return n, err
	}
	ing, _ := bd.ingester(t, "hub", Config{Store: timed, Batch: batch, MaxWait: maxWait, AckWait: 30 * time.Second})

	a := newAgentID(t)
	published := time.Now() // the ingester's first request is already open: it waits from Start
	for k := range 3 {
		bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, time.Now().Add(time.Duration(k)), ""))
	}
	bd.waitDrained(t, 3)
	if at := <-stored; at.Sub(published) >= maxWait {
		t.Errorf("the first batch was stored %s after its events were published, when its request expired (MaxWait %s)",
			at.Sub(published).Round(time.Millisecond), maxWait)
	}
	// The rest of the open request (and more) arrives later; nothing is lost or left waiting.
	for k := range batch {
		bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, time.Now().Add(time.Duration(k)), ""))
	}
	bd.waitDrained(t, 3+batch)
	if err := ing.Stop(testCtx(t)); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// A backlog is written in full batches, read one ahead of the store: every batch but the last
// is full. A read that ends with its pull request must not stop the reading ahead while the
// stream holds more.
func TestBacklogIsWrittenInFullBatches(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	const batch, events = 100, 4*100 + 10
	a := newAgentID(t)
	for k := range events {
		bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventAgentStarted, time.Now().Add(time.Duration(k)), ""))
	}
	var mu sync.Mutex
	var sizes []int
	counted := &wrapStore{Store: bd.store}
	counted.InsertEventsFunc = func(ctx context.Context, evs []store.StoredEvent, states []store.EventState) (int, error) {
		mu.Lock()
		sizes = append(sizes, len(evs))
		mu.Unlock()
		return bd.store.InsertEvents(ctx, evs, states)
	}
	bd.ingester(t, "hub", Config{Store: counted, Batch: batch, MaxWait: time.Second})
	bd.waitDrained(t, events)
	mu.Lock()
	defer mu.Unlock()
	if want := []int{batch, batch, batch, batch, events % batch}; !slices.Equal(sizes, want) {
		t.Fatalf("a backlog of %d events was written in batches of %v, want %v", events, sizes, want)
	}
}
