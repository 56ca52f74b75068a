package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// Reconnect back-off of an agent connection: doubling from the first delay up to the cap, with up
// to 20% jitter so a fleet does not reconnect in step after a hub restart.
const (
	agentReconnectFirst = 250 * time.Millisecond
	agentReconnectMax   = 30 * time.Second
)

// Headers the server sets on JetStream messages; see GetDesired and WatchDesired.
const (
	hdrStatus   = "Status"
	hdrStream   = "Nats-Stream"
	hdrSubject  = "Nats-Subject"
	hdrSequence = "Nats-Sequence"
	hdrKVOp     = "KV-Operation"
)

// ConnectAgent connects an agent with its own credentials. The reply inbox is the agent's own
// (wire.AgentInbox), the only one its permissions allow, and the connection reconnects forever
// with back-off, authorization errors included (a credential look-up can fail while the hub's
// store is down). The first connection is not retried: its error is returned. opts are applied
// after the defaults.
//
// User names and passwords in the URLs are dropped: nats.go would prefer them to the agent's own
// credentials, and an agent must never connect as anyone but itself.
func ConnectAgent(urls []string, agentID, password string, opts ...nats.Option) (*nats.Conn, error) {
	if !ValidAgentID(agentID) {
		return nil, fault.Invalid("agentID", "not a canonical UUID: %q", agentID)
	}
	if len(urls) == 0 {
		return nil, fault.Invalid("urls", "at least one NATS URL is required")
	}
	clean := make([]string, len(urls))
	for i, u := range urls {
		s, err := credential.StripUserinfo(u)
		if err != nil {
			return nil, fault.Invalid("urls", "%v", err)
		}
		clean[i] = s
	}
	urls = clean
	base := []nats.Option{
		nats.UserInfo(agentID, password),
		nats.CustomInboxPrefix(wire.AgentInbox(agentID)),
		nats.Name("godwit-agent " + agentID),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(agentReconnectDelay),
		nats.IgnoreAuthErrorAbort(),
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
	}
	nc, err := nats.Connect(strings.Join(urls, ","), append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect agent: %w", err)
	}
	return nc, nil
}

func agentReconnectDelay(attempts int) time.Duration {
	d := agentReconnectMax
	if attempts < 8 {
		d = min(agentReconnectFirst<<attempts, agentReconnectMax)
	}
	return d + rand.N(d/5+1)
}

// jsPubAck is JetStream's reply to a publish on a stream subject.
type jsPubAck struct {
	Stream string      `json:"stream"`
	Seq    uint64      `json:"seq"`
	Error  *jsAPIError `json:"error,omitempty"`
}

type jsAPIError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *jsAPIError) Error() string {
	return fmt.Sprintf("jetstream: %s (status %d, code %d)", e.Description, e.Code, e.ErrCode)
}

// PutHeartbeat writes hb under the agent's key in the heartbeat bucket and returns the entry's
// revision. It is a plain request on the KV subject; JetStream's acknowledgement carries the
// revision as the stream sequence. hb.AgentID is set to agentID when empty and must match it
// otherwise (the hub trusts the key, not the body).
func PutHeartbeat(ctx context.Context, nc *nats.Conn, agentID string, hb wire.Heartbeat) (rev uint64, err error) {
	if !ValidAgentID(agentID) {
		return 0, fault.Invalid("agentID", "not a canonical UUID: %q", agentID)
	}
	if hb.AgentID == "" {
		hb.AgentID = agentID
	} else if hb.AgentID != agentID {
		return 0, fault.Invalid("agent_id", "heartbeat for %q sent as %q", hb.AgentID, agentID)
	}
	data, err := json.Marshal(hb)
	if err != nil {
		return 0, fmt.Errorf("put heartbeat: %w", err)
	}
	rev, err = putOwnKey(ctx, nc, wire.BucketHeartbeats, agentID, data)
	if err != nil {
		return 0, fmt.Errorf("put heartbeat: %w", err)
	}
	return rev, nil
}

// PutObserved writes the agent's observed assignment state (JSON) under its own key.
func PutObserved(ctx context.Context, nc *nats.Conn, agentID string, value []byte) (rev uint64, err error) {
	if !ValidAgentID(agentID) {
		return 0, fault.Invalid("agentID", "not a canonical UUID: %q", agentID)
	}
	rev, err = putOwnKey(ctx, nc, wire.BucketObserved, agentID, value)
	if err != nil {
		return 0, fmt.Errorf("put observed state: %w", err)
	}
	return rev, nil
}

// putOwnKey is a KV put as a plain request on the key's subject, checking JetStream's PubAck.
func putOwnKey(ctx context.Context, nc *nats.Conn, bucket, agentID string, data []byte) (uint64, error) {
	resp, err := nc.RequestWithContext(ctx, wire.KVSubject(bucket, agentID), data)
	if err != nil {
		return 0, requestErr(err)
	}
	var ack jsPubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, fmt.Errorf("bad acknowledgement %q: %w", resp.Data, err)
	}
	if ack.Error != nil {
		return 0, ack.Error
	}
	if want := "KV_" + bucket; ack.Stream != want || ack.Seq == 0 {
		return 0, fmt.Errorf("acknowledgement from stream %q seq %d, want %q", ack.Stream, ack.Seq, want)
	}
	return ack.Seq, nil
}

// GetDesired reads the agent's desired state with a JetStream direct get of the key's last value.
// A key that is absent, deleted or purged is an error wrapping fault.ErrNotFound.
func GetDesired(ctx context.Context, nc *nats.Conn, agentID string) (value []byte, rev uint64, err error) {
	value, rev, err = getOwnKey(ctx, nc, wire.BucketDesired, agentID)
	if err != nil {
		return nil, 0, fmt.Errorf("get desired: %w", err)
	}
	return value, rev, nil
}

// getOwnKey reads the last value of the agent's key in a hub-written bucket with a direct get.
func getOwnKey(ctx context.Context, nc *nats.Conn, bucket, agentID string) (value []byte, rev uint64, err error) {
	if !ValidAgentID(agentID) {
		return nil, 0, fault.Invalid("agentID", "not a canonical UUID: %q", agentID)
	}
	key := wire.KVSubject(bucket, agentID)
	resp, err := nc.RequestWithContext(ctx, wire.KVDirectGetSubject(bucket, agentID), nil)
	if err != nil {
		return nil, 0, requestErr(err)
	}
	switch status := resp.Header.Get(hdrStatus); status {
	case "":
	case "404":
		return nil, 0, fault.ErrNotFound
	default:
		return nil, 0, fmt.Errorf("direct get status %s %s", status, resp.Header.Get("Description"))
	}
	if subj := resp.Header.Get(hdrSubject); subj != key {
		return nil, 0, fmt.Errorf("reply for subject %q, want %q", subj, key)
	}
	rev, err = strconv.ParseUint(resp.Header.Get(hdrSequence), 10, 64)
	if err != nil || rev == 0 {
		return nil, 0, fmt.Errorf("bad %s header %q", hdrSequence, resp.Header.Get(hdrSequence))
	}
	switch resp.Header.Get(hdrKVOp) {
	case "DEL", "PURGE":
		return nil, 0, fmt.Errorf("deleted at revision %d: %w", rev, fault.ErrNotFound)
	}
	return resp.Data, rev, nil
}

// WatchDesired calls fn, on the subscription's goroutine, for each put to the agent's desired-state
// key as it is published, with no replay of what came before. A delete or purge is delivered with
// a nil value.
//
// Every call is a hint, never the state itself: a core subscription sees a publish even when
// JetStream then rejects it (a failed compare-and-set), a put carries no revision (rev is always 0),
// and another agent can aim a JetStream response at this subject (see the package comment). Messages
// carrying JetStream response headers are dropped as such forgeries; for the rest the agent must
// read the state with GetDesired before acting.
func WatchDesired(nc *nats.Conn, agentID string, fn func(value []byte, rev uint64)) (*nats.Subscription, error) {
	sub, err := watchOwnKey(nc, wire.BucketDesired, agentID, fn)
	if err != nil {
		return nil, fmt.Errorf("watch desired: %w", err)
	}
	return sub, nil
}

// watchOwnKey subscribes to live puts of the agent's key in a hub-written bucket (see
// WatchDesired for why every call is only a hint).
func watchOwnKey(nc *nats.Conn, bucket, agentID string, fn func(value []byte, rev uint64)) (*nats.Subscription, error) {
	if !ValidAgentID(agentID) {
		return nil, fault.Invalid("agentID", "not a canonical UUID: %q", agentID)
	}
	return nc.Subscribe(wire.KVSubject(bucket, agentID), func(m *nats.Msg) {
		h := m.Header
		if h.Get(hdrStatus) != "" || h.Get(hdrStream) != "" || h.Get(hdrSequence) != "" {
			return
		}
		switch h.Get(hdrKVOp) {
		case "DEL", "PURGE":
			fn(nil, 0)
			return
		}
		fn(m.Data, 0)
	})
}

// requestErr marks the failures a caller should retry later as fault.ErrUnavailable.
func requestErr(err error) error {
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", fault.ErrUnavailable, err)
	}
	return err
}
