package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// Headers of a dead letter. The original message's headers are kept under HeaderOriginalPrefix.
const (
	HeaderReason         = "Godwit-Dlq-Reason"     // one of the Reason… constants
	HeaderError          = "Godwit-Dlq-Error"      // what was wrong, for a human
	HeaderSubject        = "Godwit-Dlq-Subject"    // the original subject
	HeaderDeliveries     = "Godwit-Dlq-Deliveries" // deliveries of the original so far
	HeaderStreamSeq      = "Godwit-Dlq-Stream-Seq" // the original's sequence in the events stream
	HeaderTime           = "Godwit-Dlq-Time"       // when the original was stored (RFC 3339)
	HeaderOriginalPrefix = "Godwit-Orig-"
	// HeaderBatchIndex and HeaderBatchCount are set on the dead letter of one event of an event
	// batch (wire.HeaderEvents): its place in the batch, from 1, and the batch's event count.
	// The original's other events were stored, or dead-lettered on their own.
	HeaderBatchIndex = "Godwit-Dlq-Batch-Index"
	HeaderBatchCount = "Godwit-Dlq-Batch-Count"
	// HeaderReplayOf is set on a replayed event: the dead letter's sequence it came from.
	HeaderReplayOf = "Godwit-Replay-Of"
)

// maxHeaderError bounds the error text carried in a header.
const maxHeaderError = 2048

// deadLetter publishes msg as a whole to the dead-letter stream with the reason, then terminates
// it. If the publish fails the message is handed back instead: it is never terminated without a
// copy.
func (i *Ingester) deadLetter(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, reason string, cause error) {
	if err := i.publishDeadLetter(ctx, msg, md, -1, 0, msg.Data(), reason, cause); err != nil {
		if ctx.Err() != nil {
			_ = msg.Nak()
			return
		}
		_ = msg.NakWithDelay(i.cfg.NakDelay)
		return
	}
	if err := msg.TermWithReason("dead-lettered: " + reason); err != nil {
		// The copy exists; a redelivery is dead-lettered again under the same Nats-Msg-Id.
		i.log.Debug("ingest: terminate failed", "stream_seq", md.Sequence.Stream, "err", err)
	}
}

// deadLetterEvent publishes one event of m — the message's single event, or event index of a
// batch message, on its own — to the dead-letter stream, and says how the event is settled:
// dead-lettered, or, when the publish failed, handed back (never dropped without a copy).
func (i *Ingester) deadLetterEvent(ctx context.Context, m *message, index int, data []byte, reason string, cause error) settlement {
	elem := -1
	if m.batch {
		elem = index
	}
	if err := i.publishDeadLetter(ctx, m.msg, m.md, elem, m.count, data, reason, cause); err != nil {
		if ctx.Err() != nil {
			return settledHandBack
		}
		return settledNakDelay
	}
	m.reason = reason
	return settledDeadLettered
}

// publishDeadLetter publishes data, from msg, to the dead-letter stream. elem is the event's place
// in msg, a batch of count events, or -1 for the message as a whole (or its single event). The
// Nats-Msg-Id names the original's sequence (and the event's place), so that a replica that dies
// between the publish and the settling of the original does not leave two.
func (i *Ingester) publishDeadLetter(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, elem, count int,
	data []byte, reason string, cause error) error {
	token := strings.TrimPrefix(msg.Subject(), eventPrefix)
	dl := nats.NewMsg(bus.DeadLetterSubject(token, md.Sequence.Stream, elem+1))
	dl.Data = data
	for k, v := range msg.Headers() {
		if elem >= 0 && k == wire.HeaderEvents {
			// The dead letter is one event: a replay republishes it as a single event.
			continue
		}
		dl.Header[HeaderOriginalPrefix+k] = v
	}
	dl.Header.Set(HeaderReason, reason)
	dl.Header.Set(HeaderError, headerValue(cause.Error()))
	dl.Header.Set(HeaderSubject, msg.Subject())
	dl.Header.Set(HeaderDeliveries, strconv.FormatUint(md.NumDelivered, 10))
	dl.Header.Set(HeaderStreamSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	dl.Header.Set(HeaderTime, md.Timestamp.UTC().Format(time.RFC3339Nano))
	id := fmt.Sprintf("dlq:%s:%d", md.Stream, md.Sequence.Stream)
	if elem >= 0 {
		dl.Header.Set(HeaderBatchIndex, strconv.Itoa(elem+1))
		dl.Header.Set(HeaderBatchCount, strconv.Itoa(count))
		id += ":" + strconv.Itoa(elem+1)
	}
	pctx, cancel := context.WithTimeout(ctx, i.cfg.AckWait/2)
	defer cancel()
	ack, err := i.cfg.JS.PublishMsg(pctx, dl, jetstream.WithMsgID(id), jetstream.WithExpectStream(wire.StreamDeadLetter))
	if err != nil {
		if ctx.Err() == nil {
			i.log.Error("ingest: dead-letter publish failed; the message will be redelivered", "reason", reason,
				"stream_seq", md.Sequence.Stream, "cause", cause, "err", err)
		}
		return err
	}
	if !ack.Duplicate {
		i.m.deadLetters.WithLabelValues(reason).Inc()
	}
	args := []any{"reason", reason, "err", cause, "subject", msg.Subject(),
		"stream_seq", md.Sequence.Stream, "deliveries", md.NumDelivered, "dlq_seq", ack.Sequence}
	if elem >= 0 {
		i.log.Warn("ingest: event of a batch message dead-lettered", append(args, "batch_index", elem+1, "batch_count", count)...)
	} else {
		i.log.Warn("ingest: message dead-lettered", args...)
	}
	return nil
}

// headerValue makes s safe as one header value: one line, bounded, valid UTF-8.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxHeaderError {
		s = s[:maxHeaderError]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return s
}

func (i *Ingester) dlqStream(ctx context.Context) (jetstream.Stream, error) {
	st, err := i.cfg.JS.Stream(ctx, wire.StreamDeadLetter)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	return st, nil
}

// DeadLetters lists up to limit (1..1000) dead letters with a sequence above afterSeq, oldest
// first. Page on with the last one's Seq.
func (i *Ingester) DeadLetters(ctx context.Context, afterSeq uint64, limit int) ([]wire.DeadLetter, error) {
	if limit < 1 || limit > 1000 {
		return nil, fault.Invalid("limit", "must be between 1 and 1000 (got %d)", limit)
	}
	st, err := i.dlqStream(ctx)
	if err != nil {
		return nil, err
	}
	var out []wire.DeadLetter
	for seq := afterSeq + 1; len(out) < limit; {
		raw, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(bus.DeadLetterSubjects))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dead letters: %w", err)
		}
		out = append(out, parseDeadLetter(raw))
		seq = raw.Sequence + 1
	}
	return out, nil
}

// DeadLetter returns the dead letter with sequence seq, or an error wrapping fault.ErrNotFound.
func (i *Ingester) DeadLetter(ctx context.Context, seq uint64) (wire.DeadLetter, error) {
	if seq == 0 {
		return wire.DeadLetter{}, fmt.Errorf("dead letter 0: %w", fault.ErrNotFound)
	}
	st, err := i.dlqStream(ctx)
	if err != nil {
		return wire.DeadLetter{}, err
	}
	raw, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return wire.DeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, fault.ErrNotFound)
	}
	if err != nil {
		return wire.DeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return parseDeadLetter(raw), nil
}

func parseDeadLetter(raw *jetstream.RawStreamMsg) wire.DeadLetter {
	h := raw.Header
	dl := wire.DeadLetter{
		Seq:     raw.Sequence,
		Subject: h.Get(HeaderSubject),
		Reason:  h.Get(HeaderReason),
		Error:   h.Get(HeaderError),
		Time:    raw.Time.UTC(),
		Payload: string(raw.Data),
	}
	dl.Deliveries, _ = strconv.Atoi(h.Get(HeaderDeliveries))
	dl.BatchIndex, _ = strconv.Atoi(h.Get(HeaderBatchIndex))
	dl.BatchCount, _ = strconv.Atoi(h.Get(HeaderBatchCount))
	dl.StreamSeq, _ = strconv.ParseUint(h.Get(HeaderStreamSeq), 10, 64)
	dl.OriginalTime, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderTime))
	for k, v := range h {
		if orig, ok := strings.CutPrefix(k, HeaderOriginalPrefix); ok && orig != "" {
			if dl.Headers == nil {
				dl.Headers = map[string][]string{}
			}
			dl.Headers[orig] = v
		}
	}
	return dl
}

// Replay republishes dead letter seq — its original payload and headers — to its original
// subject, then deletes it from the dead-letter stream. The event id is unchanged, so the store
// keeps one copy however often it is replayed; the Nats-Msg-Id is new ("<id>:replay:<seq>"), or
// the events stream would drop the republish as a duplicate of the original. JetStream headers
// of the original (Nats-*) are not republished. A dead letter that is still invalid is simply
// dead-lettered again.
func (i *Ingester) Replay(ctx context.Context, seq uint64) error {
	dl, err := i.DeadLetter(ctx, seq)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	if !strings.HasPrefix(dl.Subject, eventPrefix) {
		return fmt.Errorf("replay: dead letter %d: original subject %q is not an event subject: %w", seq, dl.Subject, fault.ErrInvalid)
	}
	m := nats.NewMsg(dl.Subject)
	m.Data = []byte(dl.Payload)
	for k, v := range dl.Headers {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		m.Header[k] = v
	}
	m.Header.Set(HeaderReplayOf, strconv.FormatUint(seq, 10))
	id := "dlq"
	var probe struct {
		ID string `json:"id"`
	}
	if json.Unmarshal([]byte(dl.Payload), &probe) == nil && probe.ID != "" && !strings.ContainsAny(probe.ID, " \r\n") {
		id = probe.ID
	}
	ack, err := i.cfg.JS.PublishMsg(ctx, m, jetstream.WithMsgID(fmt.Sprintf("%s:replay:%d", id, seq)),
		jetstream.WithExpectStream(wire.StreamEvents))
	if err != nil {
		return fmt.Errorf("replay: dead letter %d: publish: %w", seq, err)
	}
	if ack.Duplicate && !i.isReplayOf(ctx, ack.Sequence, seq) {
		// The events stream already holds a message with this Nats-Msg-Id that is not an
		// earlier replay of this dead letter: keep the dead letter.
		return fmt.Errorf("replay: dead letter %d: dropped as a duplicate of events message %d: %w", seq, ack.Sequence, fault.ErrConflict)
	}
	st, err := i.dlqStream(ctx)
	if err != nil {
		return fmt.Errorf("replay: republished but not removed: %w", err)
	}
	if err := st.DeleteMsg(ctx, seq); err != nil && !notFound(err) {
		return fmt.Errorf("replay: dead letter %d republished but not removed: %w", seq, err)
	}
	i.log.Info("ingest: dead letter replayed", "dlq_seq", seq, "subject", dl.Subject, "stream_seq", ack.Sequence)
	return nil
}

// isReplayOf reports whether events message streamSeq is a replay of dead letter seq (a replay
// retried after its delete failed).
func (i *Ingester) isReplayOf(ctx context.Context, streamSeq, seq uint64) bool {
	st, err := i.cfg.JS.Stream(ctx, wire.StreamEvents)
	if err != nil {
		return false
	}
	raw, err := st.GetMsg(ctx, streamSeq)
	return err == nil && raw.Header.Get(HeaderReplayOf) == strconv.FormatUint(seq, 10)
}

// Purge deletes dead letter seq, or with seq 0 every dead letter present when it is called, and
// returns how many it deleted. An absent seq is an error wrapping fault.ErrNotFound.
func (i *Ingester) Purge(ctx context.Context, seq uint64) (int, error) {
	st, err := i.dlqStream(ctx)
	if err != nil {
		return 0, err
	}
	if seq != 0 {
		if err := st.DeleteMsg(ctx, seq); err != nil {
			if notFound(err) {
				return 0, fmt.Errorf("purge dead letter %d: %w", seq, fault.ErrNotFound)
			}
			return 0, fmt.Errorf("purge dead letter %d: %w", seq, err)
		}
		return 1, nil
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("purge dead letters: %w", err)
	}
	if info.State.Msgs == 0 {
		return 0, nil
	}
	// Only up to the last sequence seen: a dead letter arriving meanwhile was not seen by the
	// operator and stays. The count is as of the Info call; a concurrent Replay or Purge of one
	// message can make it one too high.
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(info.State.LastSeq+1)); err != nil {
		return 0, fmt.Errorf("purge dead letters: %w", err)
	}
	return int(info.State.Msgs), nil
}

// notFound recognises the server's answer to deleting an absent message. nats.go flattens the
// API error of a failed delete into text (ErrMsgDeleteUnsuccessful: "...no message found"), so
// the description is all there is to match.
func notFound(err error) bool {
	return errors.Is(err, jetstream.ErrMsgNotFound) || strings.Contains(err.Error(), "no message found")
}

// deadLetteredBefore reports whether event index (from 0) of the batch msg, on a redelivery, was
// dead-lettered on an earlier one. Only the quota's verdict can differ between deliveries (it is
// charged on the first alone): an event it refused must stay refused, not be stored when its
// batch comes back for its other events' sake. The dead letter is looked up by its subject.
func (i *Ingester) deadLetteredBefore(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, index int) (bool, error) {
	if i.dlq == nil {
		s, err := i.cfg.JS.Stream(ctx, wire.StreamDeadLetter)
		if err != nil {
			return false, err
		}
		i.dlq = s
	}
	token := strings.TrimPrefix(msg.Subject(), eventPrefix)
	gctx, cancel := context.WithTimeout(ctx, i.cfg.AckWait/2)
	defer cancel()
	_, err := i.dlq.GetLastMsgForSubject(gctx, bus.DeadLetterSubject(token, md.Sequence.Stream, index+1))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	default:
		return false, err
	}
}
