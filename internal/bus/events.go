package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// HeaderMsgID is the JetStream de-duplication header: a message whose id the stream has already
// stored within its Duplicates window is acknowledged again (as a duplicate) but not stored twice.
const HeaderMsgID = "Nats-Msg-Id"

// eventPubAck is JetStream's acknowledgement of a publish on the events stream.
type eventPubAck struct {
	jsPubAck
	Duplicate bool `json:"duplicate,omitempty"`
}

// PublishEvent publishes one encoded event on the agent's event subject, with the producer's
// event id as the JetStream message id, and waits for the events stream to acknowledge it.
//
// It is a plain core-NATS request, which is all an agent's permissions allow (see the package
// comment): the agents' account imports the subject from the hub account, where the stream is.
// The stream's sequence is returned; duplicate is true when the stream already held a message with
// this id within its de-duplication window, which is a success for an at-least-once sender: the
// event is stored exactly once. Beyond the window the hub's sink de-duplicates by the event id.
//
// Failures worth retrying later (no connection, no responder because the stream or the hub is
// down, a timeout) wrap fault.ErrUnavailable. ctx bounds the wait and should carry a deadline.
func PublishEvent(ctx context.Context, nc *nats.Conn, agentID, eventID string, payload []byte) (seq uint64, duplicate bool, err error) {
	if !ValidAgentID(agentID) {
		return 0, false, fault.Invalid("agentID", "not a canonical UUID: %q", agentID)
	}
	if eventID == "" {
		return 0, false, fault.Invalid("eventID", "an event id is required for de-duplication")
	}
	if len(payload) > wire.MaxEventBytes {
		return 0, false, fmt.Errorf("publish event %s: %d bytes, over the %d-byte limit: %w",
			eventID, len(payload), wire.MaxEventBytes, fault.ErrTooLarge)
	}
	msg := nats.NewMsg(wire.EventSubject(agentID))
	msg.Header.Set(HeaderMsgID, eventID)
	msg.Data = payload
	return requestEvents(ctx, nc, msg, "event "+eventID)
}

// BatchOverhead is what PublishEvents reserves of the connection's max payload for the
// headers of a batch.
const BatchOverhead = 1024

// MaxBatchBytes is the largest batch body PublishEvents sends on nc: wire.MaxBatchBytes, or less
// when the server's max payload is smaller.
func MaxBatchBytes(nc *nats.Conn) int {
	return min(wire.MaxBatchBytes, int(nc.MaxPayload())-BatchOverhead)
}

// PublishEvents publishes encoded events of one agent as one event batch (see wire.HeaderEvents)
// on the agent's event subject, with wire.EventBatchID of their ids as the JetStream message
// id, and waits for the events stream to acknowledge it, as PublishEvent does for one event.
// ids[n] is the id of payloads[n].
//
// A batch holds 1 to wire.MaxBatchEvents events of at most wire.MaxEventBytes each, and its
// body at most MaxBatchBytes(nc); an event holding a newline cannot be batched (send it with
// PublishEvent). A batch over a limit is refused before anything is sent, with an error wrapping
// fault.ErrTooLarge (size) or fault.ErrInvalid.
//
// duplicate is true when the stream already held this very batch (same events, in the same
// order) within its window. Events of a batch that also went out in another one are stored once
// by the hub's sink, which skips event ids it holds.
func PublishEvents(ctx context.Context, nc *nats.Conn, agentID string, ids []string, payloads [][]byte) (seq uint64, duplicate bool, err error) {
	if !ValidAgentID(agentID) {
		return 0, false, fault.Invalid("agentID", "not a canonical UUID: %q", agentID)
	}
	if len(ids) != len(payloads) {
		return 0, false, fault.Invalid("ids", "%d ids for %d events", len(ids), len(payloads))
	}
	for n, id := range ids {
		if id == "" {
			return 0, false, fault.Invalid("ids", "event %d has no id; an event id is required for de-duplication", n)
		}
		if len(payloads[n]) > wire.MaxEventBytes {
			return 0, false, fmt.Errorf("publish events: event %s: %d bytes, over the %d-byte limit: %w",
				id, len(payloads[n]), wire.MaxEventBytes, fault.ErrTooLarge)
		}
	}
	if len(payloads) > 0 {
		sizes := make([]int, len(payloads))
		for n, p := range payloads {
			sizes[n] = len(p)
		}
		if size, limit := wire.BatchSize(sizes...), MaxBatchBytes(nc); size > limit {
			return 0, false, fmt.Errorf("publish events: a batch of %d events is %d bytes, over the %d-byte limit: %w",
				len(payloads), size, limit, fault.ErrTooLarge)
		}
	}
	body, err := wire.EncodeEventBatch(payloads)
	if err != nil {
		return 0, false, fault.Invalid("payloads", "%v", err)
	}
	msg := nats.NewMsg(wire.EventSubject(agentID))
	msg.Header.Set(HeaderMsgID, wire.EventBatchID(ids))
	msg.Header.Set(wire.HeaderEvents, strconv.Itoa(len(payloads)))
	msg.Data = body
	return requestEvents(ctx, nc, msg, fmt.Sprintf("%d events %s..%s", len(ids), ids[0], ids[len(ids)-1]))
}

// requestEvents sends an event message as a request and checks the stream's acknowledgement.
func requestEvents(ctx context.Context, nc *nats.Conn, msg *nats.Msg, what string) (seq uint64, duplicate bool, err error) {
	resp, err := nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return 0, false, fmt.Errorf("publish %s: %w", what, requestErr(err))
	}
	var ack eventPubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, false, fmt.Errorf("publish %s: bad acknowledgement %q: %w", what, resp.Data, err)
	}
	if ack.Error != nil {
		return 0, false, fmt.Errorf("publish %s: %w", what, ack.Error)
	}
	if ack.Stream != wire.StreamEvents || ack.Seq == 0 {
		return 0, false, fmt.Errorf("publish %s: acknowledgement from stream %q seq %d, want %q",
			what, ack.Stream, ack.Seq, wire.StreamEvents)
	}
	return ack.Seq, ack.Duplicate, nil
}

// SendEvents publishes encoded events of one agent, in order, in as few messages as the limits
// allow, waiting for each acknowledgement: a lone event as a single-event message (PublishEvent,
// which every hub takes), several as batches (PublishEvents) of up to wire.MaxBatchEvents events
// within MaxBatchBytes(nc). An event holding a newline cannot be batched and goes alone. ids[n]
// is the id of payloads[n].
//
// It returns how many messages were acknowledged, and the first error. Events of messages
// acknowledged before an error are stored; sending them again is harmless (the hub skips event
// ids it holds), so a caller may treat an error as "nothing was sent".
func SendEvents(ctx context.Context, nc *nats.Conn, agentID string, ids []string, payloads [][]byte) (messages int, err error) {
	if len(ids) != len(payloads) {
		return 0, fault.Invalid("ids", "%d ids for %d events", len(ids), len(payloads))
	}
	limit := MaxBatchBytes(nc)
	for len(ids) > 0 {
		n := wire.BatchPrefix(payloads, limit)
		if n == 1 {
			_, _, err = PublishEvent(ctx, nc, agentID, ids[0], payloads[0])
		} else {
			_, _, err = PublishEvents(ctx, nc, agentID, ids[:n], payloads[:n])
		}
		if err != nil {
			return messages, err
		}
		messages++
		ids, payloads = ids[n:], payloads[n:]
	}
	return messages, nil
}
