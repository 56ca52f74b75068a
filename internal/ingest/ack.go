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
	in   chan []*item
	done chan struct{}
}

func (i *Ingester) startAcker() *acker {
	a := &acker{i: i, in: make(chan []*item, ackQueue), done: make(chan struct{})}
	go a.run()
	return a
}

// send queues committed deliveries for acknowledgement; it waits while ackQueue batches are
// already waiting.
func (a *acker) send(items []*item) {
	if len(items) > 0 {
		a.in <- items
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
	for items := range a.in {
		a.i.ack(items)
	}
}

// ack acknowledges every delivery. The last acknowledgement waits for the server's confirmation;
// the server handles a connection's acknowledgements in order, so when it returns the whole batch
// is acknowledged (what Stop promises). A failed ack costs a redelivery, which the store skips.
func (i *Ingester) ack(items []*item) {
	for n, it := range items {
		var err error
		if n == len(items)-1 {
			actx, cancel := context.WithTimeout(context.Background(), ackTimeout)
			err = it.msg.DoubleAck(actx)
			cancel()
		} else {
			err = it.msg.Ack()
		}
		if err != nil {
			i.log.Warn("ingest: ack failed; the event will be redelivered and skipped as a duplicate",
				"stream_seq", it.md.Sequence.Stream, "err", err)
		}
	}
}

// deliveries lists every delivery of the groups, in order.
func deliveries(groups []group) []*item {
	n := 0
	for _, g := range groups {
		n += len(g)
	}
	all := make([]*item, 0, n)
	for _, g := range groups {
		all = append(all, g...)
	}
	return all
}
