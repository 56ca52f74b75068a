package ingest

import (
	"context"
	"runtime/debug"
)

// ackQueue is how many committed batches may wait for their acknowledgements before the worker
// waits for the acker: bounded, so that a slow bus holds back the store instead of memory.
const ackQueue = 2

// acker acknowledges committed batches on its own goroutine, so that the worker starts the next
// store call at once instead of waiting for the server to confirm the acknowledgements of the
// last one. It only ever receives deliveries whose transaction has committed, so
// acknowledgement still follows the commit, as the package comment promises.
type acker struct {
	i    *Ingester
	in   chan []*message
	done chan struct{}
}

func (i *Ingester) startAcker() *acker {
	a := &acker{i: i, in: make(chan []*message, ackQueue), done: make(chan struct{})}
	go a.run()
	return a
}

// send queues messages whose events are all settled, the last by a commit, for
// acknowledgement; it waits while ackQueue batches are already waiting.
func (a *acker) send(msgs []*message) {
	if len(msgs) > 0 {
		a.in <- msgs
	}
}

// close acknowledges everything queued and returns once the server has confirmed it.
func (a *acker) close() {
	close(a.in)
	<-a.done
}

func (a *acker) run() {
	defer close(a.done)
	defer func() {
		if p := recover(); p != nil {
			a.i.panicked(carriedPanic{value: p, stack: debug.Stack(), where: "acknowledging a committed batch"}, nil)
			for range a.in { // the worker must not block on a dead acker; the server redelivers
			}
		}
	}()
	for msgs := range a.in {
		a.i.ack(msgs)
	}
}

// ack acknowledges every message. The last acknowledgement waits for the server's confirmation;
// the server handles a connection's acknowledgements in order, so when it returns the whole batch
// is acknowledged (what Stop promises). A failed ack costs a redelivery, which the store skips.
func (i *Ingester) ack(msgs []*message) {
	for n, m := range msgs {
		var err error
		if n == len(msgs)-1 {
			actx, cancel := context.WithTimeout(context.Background(), ackTimeout)
			err = m.msg.DoubleAck(actx)
			cancel()
		} else {
			err = m.msg.Ack()
		}
		if err != nil {
			i.log.Warn("ingest: ack failed; its events will be redelivered and skipped as duplicates",
				"stream_seq", m.md.Sequence.Stream, "err", err)
		}
	}
}

// deliveries counts the deliveries of events in the groups.
func deliveries(groups []group) int {
	n := 0
	for _, g := range groups {
		n += len(g)
	}
	return n
}
