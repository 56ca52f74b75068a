// Package lease hands out leaderships with fencing epochs. A component that must run on one
// hub only (the migration controller, the sweep scheduler) acquires its named leadership and
// carries the epoch into every write; a write with an epoch that is no longer current fails with
// fault.ErrFenced instead of racing a newer leader.
//
// Lease is a leadership over one key of a NATS JetStream key-value bucket, shared by any number
// of replicas. It keeps these promises, argued in docs/ha.md:
//
//   - The key is written only by compare-and-set: Create when it is absent, Update on the
//     revision last read otherwise. Nothing here calls Put or Delete.
//   - A term's epoch is the bucket revision of the write that began it. Revisions only grow, so
//     epochs only grow, whatever happens to the key (delete, purge, expiry): a later term always
//     fences an earlier one.
//   - Staleness is judged by local monotonic time since this process saw the key's revision
//     change (to a newer revision: an older one is a read served by a lagging replica), never
//     by comparing a store timestamp with the local clock. A contender takes over
//     only after it has itself seen the key unchanged for the whole TTL, or when the holder
//     released it. One refinement: a renew of the term whose previous write this process saw
//     is timed from that sight plus the gap between the two sends, measured by the holder on
//     its own clock and written in the renew — never earlier than the renew was sent — so that
//     a renew committed late (after the stream elected a new leader) costs no second TTL.
//   - Every store call has a deadline; an answer after it counts as a failure. A replica whose
//     calls fail is degraded and may not acquire until Timing.RecoverAfter calls in a row
//     succeed.
//   - A leader's term ends — its context is cancelled — at once when a renew finds the revision
//     moved (replaced), and in any case at TTL − Margin after the last successful renew was
//     sent (the watchdog), even when the renew loop itself is stalled. Contenders measure the
//     TTL from when they saw that renew, or from the refinement's date, both no earlier than
//     its send, so the old term has ended before a new one can begin, given bounded clock-rate
//     drift (no synchronised clocks needed).
//   - A graceful Stop ends the term, waits for the leader work to return, and then marks the
//     key released so that the next replica takes over without waiting for the TTL.
//
// The pieces the lease is made of are exported for other compare-and-set protocols over the same
// kind of key (failover groups): Cell (calls with deadlines, conflicts told apart from unknown
// outcomes), Staleness, Health (consecutive failures to degrade, successes to recover), Timing
// and Clock.
package lease
