package wire

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
)

// Event batches: several events of one agent in one message on its event subject.
//
// A message carrying HeaderEvents is a batch: the header's value is the number of events (a
// decimal from 1 to MaxBatchEvents), and the body is the encoded events, each exactly as it would
// be sent alone, separated by a single '\n' (no newline after the last). encoding/json never
// writes a raw newline inside a value, so an event cannot be split by its own bytes; an event
// that holds one anyway cannot be batched and is sent alone. A message without the header is one
// event, as it always was.
//
// The ingest takes every element as it takes a single event: an element that does not decode or
// validate is dead-lettered on its own and the others are stored. A batch whose header is not a
// count, whose count does not match its lines, or that is larger than MaxBatchBytes or holds more
// than MaxBatchEvents events is refused as a whole (dead-lettered with its body as received).
//
// Its Nats-Msg-Id is EventBatchID of the events' ids, which names exactly the events it holds:
// a batch re-formed differently after a crash or a failed send (more events, fewer, others) has
// another id and is not dropped by the stream's de-duplication as a copy of the first. Events
// sent twice this way are stored once: the store skips an event id it already holds.
const (
	// HeaderEvents marks an event batch; its value is the number of events in the body.
	HeaderEvents = "Godwit-Events"
	// MaxBatchEvents is the most events one batch holds.
	MaxBatchEvents = 64
	// MaxBatchBytes bounds a batch's body. It stays well below the events stream's default
	// message limit (four times MaxEventBytes) so that the headers always fit, and a sender
	// keeps its batches within its connection's max payload too.
	MaxBatchBytes = 2 * MaxEventBytes
)

// ErrBatch is wrapped by SplitEventBatch's errors: the message as a whole is not a readable batch.
var ErrBatch = errors.New("malformed event batch")

// EncodeEventBatch returns the body of a batch of the encoded events, in order. It refuses an
// empty list, more than MaxBatchEvents events, an event holding a newline, and a body over
// MaxBatchBytes.
func EncodeEventBatch(events [][]byte) ([]byte, error) {
	if len(events) == 0 || len(events) > MaxBatchEvents {
		return nil, fmt.Errorf("%w: %d events, want 1 to %d", ErrBatch, len(events), MaxBatchEvents)
	}
	size := len(events) - 1
	for n, e := range events {
		if bytes.IndexByte(e, '\n') >= 0 {
			return nil, fmt.Errorf("%w: event %d holds a newline and must be sent alone", ErrBatch, n)
		}
		size += len(e)
	}
	if size > MaxBatchBytes {
		return nil, fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrBatch, size, MaxBatchBytes)
	}
	body := make([]byte, 0, size)
	for n, e := range events {
		if n > 0 {
			body = append(body, '\n')
		}
		body = append(body, e...)
	}
	return body, nil
}

// BatchSize is the size of a batch body holding events of these sizes.
func BatchSize(sizes ...int) int {
	if len(sizes) == 0 {
		return 0
	}
	n := len(sizes) - 1
	for _, s := range sizes {
		n += s
	}
	return n
}

// SplitEventBatch splits the body of a batch whose HeaderEvents value is count into its events,
// which alias body. An error (wrapping ErrBatch) means the message as a whole is unreadable: the
// count is not a decimal from 1 to MaxBatchEvents, the body is over MaxBatchBytes, or it holds
// another number of lines. Whether each element is an event is for DecodeEvent to say.
func SplitEventBatch(count string, body []byte) ([][]byte, error) {
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 || n > MaxBatchEvents || strconv.Itoa(n) != count {
		return nil, fmt.Errorf("%w: header %s is %q, want a count from 1 to %d", ErrBatch, HeaderEvents, count, MaxBatchEvents)
	}
	if len(body) > MaxBatchBytes {
		return nil, fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrBatch, len(body), MaxBatchBytes)
	}
	if lines := bytes.Count(body, []byte{'\n'}) + 1; lines != n {
		return nil, fmt.Errorf("%w: header %s says %d events, the body has %d lines", ErrBatch, HeaderEvents, n, lines)
	}
	out := make([][]byte, 0, n)
	for len(out) < n-1 {
		i := bytes.IndexByte(body, '\n')
		out = append(out, body[:i:i])
		body = body[i+1:]
	}
	return append(out, body), nil
}

// EventBatchID is the Nats-Msg-Id of a batch of events with these ids, in order: the first and
// last id, the count and a digest of all of them, so that two batches share it only when they
// hold the same events.
func EventBatchID(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	h := sha256.New()
	for _, id := range ids {
		h.Write([]byte(id))
		h.Write([]byte{'\n'})
	}
	return fmt.Sprintf("%s..%s:%d:%x", ids[0], ids[len(ids)-1], len(ids), h.Sum(nil)[:8])
}

// BatchPrefix returns how many of the first events go in one message: as many as fit in a batch
// of at most MaxBatchEvents events and maxBytes bytes, and at least one (an event too large for
// any batch, or holding a newline, goes alone, as a single-event message).
func BatchPrefix(payloads [][]byte, maxBytes int) int {
	size := -1
	for n, p := range payloads {
		if n == MaxBatchEvents || bytes.IndexByte(p, '\n') >= 0 {
			return max(n, 1)
		}
		if size += 1 + len(p); size > maxBytes {
			return max(n, 1)
		}
	}
	return len(payloads)
}
