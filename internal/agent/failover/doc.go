// Package failover runs an agent's membership in a failover group: the I/O around the pure state
// machine of package machine. One goroutine owns the machine; beside it run the heartbeat
// write in flight (at most one), the watch of the group record and of the hub's control key,
// and the hook runner (at most one hook at a time).
//
// The promises it adds to the machine's:
//
//   - Every write to the group's bucket is a compare-and-set (lease.Cell): the group record on
//     the primary's last revision, a member's own key on its own last revision. Nothing calls
//     Put or Delete.
//   - Every store call is bounded by heartbeatTimeout; time is read only from the local
//     monotonic clock; store timestamps are shown, never compared with it.
//   - Hooks run one at a time: a hook asked for by a transition first cancels the running hook
//     (SIGTERM to its process group, SIGKILL after a short grace) and waits for it to end, so a
//     slow fence never lands after what followed it. A hook is killed at its timeout.
//   - With the agent's policy (Config.Policy), New refuses a group any of whose hooks the policy
//     refuses (*HookRefused names the hook and the rule): such a member never starts, so it
//     never promotes. Each hook is checked again right before it runs (result "refused", not
//     run) and runs as the policy's runAs with its environment.
//   - Every transition and hook result is reported (failover.transition) with group, member,
//     from, to, epoch and reason.
//   - Stop hands over when the member is a healthy primary and handoverOnStop is set, then
//     fences, so a graceful stop never leaves a primary that no one watches.
package failover
