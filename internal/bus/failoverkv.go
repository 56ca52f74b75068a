package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/wire"
)

// GetFailoverAssignment reads the agent's failover assignment; an error wrapping
// fault.ErrNotFound when the agent is in no group.
func GetFailoverAssignment(ctx context.Context, nc *nats.Conn, agentID string) (value []byte, rev uint64, err error) {
	value, rev, err = getOwnKey(ctx, nc, wire.BucketFailover, agentID)
	if err != nil {
		return nil, 0, fmt.Errorf("get failover assignment: %w", err)
	}
	return value, rev, nil
}

// WatchFailoverAssignment calls fn for each live put or delete of the agent's assignment key: a
// hint to read it again with GetFailoverAssignment (see WatchDesired).
func WatchFailoverAssignment(nc *nats.Conn, agentID string, fn func()) (*nats.Subscription, error) {
	return watchOwnKey(nc, wire.BucketFailover, agentID, func([]byte, uint64) { fn() })
}

// jsErrWrongLastSequence is JetStream's error code for a failed compare-and-set.
const jsErrWrongLastSequence = 10071

// GroupKV is a failover group's bucket as an agent reaches it: plain requests on the subjects its
// permissions allow (direct gets, and puts that JetStream checks against an expected revision),
// no JetStream API beside them. It satisfies lease.KV; Watch polls (an agent has no consumers).
type GroupKV struct {
	Conn   *nats.Conn
	Bucket string
	// Poll is Watch's polling interval; 0 means one second.
	Poll time.Duration
}

type kvEntry struct {
	bucket, key string
	value       []byte
	rev         uint64
	created     time.Time
	op          jetstream.KeyValueOp
}

func (e kvEntry) Bucket() string                  { return e.bucket }
func (e kvEntry) Key() string                     { return e.key }
func (e kvEntry) Value() []byte                   { return e.value }
func (e kvEntry) Revision() uint64                { return e.rev }
func (e kvEntry) Created() time.Time              { return e.created }
func (e kvEntry) Delta() uint64                   { return 0 }
func (e kvEntry) Operation() jetstream.KeyValueOp { return e.op }

// Get reads key's last entry; jetstream.ErrKeyNotFound when it is absent or deleted.
func (g GroupKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := g.last(ctx, key)
	if err != nil {
		return nil, err
	}
	if e.op != jetstream.KeyValuePut {
		return nil, jetstream.ErrKeyNotFound
	}
	return e, nil
}

func (g GroupKV) last(ctx context.Context, key string) (kvEntry, error) {
	resp, err := g.Conn.RequestWithContext(ctx, wire.KVDirectGetSubject(g.Bucket, key), nil)
	if err != nil {
		return kvEntry{}, requestErr(err)
	}
	switch status := resp.Header.Get(hdrStatus); status {
	case "":
	case "404":
		return kvEntry{}, jetstream.ErrKeyNotFound
	default:
		return kvEntry{}, fmt.Errorf("direct get status %s %s", status, resp.Header.Get("Description"))
	}
	if subj := resp.Header.Get(hdrSubject); subj != wire.KVSubject(g.Bucket, key) {
		return kvEntry{}, fmt.Errorf("reply for subject %q, want %q", subj, wire.KVSubject(g.Bucket, key))
	}
	rev, err := strconv.ParseUint(resp.Header.Get(hdrSequence), 10, 64)
	if err != nil || rev == 0 {
		return kvEntry{}, fmt.Errorf("bad %s header %q", hdrSequence, resp.Header.Get(hdrSequence))
	}
	created, err := time.Parse(time.RFC3339Nano, resp.Header.Get("Nats-Time-Stamp"))
	if err != nil {
		return kvEntry{}, fmt.Errorf("bad Nats-Time-Stamp header: %w", err)
	}
	e := kvEntry{bucket: g.Bucket, key: key, value: resp.Data, rev: rev, created: created, op: jetstream.KeyValuePut}
	switch resp.Header.Get(hdrKVOp) {
	case "DEL":
		e.op = jetstream.KeyValueDelete
	case "PURGE":
		e.op = jetstream.KeyValuePurge
	}
	return e, nil
}

// Create writes value if key is absent or deleted; jetstream.ErrKeyExists if it holds a value.
func (g GroupKV) Create(ctx context.Context, key string, value []byte, _ ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := g.Update(ctx, key, value, 0)
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return rev, err
	}
	// A deleted key is created again on its delete marker's revision.
	e, gerr := g.last(ctx, key)
	if gerr != nil || e.op == jetstream.KeyValuePut {
		return 0, jetstream.ErrKeyExists
	}
	return g.Update(ctx, key, value, e.rev)
}

// Update writes value if key's last revision is still revision (0: the key never existed);
// jetstream.ErrKeyRevisionMismatch otherwise.
func (g GroupKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	m := nats.NewMsg(wire.KVSubject(g.Bucket, key))
	m.Data = value
	m.Header.Set("Nats-Expected-Last-Subject-Sequence", strconv.FormatUint(revision, 10))
	resp, err := g.Conn.RequestMsgWithContext(ctx, m)
	if err != nil {
		return 0, requestErr(err)
	}
	var ack jsPubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, fmt.Errorf("bad acknowledgement %q: %w", resp.Data, err)
	}
	if ack.Error != nil {
		if ack.Error.ErrCode == jsErrWrongLastSequence {
			return 0, jetstream.ErrKeyRevisionMismatch
		}
		return 0, ack.Error
	}
	if want := "KV_" + g.Bucket; ack.Stream != want || ack.Seq == 0 {
		return 0, fmt.Errorf("acknowledgement from stream %q seq %d, want %q", ack.Stream, ack.Seq, want)
	}
	return ack.Seq, nil
}

// Watch polls key every Poll and delivers each new revision, the current one first (whatever
// the options: a member that starts must see a pause set before it). A delete or purge is
// delivered as such. The watcher ends with ctx or Stop.
//
// The record key is also read at once whenever a write to it is published — a member's
// permissions let it subscribe to its group's record subject, where the other members' writes
// pass — so a promotion is seen without waiting for the next poll. The message is only that
// nudge: a write JetStream refused (a lost compare-and-set) is published all the same, so what
// is delivered is always what a direct get returned, with the store's revision and time.
// (Control is written by the hub, in another account; it is polled only.)
func (g GroupKV) Watch(ctx context.Context, key string, _ ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	every := g.Poll
	if every <= 0 {
		every = time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &pollWatcher{updates: make(chan jetstream.KeyValueEntry), stop: cancel}
	nudge := make(chan struct{}, 1)
	var sub *nats.Subscription
	if key == groupRecordKey {
		// Without it (a failed subscribe) polling alone still delivers every revision.
		sub, _ = g.Conn.Subscribe(wire.KVSubject(g.Bucket, key), func(*nats.Msg) {
			select {
			case nudge <- struct{}{}:
			default:
			}
		})
	}
	go func() {
		defer close(w.updates)
		if sub != nil {
			defer func() { _ = sub.Unsubscribe() }()
		}
		var seen uint64
		t := time.NewTicker(every)
		defer t.Stop()
		// A nudge can arrive before the stream has stored the write it announces (the server
		// hands a publish to subscribers and to the stream's ingest apart): until a read finds
		// something new, or the nudge is nudgeRetryFor old, it reads again after a short,
		// growing wait.
		var wait time.Duration
		var until time.Time // the end of the last nudge's retries
		for {
			rctx, rcancel := context.WithTimeout(ctx, every)
			e, err := g.last(rctx, key)
			rcancel()
			var retry <-chan time.Time
			switch {
			case err == nil && e.rev != seen:
				seen, until = e.rev, time.Time{}
				select {
				case w.updates <- e:
				case <-ctx.Done():
					return
				}
			case time.Now().Before(until):
				wait = min(2*wait, nudgeRetryMax)
				retry = time.After(wait)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-retry:
			case <-nudge:
				wait, until = nudgeRetryFirst/2, time.Now().Add(nudgeRetryFor)
			}
		}
	}()
	return w, nil
}

// groupRecordKey is the group record's key in a failover group's bucket: the one key whose
// writes a member may subscribe to (AgentPermissionsIn).
const groupRecordKey = "record"

// How a nudge whose read finds no new revision is read again: first after nudgeRetryFirst,
// each wait twice the last up to nudgeRetryMax, for nudgeRetryFor after the nudge. A nudge of
// a write JetStream refused finds nothing new however long it reads; that costs a few dozen
// direct gets, only when a compare-and-set was lost.
const (
	nudgeRetryFirst = 2 * time.Millisecond
	nudgeRetryMax   = 250 * time.Millisecond
	nudgeRetryFor   = 5 * time.Second
)

type pollWatcher struct {
	updates chan jetstream.KeyValueEntry
	stop    context.CancelFunc
}

func (w *pollWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }
func (w *pollWatcher) Stop() error                             { w.stop(); return nil }
