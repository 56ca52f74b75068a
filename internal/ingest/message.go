package ingest

import (
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// message is one fetched message: a single event, or an event batch (wire.HeaderEvents) of
// several. Its events are settled one by one — stored, dead-lettered on their own, or handed
// back — and the message itself once all of them are: acknowledged when every event was stored
// or dead-lettered (after the commit that stored the last), handed back for redelivery when any
// was handed back (the events of it already stored are then skipped as duplicates), terminated
// when every one was dead-lettered.
//
// A message is settled by whichever goroutine holds its batch, one at a time (the batch is
// passed from the goroutine reading ahead to the worker over a channel), so it needs no lock.
type message struct {
	msg jetstream.Msg
	md  *jetstream.MsgMetadata
	// count is the number of events of the message: 1, or a batch's count.
	count int
	// batch: the message is an event batch (it carries wire.HeaderEvents).
	batch bool
	// open is how many of its events are not yet settled.
	open int
	// stored: some event of it was stored; retry: some was handed back, delay with NakDelay.
	stored, retry, delay bool
	// reason is why its last dead-lettered event was (a Reason… constant), for the termination.
	reason string
}

// settlement is what became of one event of a message.
type settlement int

const (
	settledStored       settlement = iota // committed to the store
	settledDeadLettered                   // copied to the dead-letter stream
	settledHandBack                       // to be redelivered at once
	settledNakDelay                       // to be redelivered after NakDelay
)

// settle records what became of one event of m. When it was the last one open, the message is
// handed back or terminated here; a message to be acknowledged is returned instead (true), for
// the caller to pass to the acker once its commit is done.
func (i *Ingester) settle(m *message, s settlement) (ack bool) {
	switch s {
	case settledStored:
		m.stored = true
	case settledHandBack:
		m.retry = true
	case settledNakDelay:
		m.retry, m.delay = true, true
	}
	m.open--
	if m.open > 0 {
		return false
	}
	switch {
	case m.retry && m.delay:
		if err := m.msg.NakWithDelay(i.cfg.NakDelay); err != nil {
			i.log.Debug("ingest: nak failed; the server redelivers after the ack wait", "stream_seq", m.md.Sequence.Stream, "err", err)
		}
	case m.retry:
		_ = m.msg.Nak()
	case m.stored:
		return true
	default:
		// Every event of it is in the dead letters.
		reason := "dead-lettered: " + m.reason
		if m.batch {
			reason = fmt.Sprintf("dead-lettered: all %d events of the batch", m.count)
		}
		if err := m.msg.TermWithReason(reason); err != nil {
			// The copies exist; a redelivery is dead-lettered again under the same Nats-Msg-Ids.
			i.log.Debug("ingest: terminate failed", "stream_seq", m.md.Sequence.Stream, "err", err)
		}
	}
	return false
}

// settleAll settles every delivery of the groups the same way and returns the messages to
// acknowledge (only for settledStored).
func (i *Ingester) settleAll(groups []group, s settlement) []*message {
	var acks []*message
	for _, g := range groups {
		for _, it := range g {
			if i.settle(it.m, s) {
				acks = append(acks, it.m)
			}
		}
	}
	return acks
}
