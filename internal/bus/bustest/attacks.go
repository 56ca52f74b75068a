// Package bustest holds the attacks every topology of the bus must refuse: one table, run against
// the embedded server (internal/bus) and against an external nats-server process configured as
// docs/security.md says, with the real hub and agents (internal/hub). It is imported by tests
// only.
package bustest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/wire"
)

// Agent is an enrolled agent's identity and NATS password.
type Agent struct{ ID, Password string }

// Target is a running topology: a hub side that can see everything and two enrolled agents.
type Target struct {
	// Hub is a connection with the hub's rights in the JetStream account, JS its JetStream.
	Hub *nats.Conn
	JS  jetstream.JetStream
	// A is the attacker, B the victim. B's heartbeat must exist before RunAttacks.
	A, B Agent
	// Connect opens a connection with an agent's credentials, as the agent itself would
	// (bus.ConnectAgent with the topology's URLs and TLS settings), applying opts last.
	Connect func(t *testing.T, id, password string, opts ...nats.Option) (*nats.Conn, error)
}

// attacker is A's connection with its asynchronous errors.
type attacker struct {
	*nats.Conn
	errs chan error
}

func connectAttacker(t *testing.T, tg Target, opts ...nats.Option) *attacker {
	t.Helper()
	a := &attacker{errs: make(chan error, 256)}
	opts = append([]nats.Option{nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case a.errs <- err:
		default:
		}
	})}, opts...)
	nc, err := tg.Connect(t, tg.A.ID, tg.A.Password, opts...)
	if err != nil {
		t.Fatalf("connect as agent A: %v", err)
	}
	t.Cleanup(nc.Close)
	a.Conn = nc
	return a
}

// watch is the hub's view of every subject an attack could write to, in the order the server
// delivered it: one channel behind several subscriptions keeps the order across them.
type watch struct {
	ch   chan *nats.Msg
	subs []*nats.Subscription
}

func newWatch(t *testing.T, hub *nats.Conn, subjects ...string) *watch {
	t.Helper()
	w := &watch{ch: make(chan *nats.Msg, 1<<14)}
	for _, s := range subjects {
		sub, err := hub.ChanSubscribe(s, w.ch)
		if err != nil {
			t.Fatal(err)
		}
		w.subs = append(w.subs, sub)
	}
	t.Cleanup(func() {
		for _, s := range w.subs {
			_ = s.Unsubscribe()
		}
	})
	if err := hub.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

// attack is one row of the table: try makes the attempt on A's connection and returns the
// permission violations it must draw ("publish to \"subj\"" or "subscription to \"subj\"");
// check, when set, looks at the hub's side afterwards.
type attack struct {
	name  string
	try   func(ctx context.Context, e *env) []string
	check func(ctx context.Context, e *env) error
}

// env is what the rows share.
type env struct {
	t      *testing.T
	tg     Target
	a      *attacker
	w      *watch
	marker string
}

func pub(subject string) string { return `publish to "` + subject + `"` }
func sub(subject string) string { return `subscription to "` + subject + `"` }

// RunAttacks runs every attack of the table with A's credentials; each must be refused by the
// server (a permissions violation naming the subject) and leave nothing behind on the hub's side.
// A's own operations are checked to work first, so a topology that refuses everything does not
// pass.
func RunAttacks(t *testing.T, tg Target) {
	a, b := tg.A.ID, tg.B.ID
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	marker := "attack-" + uuid.NewString()

	// Desired documents that agents accept (unknown fields are ignored) and that name the marker.
	for _, id := range []string{a, b} {
		doc := fmt.Sprintf(`{"agent_id":%q,"epoch":0,"assignments":[],"note":"%s desired for %s"}`, id, marker, id)
		if _, err := tg.Hub.Request(wire.KVSubject(wire.BucketDesired, id), []byte(doc), 10*time.Second); err != nil {
			t.Fatalf("set desired state of %s: %v", id, err)
		}
	}
	if _, err := tg.JS.Stream(ctx, wire.StreamEvents); err != nil {
		t.Fatalf("events stream: %v", err)
	}

	e := &env{t: t, tg: tg, a: connectAttacker(t, tg), marker: marker}
	e.w = newWatch(t, tg.Hub,
		wire.EventSubject(b),
		wire.KVSubject(wire.BucketHeartbeats, b),
		wire.KVSubject(wire.BucketObserved, b),
		wire.KVSubject(wire.BucketSweepResults, b),
		wire.KVSubject(wire.BucketDesired, a),
		wire.KVSubject(wire.BucketDesired, b),
		wire.KVSubject(wire.BucketSweep, b),
		wire.KVSubject(wire.BucketHeartbeats, a), // the barrier
	)

	t.Run("A's own operations work", func(t *testing.T) {
		if _, err := bus.PutHeartbeat(ctx, e.a.Conn, a, wire.Heartbeat{Seq: 1, SentAt: time.Now()}); err != nil {
			t.Fatalf("own heartbeat: %v", err)
		}
		v, _, err := bus.GetDesired(ctx, e.a.Conn, a)
		if err != nil || !bytes.Contains(v, []byte(marker+" desired for "+a)) {
			t.Fatalf("own desired state = %q, %v", v, err)
		}
		if _, err := bus.PutObserved(ctx, e.a.Conn, a, []byte(`{}`)); err != nil {
			t.Fatalf("own observed state: %v", err)
		}
		ev, _ := json.Marshal(wire.NewEvent(wire.AgentSource(a), wire.EventAgentStarted, wire.SeverityInfo, wire.EventData{AgentID: a, Message: "attack table"}))
		if _, _, err := bus.PublishEvent(ctx, e.a.Conn, a, uuid.NewString(), ev); err != nil {
			t.Fatalf("own event: %v", err)
		}
	})
	if t.Failed() {
		return
	}
	heartbeatsBefore := streamMsgs(t, tg.JS, "KV_"+wire.BucketHeartbeats)

	for _, at := range attacks() {
		t.Run(at.name, func(t *testing.T) {
			e.t = t
			want := at.try(ctx, e)
			if err := e.a.FlushWithContext(ctx); err != nil {
				t.Fatalf("flush: %v", err)
			}
			e.waitViolations(want)
			e.barrier(ctx)
			if at.check != nil {
				if err := at.check(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	e.t = t

	// What the JetStream attacks aimed at is still there.
	for _, s := range []string{wire.StreamEvents, "KV_" + wire.BucketDesired, "KV_" + wire.BucketHeartbeats} {
		if _, err := tg.JS.Stream(ctx, s); err != nil {
			t.Errorf("stream %s after the attacks: %v", s, err)
		}
	}
	if n := streamMsgs(t, tg.JS, "KV_"+wire.BucketHeartbeats); n < heartbeatsBefore || n == 0 {
		t.Errorf("heartbeat bucket holds %d messages after the attacks, %d before", n, heartbeatsBefore)
	}
}

// waitViolations waits for a permissions violation naming each of want.
func (e *env) waitViolations(want []string) {
	e.t.Helper()
	left := map[string]bool{}
	for _, w := range want {
		left[strings.ToLower(w)] = true
	}
	timeout := time.After(10 * time.Second)
	for len(left) > 0 {
		select {
		case err := <-e.a.errs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				continue
			}
			msg := strings.ToLower(err.Error())
			for w := range left {
				if strings.Contains(msg, w) {
					delete(left, w)
				}
			}
		case <-timeout:
			e.t.Fatalf("no permissions violation for %v: the attempt was not refused", keys(left))
		}
	}
}

// barrier puts A's own heartbeat naming a fresh barrier marker and waits until the hub's watch
// delivers it: whatever A sent before it would have reached the watch first. It fails the test
// if the watch delivered anything carrying the attack marker, or a JetStream answer aimed at a
// subject the watch covers. (Answers aimed at subjects of the agents' own account, such as B's
// inbox, can land there; that is harmless by design, see the bus package comment.)
func (e *env) barrier(ctx context.Context) {
	e.t.Helper()
	bm := "barrier-" + uuid.NewString()
	if _, err := bus.PutHeartbeat(ctx, e.a.Conn, e.tg.A.ID, wire.Heartbeat{Version: bm, SentAt: time.Now()}); err != nil {
		e.t.Fatalf("barrier heartbeat: %v", err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-e.w.ch:
			if m.Subject == wire.KVSubject(wire.BucketHeartbeats, e.tg.A.ID) {
				if bytes.Contains(m.Data, []byte(bm)) {
					return
				}
				continue // A's own key: A may write there
			}
			if bytes.Contains(m.Data, []byte(e.marker)) || forgedAnswer(m) {
				e.t.Fatalf("the hub saw %s: %q (headers %v)", m.Subject, m.Data, m.Header)
			}
		case <-timeout:
			e.t.Fatal("the barrier heartbeat never reached the hub's watch")
		case <-ctx.Done():
			e.t.Fatal(ctx.Err())
		}
	}
}

// forgedAnswer reports a JetStream answer (a publish acknowledgement or a direct-get reply) on a
// subject that is not a reply inbox: the reply-subject attack landing.
func forgedAnswer(m *nats.Msg) bool {
	return bytes.Contains(m.Data, []byte(`"stream":"`)) || m.Header.Get("Nats-Stream") != "" || m.Header.Get("Status") != ""
}

func attacks() []attack {
	return []attack{
		{name: "publish an event as B", try: func(_ context.Context, e *env) []string {
			s := wire.EventSubject(e.tg.B.ID)
			e.publish(s, e.markedEvent(e.tg.B.ID))
			return []string{pub(s)}
		}},
		{name: "read B's desired state", try: func(ctx context.Context, e *env) []string {
			s := wire.KVDirectGetSubject(wire.BucketDesired, e.tg.B.ID)
			e.requestUnanswered(ctx, s)
			return []string{pub(s)}
		}},
		{name: "watch B's desired state", try: func(_ context.Context, e *env) []string {
			s := wire.KVSubject(wire.BucketDesired, e.tg.B.ID)
			e.subscribe(s)
			return []string{sub(s)}
		}},
		{name: "write B's heartbeat", try: func(_ context.Context, e *env) []string {
			s := wire.KVSubject(wire.BucketHeartbeats, e.tg.B.ID)
			e.publish(s, []byte(`{"agent_id":"`+e.tg.B.ID+`","version":"`+e.marker+`"}`))
			return []string{pub(s)}
		}},
		{name: "write B's observed state", try: func(_ context.Context, e *env) []string {
			s := wire.KVSubject(wire.BucketObserved, e.tg.B.ID)
			e.publish(s, []byte(`{"note":"`+e.marker+`"}`))
			return []string{pub(s)}
		}},
		{name: "write B's sweep results", try: func(_ context.Context, e *env) []string {
			s := wire.KVSubject(wire.BucketSweepResults, e.tg.B.ID)
			e.publish(s, []byte(`{"note":"`+e.marker+`"}`))
			return []string{pub(s)}
		}},
		{name: "read B's sweep requests", try: func(ctx context.Context, e *env) []string {
			s := wire.KVDirectGetSubject(wire.BucketSweep, e.tg.B.ID)
			e.requestUnanswered(ctx, s)
			return []string{pub(s)}
		}},
		{name: "write its own desired state", try: func(_ context.Context, e *env) []string {
			s := wire.KVSubject(wire.BucketDesired, e.tg.A.ID)
			e.publish(s, []byte(`{"agent_id":"`+e.tg.A.ID+`","epoch":999,"assignments":[],"note":"`+e.marker+` forged"}`))
			return []string{pub(s)}
		}, check: func(ctx context.Context, e *env) error {
			v, _, err := bus.GetDesired(ctx, e.a.Conn, e.tg.A.ID)
			if err != nil || bytes.Contains(v, []byte("forged")) {
				return fmt.Errorf("A's desired state after the attempt = %q, %v", v, err)
			}
			return nil
		}},
		{name: "subscribe to everything", try: func(_ context.Context, e *env) []string {
			e.subscribe(">")
			return []string{sub(">")}
		}},
		{name: "other inboxes", try: func(_ context.Context, e *env) []string {
			e.subscribe("_INBOX.>")
			e.subscribe(wire.AgentInbox(e.tg.B.ID) + ".>")
			return []string{sub("_INBOX.>"), sub(wire.AgentInbox(e.tg.B.ID) + ".>")}
		}},
		{name: "the system account", try: func(ctx context.Context, e *env) []string {
			e.subscribe("$SYS.>")
			e.requestUnanswered(ctx, "$SYS.REQ.SERVER.PING")
			e.requestUnanswered(ctx, "$SYS.REQ.SERVER.PING.CONNZ")
			return []string{sub("$SYS.>"), pub("$SYS.REQ.SERVER.PING"), pub("$SYS.REQ.SERVER.PING.CONNZ")}
		}},
		{name: "JetStream: account info", try: func(ctx context.Context, e *env) []string {
			e.requestUnanswered(ctx, "$JS.API.INFO")
			return []string{pub("$JS.API.INFO")}
		}},
		{name: "JetStream: delete the events stream", try: func(ctx context.Context, e *env) []string {
			s := "$JS.API.STREAM.DELETE." + wire.StreamEvents
			e.requestUnanswered(ctx, s)
			return []string{pub(s)}
		}, check: streamExists(wire.StreamEvents)},
		{name: "JetStream: purge the events stream", try: func(ctx context.Context, e *env) []string {
			s := "$JS.API.STREAM.PURGE." + wire.StreamEvents
			e.requestUnanswered(ctx, s)
			return []string{pub(s)}
		}, check: streamExists(wire.StreamEvents)},
		{name: "JetStream: purge the heartbeat bucket", try: func(ctx context.Context, e *env) []string {
			s := "$JS.API.STREAM.PURGE.KV_" + wire.BucketHeartbeats
			e.requestUnanswered(ctx, s)
			return []string{pub(s)}
		}, check: heartbeatOf(func(e *env) string { return e.tg.B.ID })},
		{name: "JetStream: create a consumer on the events stream", try: func(ctx context.Context, e *env) []string {
			name := "attack-" + e.marker[len(e.marker)-8:]
			s := "$JS.API.CONSUMER.CREATE." + wire.StreamEvents + "." + name
			body, _ := json.Marshal(map[string]any{"stream_name": wire.StreamEvents, "config": map[string]any{
				"name": name, "durable_name": name, "ack_policy": "explicit", "deliver_policy": "all"}})
			if err := e.a.PublishRequest(s, wire.AgentInbox(e.tg.A.ID)+".x", body); err != nil {
				e.t.Fatal(err)
			}
			return []string{pub(s)}
		}, check: func(ctx context.Context, e *env) error {
			name := "attack-" + e.marker[len(e.marker)-8:]
			if _, err := e.tg.JS.Consumer(ctx, wire.StreamEvents, name); !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return fmt.Errorf("consumer %s on the events stream: %v (want not found)", name, err)
			}
			return nil
		}},
		// A response goes wherever the requester's reply subject says, unchecked by permissions:
		// in a single account, these would rewrite B's keys and reach the JetStream API.
		{name: "responses aimed at other subjects land nowhere", try: func(ctx context.Context, e *env) []string {
			targets := []string{
				wire.KVSubject(wire.BucketDesired, e.tg.B.ID),
				wire.KVSubject(wire.BucketHeartbeats, e.tg.B.ID),
				wire.KVSubject(wire.BucketObserved, e.tg.B.ID),
				wire.EventSubject(e.tg.B.ID),
				wire.AgentInbox(e.tg.B.ID) + ".x",
				"$JS.API.STREAM.PURGE.KV_" + wire.BucketHeartbeats,
				"$JS.API.STREAM.DELETE.KV_" + wire.BucketDesired,
				"$JS.API.STREAM.DELETE." + wire.StreamEvents,
			}
			for _, reply := range targets {
				if err := e.a.PublishRequest(wire.KVDirectGetSubject(wire.BucketDesired, e.tg.A.ID), reply, nil); err != nil {
					e.t.Fatal(err)
				}
				if err := e.a.PublishRequest(wire.KVSubject(wire.BucketHeartbeats, e.tg.A.ID), reply, []byte(`{"note":"`+e.marker+`"}`)); err != nil {
					e.t.Fatal(err)
				}
			}
			return nil
		}, check: func(ctx context.Context, e *env) error {
			for _, s := range []string{wire.StreamEvents, "KV_" + wire.BucketDesired, "KV_" + wire.BucketHeartbeats} {
				if _, err := e.tg.JS.Stream(ctx, s); err != nil {
					return fmt.Errorf("stream %s: %w", s, err)
				}
			}
			return heartbeatOf(func(e *env) string { return e.tg.B.ID })(ctx, e)
		}},
		{name: "a rollup header cannot erase other heartbeats", try: func(ctx context.Context, e *env) []string {
			m := nats.NewMsg(wire.KVSubject(wire.BucketHeartbeats, e.tg.A.ID))
			m.Header.Set("Nats-Rollup", "all")
			m.Data = []byte(`{}`)
			resp, err := e.a.RequestMsgWithContext(ctx, m)
			if err != nil {
				e.t.Fatal(err)
			}
			if !strings.Contains(string(resp.Data), "rollup") || !strings.Contains(string(resp.Data), `"error"`) {
				e.t.Fatalf("rollup publish answered %q, want a rollup error", resp.Data)
			}
			return nil
		}, check: heartbeatOf(func(e *env) string { return e.tg.B.ID })},
	}
}

func (e *env) publish(subject string, data []byte) {
	e.t.Helper()
	if err := e.a.Publish(subject, data); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) subscribe(subject string) {
	e.t.Helper()
	s, err := e.a.SubscribeSync(subject)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = s.Unsubscribe() })
}

// requestUnanswered sends a request that must not be answered: a refused publish is dropped.
func (e *env) requestUnanswered(ctx context.Context, subject string) {
	e.t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if resp, err := e.a.RequestWithContext(rctx, subject, []byte(`{}`)); err == nil {
		e.t.Fatalf("%s answered: %q", subject, resp.Data)
	}
}

func (e *env) markedEvent(agentID string) []byte {
	b, _ := json.Marshal(wire.NewEvent(wire.AgentSource(agentID), wire.EventAgentStarted, wire.SeverityInfo,
		wire.EventData{AgentID: agentID, Message: e.marker}))
	return b
}

func streamExists(name string) func(context.Context, *env) error {
	return func(ctx context.Context, e *env) error {
		if _, err := e.tg.JS.Stream(ctx, name); err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		return nil
	}
}

// heartbeatOf checks that the agent's heartbeat entry is still there and is not the attacker's.
func heartbeatOf(id func(*env) string) func(context.Context, *env) error {
	return func(ctx context.Context, e *env) error {
		kv, err := e.tg.JS.KeyValue(ctx, wire.BucketHeartbeats)
		if err != nil {
			return err
		}
		en, err := kv.Get(ctx, id(e))
		if err != nil {
			return fmt.Errorf("heartbeat of %s: %w", id(e), err)
		}
		if bytes.Contains(en.Value(), []byte(e.marker)) {
			return fmt.Errorf("heartbeat of %s written by the attacker: %q", id(e), en.Value())
		}
		return nil
	}
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return info.State.Msgs
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Revocation checks that revoke (which must commit the revocation and cut live connections, as
// the hub's revoke API does) closes a live connection of agent A, that every reconnect is then
// refused, and that a fresh connection is refused too.
func Revocation(t *testing.T, tg Target, revoke func(t *testing.T)) {
	t.Helper()
	var mu sync.Mutex
	var authErrs int
	disconnected := make(chan struct{}, 8)
	reconnected := make(chan struct{}, 8)
	a := connectAttacker(t, tg,
		nats.CustomReconnectDelay(func(int) time.Duration { return 50 * time.Millisecond }),
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			select {
			case disconnected <- struct{}{}:
			default:
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if isAuthErr(err) {
				mu.Lock()
				authErrs++
				mu.Unlock()
			}
		}),
	)
	if _, err := bus.PutHeartbeat(t.Context(), a.Conn, tg.A.ID, wire.Heartbeat{SentAt: time.Now()}); err != nil {
		t.Fatalf("heartbeat before the revocation: %v", err)
	}
	revoke(t)
	select {
	case <-disconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked agent's live connection was not closed")
	}
	deadline := time.After(15 * time.Second)
	for {
		for len(a.errs) > 0 {
			if err := <-a.errs; isAuthErr(err) {
				mu.Lock()
				authErrs++
				mu.Unlock()
			}
		}
		mu.Lock()
		n := authErrs
		mu.Unlock()
		if n >= 2 {
			break
		}
		select {
		case <-reconnected:
			t.Fatal("a revoked agent reconnected")
		case <-deadline:
			t.Fatalf("saw %d refused reconnects, want 2", n)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if a.IsConnected() {
		t.Fatal("the revoked agent is connected")
	}
	nc, err := tg.Connect(t, tg.A.ID, tg.A.Password, nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("a fresh connection of the revoked agent was accepted")
	}
	if !isAuthErr(err) {
		t.Fatalf("fresh connection of the revoked agent: %v, want an authorization violation", err)
	}
	if !tg.Hub.IsConnected() {
		t.Fatal("the hub lost its connection")
	}
}

func isAuthErr(err error) bool {
	return err != nil && (errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization violation"))
}

// Limits checks the server's per-connection limits on an agent: bus.AgentMaxSubscriptions
// subscriptions are allowed, and the server refuses one more.
func Limits(t *testing.T, tg Target) {
	t.Helper()
	a := connectAttacker(t, tg)
	for i := range bus.AgentMaxSubscriptions {
		if _, err := a.Subscribe(fmt.Sprintf("%s.limit.%d", wire.AgentInbox(tg.A.ID), i), func(*nats.Msg) {}); err != nil {
			t.Fatalf("subscription %d: %v", i+1, err)
		}
	}
	if err := a.Flush(); err != nil || len(a.errs) > 0 {
		t.Fatalf("%d subscriptions: flush %v, %d errors", bus.AgentMaxSubscriptions, err, len(a.errs))
	}
	if _, err := a.Subscribe(wire.AgentInbox(tg.A.ID)+".limit.over", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	_ = a.Flush()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-a.errs:
			if errors.Is(err, nats.ErrMaxSubscriptionsExceeded) {
				if !tg.Hub.IsConnected() {
					t.Fatal("the hub lost its connection")
				}
				return
			}
			t.Logf("other error: %v", err)
		case <-deadline:
			t.Fatalf("subscription %d accepted; want the server to refuse it", bus.AgentMaxSubscriptions+1)
		}
	}
}
