package hub

// A replica of a clustered embedded NATS whose peers do not answer — the first of three
// started, or one restarted while the others are down — cannot declare its streams and buckets
// until the JetStream cluster has a quorum, which may take as long as the peers stay down. It
// serves meanwhile: /healthz answers, /readyz and the status say whom it waits for, reads the
// database backs work, and routes that need JetStream answer 503 saying why. It neither runs
// the ingest nor contends for the lease until the cluster is ready; then the whole API takes
// over the same listener.

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"godwit.dev/godwit/internal/wire"
)

// front is the HTTP server's handler: the waiting one, then the whole API and UI.
type front struct{ h atomic.Pointer[http.Handler] }

func (f *front) set(h http.Handler) { f.h.Store(&h) }

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) { (*f.h.Load()).ServeHTTP(w, r) }

// serveWhileWaiting starts the HTTP server with the waiting handler and this replica's row.
func (h *Hub) serveWhileWaiting(ctx context.Context) error {
	h.waiting.Store(true)
	hd, web := h.handler(true)
	h.waitWeb = web
	if err := h.startHTTP(hd, web); err != nil {
		return err
	}
	h.startReplicaRow(ctx)
	return nil
}

// pending says why this replica does not serve everything yet: "" once it does.
func (h *Hub) pending() string {
	if !h.waiting.Load() {
		return ""
	}
	msg, _ := h.waitingFor()
	return msg
}

// waitingFor says what this replica waits for, and the NATS peers that do not answer.
func (h *Hub) waitingFor() (string, []string) {
	n, missing := h.server.PeerStatus()
	if len(missing) == 0 {
		return fmt.Sprintf("waiting for the JetStream cluster to be ready (%d NATS peers connected)", n), nil
	}
	return fmt.Sprintf("waiting for the other hub replicas' NATS servers (%d connected; not answering: %s): the JetStream cluster has no quorum yet",
		n, strings.Join(missing, ", ")), missing
}

// waitingLeadership is the status's leadership part while this replica waits. Its Waiting
// reads after "waiting for", as the CLI and the UI show it.
func (h *Hub) waitingLeadership() *wire.HubLeadership {
	n, missing := h.server.PeerStatus()
	msg := fmt.Sprintf("a quorum of the JetStream cluster (%d NATS peers connected)", n)
	if len(missing) > 0 {
		msg = fmt.Sprintf("a quorum of the JetStream cluster; NATS peers not answering (%d connected): %s", n, strings.Join(missing, ", "))
	}
	return &wire.HubLeadership{Replica: h.id, State: wire.LeadershipWaiting, Waiting: msg, WaitingFor: missing}
}
