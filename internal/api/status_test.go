package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// stuckPipeline answers its status only when the caller gives up, as JetStream does while the
// ingest's streams elect a new leader.
type stuckPipeline struct{ Pipeline }

func (stuckPipeline) Status(ctx context.Context) (wire.IngestStatus, error) {
	<-ctx.Done()
	return wire.IngestStatus{}, ctx.Err()
}

// GET /api/v1/status counts agents by status (revoked ones apart) and answers even when the
// ingest's figures do not come: it says they are not available instead of waiting for them.
func TestStatusAnswersWhileTheIngestDoesNot(t *testing.T) {
	old := ingestStatusTimeout
	ingestStatusTimeout = 50 * time.Millisecond
	t.Cleanup(func() { ingestStatusTimeout = old })
	b := setup(t, func(c *Config) { c.Pipeline = stuckPipeline{} })
	var ids []string
	for _, name := range []string{"a", "b", "c"} {
		var er wire.EnrollResponse
		if code, eb := b.call(t, "POST", "/api/v1/enroll", "", `{"token":"`+b.token(t, 1, "1h")+`","name":"`+name+`"}`, &er); code != http.StatusCreated {
			t.Fatalf("enroll %s: %d %+v", name, code, eb)
		}
		ids = append(ids, er.AgentID)
	}
	ctx := context.Background()
	if err := b.store.UpdateLiveness(ctx, []store.Liveness{{AgentID: ids[0], LastSeen: b.now, Status: wire.StatusOnline}}); err != nil {
		t.Fatal(err)
	}
	if code, eb := b.call(t, "POST", "/api/v1/agents/"+ids[2]+"/revoke", b.admin, "", nil); code != http.StatusOK {
		t.Fatalf("revoke: %d %+v", code, eb)
	}
	var st wire.HubStatus
	if code, eb := b.call(t, "GET", "/api/v1/status", b.admin, "", &st); code != http.StatusOK {
		t.Fatalf("status = %d %+v", code, eb)
	}
	want := map[string]int{wire.StatusOnline: 1, wire.StatusOffline: 0, wire.StatusUnknown: 1, "revoked": 1}
	for k, n := range want {
		if st.Agents[k] != n {
			t.Errorf("agents %v; want %v", st.Agents, want)
			break
		}
	}
	if st.Ingest != nil || !strings.HasPrefix(st.IngestError, "event ingest status not available: ") ||
		!strings.Contains(st.IngestError, "deadline") {
		t.Errorf("ingest %+v, ingest_error %q; want it said unavailable", st.Ingest, st.IngestError)
	}
}
