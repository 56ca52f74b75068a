// Package ingest moves events from the JetStream events stream into the SQL store: the hub's
// event sink (design principles 7, 8 and 10).
//
// # Delivery and effect
//
// Every hub replica runs an Ingester on the same durable pull consumer, so JetStream splits the
// work between them: each pull request asks for up to Config.Batch messages (and 64 MiB) that no
// other replica holds. A message is one event, or an event batch of up to wire.MaxBatchEvents
// events of one agent (wire.HeaderEvents), which is expanded into its events here. The events of
// a fetch are validated, then written with one Store.InsertEvents call per Config.Batch events:
// one transaction that inserts the events with ON CONFLICT (id) DO NOTHING and upserts the
// agents' derived state. A message is acknowledged only after every event of it has been
// committed (or dead-lettered on its own). Delivery is therefore at least once and the effect
// exactly once: a message redelivered after a crash between commit and ack, an event
// re-published by an agent's outbox (alone, or in a batch re-formed with other events), or a
// replayed dead letter is skipped by the unique event id (and counted in
// godwit_ingest_events_duplicate_total). Metrics of stored, duplicate and dead-lettered events
// count events; the batch size and redeliveries count messages.
//
// Batches follow the load. While the stream holds more for the consumer (a backlog, or agents
// publishing faster than the store writes), a read takes Batch messages. Once it has caught up,
// a read ends when the messages pause (20 ms), leaving the pull request open for the next read:
// a burst's last events are stored at once, not when the request expires, while a steady flow is
// still written in full batches (each costs a transaction and a derived-state row per agent in
// it, so small ones would cost more per event). While a batch is written, the next one is read
// and validated (one batch ahead, never more), so the store never waits for the bus or for
// decoding. The candidates for a batch's derived state (see below) are found then too, off the
// store's path. The acknowledgements of a committed batch are sent, and confirmed by the
// server, on a goroutine of their own while the next batch is written: they still follow the
// commit, and Stop returns only once they are confirmed.
//
// A replica that dies, hangs or loses its connection holds its batch un-acknowledged; after
// Config.AckWait the server redelivers it to whichever replica fetches next. Nothing is lost and
// nothing is stored twice.
//
// # Failures
//
//   - An event that can never be stored — larger than wire.MaxEventBytes, not JSON, refused by
//     wire.Event.Validate (no id, unknown type, a source other than the agent whose subject it
//     came on), over the agent's quota — is published to the dead-letter stream, at once. A
//     single-event message is then terminated. An event of a batch is dead-lettered on its own
//     (its bytes, with Godwit-Dlq-Batch-Index and Godwit-Dlq-Batch-Count saying where it was,
//     and the batch's headers but not its Godwit-Events, so that a replay sends it as a single
//     event); the batch's other events are stored and the message acknowledged. A batch that
//     cannot be read as one — a count that is not 1 to wire.MaxBatchEvents or does not match
//     its lines, a body over wire.MaxBatchBytes — is dead-lettered whole and terminated.
//   - A transient store error (Config.IsTransient: a busy or unreachable database) hands the
//     batch back with a negative ack delayed by Config.NakDelay, and the replica pauses fetching
//     for as long. Transient errors never dead-letter a message: an outage of the database must
//     leave the backlog in the stream, not move it to the dead letters.
//   - Any other store error retries the batch one event at a time, so one bad event does not hold
//     back the rest. An event that still fails is handed back with a delay — with a batch, the
//     whole message, whose other events are then skipped as duplicates — and once it has been
//     delivered Config.MaxDeliver times it is dead-lettered with the error (reason
//     max_deliveries). The delivery limit is enforced here, not by the server: a server-side
//     MaxDeliver silently abandons a message whose last delivery went to a crashed replica,
//     whereas here every message that gives up reaches the dead-letter stream.
//   - The consumer or the events stream itself deleted under a running ingester (an operator's
//     mistake: agents' permissions forbid it) is declared again — the stream through
//     Config.EnsureStreams. Until it is back, Health reports the fault (the hub's /readyz answers
//     503) and godwit_ingest_stream_missing_total counts it; it is never a silent retry loop.
//
// A dead letter keeps the original payload byte for byte and the original headers (renamed with
// the Godwit-Orig- prefix, so that none of them — Nats-Msg-Id, Nats-Expected-*, Nats-TTL — can
// change how JetStream treats the dead letter itself) and adds Godwit-Dlq-Reason,
// Godwit-Dlq-Error, Godwit-Dlq-Subject, Godwit-Dlq-Deliveries, Godwit-Dlq-Stream-Seq and
// Godwit-Dlq-Time. It is published with the Nats-Msg-Id "dlq:<stream>:<seq>", so a replica that
// dies between the publish and the terminate does not leave two. If the publish fails the message
// is handed back, never terminated. Ingester.Replay republishes a dead letter to its original
// subject with a fresh Nats-Msg-Id and then deletes it from the dead-letter stream.
//
// # Derived state
//
// For each agent the ingester keeps its latest event overall and per migration (the
// agent_event_state table). The first event of an agent after a start, or after Rehydrate,
// loads the agent's rows from SQL, with one store call for every such agent of a batch (after a
// start the first batch names most of the fleet); afterwards only rows that move an agent's
// state forward are written, in the same transaction as the events. Order is by event time, then
// event id, exactly as the store's conditional upsert orders them, so the cache never decides
// anything the store would not: it is a lower bound of what SQL holds, and SQL has the last word
// when another replica has moved an agent further. Only events an agent published on its own
// subject move its state (hub events about an agent do not count as the agent being seen). No
// time is ever compared with the local clock; an event's receive time is the stream's timestamp.
//
// # Stopping
//
// Stop ends fetching, lets the batch in flight finish and acknowledges what committed. A batch
// read ahead, and whatever the open pull request still brings (Stop waits for it to end, at most
// Config.MaxWait), are handed back for immediate redelivery to the other replicas. So are messages
// that waited half of Config.AckWait behind a slow store call, read ahead or on the open request:
// the server is about to redeliver them. If the budget runs out first, the store call in flight
// is cancelled, the batch is handed back, and Stop returns the context's error. A panic in the
// worker is logged with its stack and the stream sequences of the batch, counted in
// godwit_worker_panics_total, and reported once on Fatal; the batch is left un-acknowledged for
// redelivery and the process is expected to exit non-zero.
package ingest
