package bus

import (
	"context"
	"encoding/json"
	"fmt"

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
	resp, err := nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return 0, false, fmt.Errorf("publish event %s: %w", eventID, requestErr(err))
	}
	var ack eventPubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, false, fmt.Errorf("publish event %s: bad acknowledgement %q: %w", eventID, resp.Data, err)
	}
	if ack.Error != nil {
		return 0, false, fmt.Errorf("publish event %s: %w", eventID, ack.Error)
	}
	if ack.Stream != wire.StreamEvents || ack.Seq == 0 {
		return 0, false, fmt.Errorf("publish event %s: acknowledgement from stream %q seq %d, want %q",
			eventID, ack.Stream, ack.Seq, wire.StreamEvents)
	}
	return ack.Seq, ack.Duplicate, nil
}
