package bus

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// HubEventSubject is where hub replicas publish the events they produce themselves. Its last
// token is not an agent ID, so the ingest validates events on it as the hub's (wire.Event.Validate
// with an empty subject agent). Agents cannot publish here: their permissions and the agents'
// account import cover only their own subject.
const HubEventSubject = "godwit.events.hub"

// Subject spaces of the two streams.
const (
	// EventSubjects is every event subject: agents' (godwit.events.<agent-id>) and the hub's.
	EventSubjects = "godwit.events.>"
	// DeadLetterPrefix is the prefix of dead-letter subjects (DeadLetterSubject).
	DeadLetterPrefix = "godwit.dlq."
	// DeadLetterSubjects is every dead-letter subject.
	DeadLetterSubjects = DeadLetterPrefix + ">"
)

// Defaults for StreamOptions.
const (
	// DefaultEventsMaxAge keeps events in the stream for a week, so a backlog survives a long
	// outage of the hub or its database.
	DefaultEventsMaxAge = 7 * 24 * time.Hour
	// DefaultDuplicateWindow is how long JetStream remembers a Nats-Msg-Id to drop a re-publish.
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultEventsMaxMsgSize is deliberately larger than wire.MaxEventBytes: an event above the
	// event limit but below this one is stored, and the ingest dead-letters it with the reason
	// "too_large" where an operator can see it, instead of the publish failing where only the
	// producer would know.
	DefaultEventsMaxMsgSize = 4 * wire.MaxEventBytes
)

// StreamOptions sizes the event and dead-letter streams. Zero values take the defaults.
type StreamOptions struct {
	// Replicas is the number of stream replicas (1 embedded, 3 on a cluster); 0 means 1.
	Replicas int
	// MaxAge is how long events are kept; 0 means DefaultEventsMaxAge.
	MaxAge time.Duration
	// DeadLetterMaxAge is how long dead letters are kept; 0 means MaxAge.
	DeadLetterMaxAge time.Duration
	// DuplicateWindow is the Nats-Msg-Id de-duplication window; 0 means DefaultDuplicateWindow.
	// It may not exceed MaxAge.
	DuplicateWindow time.Duration
	// MaxMsgSize caps one message on the events stream in bytes; 0 means
	// DefaultEventsMaxMsgSize, -1 means the server's limit (max_payload).
	MaxMsgSize int32
	// MaxBytes and DeadLetterMaxBytes bound each stream on disk; past them the oldest messages
	// go. 0 or -1 means no bound but the server's.
	MaxBytes, DeadLetterMaxBytes int64
	// MaxMsgsPerAgent is how many messages of one subject — one agent's events, or the hub's —
	// the events stream keeps; a newer one pushes out that subject's oldest, never another
	// agent's. 0 or -1 means no bound.
	MaxMsgsPerAgent int64
}

// EnsureStreams creates the events stream (wire.StreamEvents) and the dead-letter stream
// (wire.StreamDeadLetter), or updates them to the current configuration. It is idempotent and
// safe to run from several hub replicas at once.
//
// Both streams use file storage and limits retention (messages are kept for MaxAge whatever
// the consumers do, so a consumer recreated after an accident starts again from the backlog),
// bounded by MaxBytes with the oldest discarded first; the events stream also keeps at most
// MaxMsgsPerAgent messages of one subject, so one agent cannot fill it.
// The events stream drops a re-publish with a Nats-Msg-Id seen within the duplicate window,
// refuses rollup headers and purge requests (agents publish into it), and allows deleting a
// single message, the operator's last resort for one that crashes the ingest. The dead-letter
// stream allows deletes and purges: that is how a dead letter is replayed or discarded.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	switch {
	case o.Replicas < 0:
		return fault.Invalid("Replicas", "must not be negative")
	case o.MaxAge < 0:
		return fault.Invalid("MaxAge", "must not be negative")
	case o.DuplicateWindow < 0:
		return fault.Invalid("DuplicateWindow", "must not be negative")
	case o.MaxMsgSize < -1:
		return fault.Invalid("MaxMsgSize", "must be -1 or more")
	case o.MaxBytes < -1 || o.DeadLetterMaxBytes < -1 || o.MaxMsgsPerAgent < -1:
		return fault.Invalid("MaxBytes", "MaxBytes, DeadLetterMaxBytes and MaxMsgsPerAgent must be -1 or more")
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultEventsMaxAge
	}
	if o.DeadLetterMaxAge <= 0 {
		o.DeadLetterMaxAge = o.MaxAge
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = min(DefaultDuplicateWindow, o.MaxAge)
	}
	if o.DuplicateWindow > o.MaxAge {
		return fault.Invalid("DuplicateWindow", "must not exceed MaxAge (%s), got %s", o.MaxAge, o.DuplicateWindow)
	}
	if o.MaxMsgSize == 0 {
		o.MaxMsgSize = DefaultEventsMaxMsgSize
	}
	unbounded := func(v int64) int64 {
		if v == 0 {
			return -1
		}
		return v
	}
	o.MaxBytes, o.DeadLetterMaxBytes, o.MaxMsgsPerAgent = unbounded(o.MaxBytes), unbounded(o.DeadLetterMaxBytes), unbounded(o.MaxMsgsPerAgent)

	events := jetstream.StreamConfig{
		Name:        wire.StreamEvents,
		Description: "Godwit events from agents and hubs, consumed into SQL by the hub's ingest",
		Subjects:    []string{EventSubjects},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      o.MaxAge,
		MaxMsgs:     -1,
		MaxBytes:    o.MaxBytes,
		MaxMsgSize:  o.MaxMsgSize,
		// Consumers are the hub's own (one shared durable); -1 is the server's "unlimited".
		MaxConsumers: -1,
		// Each agent publishes on a subject of its own: a flood from one agent pushes out its
		// own oldest events, not another agent's.
		MaxMsgsPerSubject: o.MaxMsgsPerAgent,
		Storage:           jetstream.FileStorage,
		Replicas:          o.Replicas,
		Duplicates:        o.DuplicateWindow,
		AllowRollup:       false,
		DenyPurge:         true,
		DenyDelete:        false,
	}
	dlq := jetstream.StreamConfig{
		Name:              wire.StreamDeadLetter,
		Description:       "Godwit dead letters: events the ingest could not store, with the reason",
		Subjects:          []string{DeadLetterSubjects},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            o.DeadLetterMaxAge,
		MaxMsgs:           -1,
		MaxBytes:          o.DeadLetterMaxBytes,
		MaxMsgSize:        -1, // the original payload plus the dead-letter headers
		MaxConsumers:      -1,
		MaxMsgsPerSubject: -1,
		Storage:           jetstream.FileStorage,
		Replicas:          o.Replicas,
		// The ingest publishes each dead letter with a Nats-Msg-Id naming the original stream
		// sequence, so a replica that dies between the publish and the Term does not leave two.
		Duplicates:  o.DuplicateWindow,
		AllowRollup: false,
	}
	for _, cfg := range []jetstream.StreamConfig{events, dlq} {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// DeadLetterSubject is the subject of the dead letter of the events-stream message seq that came
// on godwit.events.<token>: godwit.dlq.<token>.<seq>, and .<index> (from 1) after it for one event
// of an event batch. A dead letter is found again by its subject alone: a redelivered batch asks
// whether its events were dead-lettered on an earlier delivery (ingest).
func DeadLetterSubject(token string, seq uint64, index int) string {
	s := DeadLetterPrefix + token + "." + strconv.FormatUint(seq, 10)
	if index > 0 {
		s += "." + strconv.Itoa(index)
	}
	return s
}
