// Package outbox is the agent's durable queue of events on their way to the hub.
//
// Every event the agent produces is written to a SQLite journal in the agent's state directory
// (outbox.db) before anything else happens with it, and is removed only after the broker has
// acknowledged it. The journal is the only state: the in-memory count and size are derived from it
// at Open and follow its commits, so an agent restart at any instant loses nothing (design
// principle 1).
//
// # Delivery
//
// [Outbox.Run] sends the oldest events first (FIFO by insertion), each with the id its producer
// assigned (a UUIDv7): what is queued, up to 64 events within wire.MaxBatchBytes, goes in one
// call of the Publisher, which the agent sends as one event batch (wire.HeaderEvents; a lone
// event as a plain single-event message). It waits for the acknowledgement, and only then
// deletes the events. A failed send is retried,
// forever, after an exponential back-off (0.5 s doubling to 30 s, counted on the injected clock);
// the back-off is not cut short by new events, so an outage of hours costs a request every 30 s,
// not one per event. The number of failed attempts is kept in the journal with each event.
//
// Delivery is at-least-once: an event can be sent twice when the process dies between the
// acknowledgement and the delete (the deletes of a batch are committed together, so up to one
// batch), or when an acknowledgement is lost on the way back. The resend carries the same event
// ids, and twice the same id is harmless (principle 7): the events stream de-duplicates the very
// same message on its Nats-Msg-Id within its window, answering "duplicate", and the hub's sink
// inserts with ON CONFLICT (id) DO NOTHING, which covers any other resend. A batch re-formed
// with more events than the first attempt has another Nats-Msg-Id (wire.EventBatchID names all
// of its events), so it is stored rather than taken for the first, and its new events arrive.
// A failed send counts an attempt for every event of the batch.
//
// # Durability
//
// The journal runs in WAL mode with synchronous=FULL: each commit fsyncs the write-ahead log, so
// an event that [Outbox.Append] accepted survives a power cut or kernel crash, not only a crash of
// the agent. (With synchronous=NORMAL, WAL commits are not synced until a checkpoint, and the last
// events before a power cut could vanish without any trace on either side.) The price is one
// fsync per event, which is small at the rate migrations produce events. Deletes pay it too; a
// delete that a power cut undoes only causes a harmless resend.
//
// A journal that is not a SQLite database, is not an outbox, fails SQLite's integrity check, or
// was written by a newer schema is refused with an error naming the file, marked
// health.ErrNeedsOperator, and is never modified or overwritten: it may hold the only record of
// failures on this node.
//
// # A full disk
//
// When the file system refuses a write for a while (full, over quota, an I/O error: see package
// health), [Outbox.Append] returns the error and the caller keeps the event (the runner keeps it
// in its own journal and offers it again on every resync; the agent keeps its own few events in
// memory). [Outbox.Degraded] then says what fails since when, until a write succeeds again. Run
// still sends what the journal holds; an event the hub acknowledged is deleted only when the
// journal takes the delete, which Run retries with a short back-off (0.25 s doubling to 5 s)
// without sending the event again. Nothing queued is lost.
//
// # Size limits and what happens when the hub is away too long
//
// The journal is bounded by [Limits]:
//
//   - At SoftMaxEvents events (default 100 000), or once the events take 7/8 of HardMaxBytes,
//     [Outbox.Full] reports true and logs a warning once. The agent must then not start new work
//     (no new migration step, sweep check or hook), and says so with an agent.outbox_full event of
//     severity warning. Work already running finishes and its events are still accepted.
//   - HardMaxBytes (default 256 MiB of encoded events) is the hard limit: beyond it, Append
//     refuses an info event with [ErrOutboxFull], and the caller logs the refusal. Warning and
//     error events are never refused for space: a failure that only the agent knows about must
//     reach the hub. This cannot grow without limit, because once the outbox is full no new work
//     starts, and the work in flight is bounded (one step per assignment in flight, each producing
//     a bounded number of events of at most wire.MaxEventBytes).
//   - An event larger than wire.MaxEventBytes is never dropped: its output tail loses its oldest
//     part, then its error text and message lose their end, each with a visible "truncated" marker
//     saying how many bytes went, until it fits.
//
// When the backlog has drained below the limits, Full turns false again (logged once) and work
// resumes. Nothing is dropped at any point.
package outbox
