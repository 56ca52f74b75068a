package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/failover/groups"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/sweep"
	"godwit.dev/godwit/internal/wire"
)

// The free text of a sweep trigger, suspension or resumption (by, reason) and of a failover
// group's pause (reason) is checked as every other text taken from outside: a NUL byte (which
// PostgreSQL cannot store: it was a 500), a control character or a bidirectional override is a
// 400 naming the field, and nothing is changed.
func TestActionTextIsChecked(t *testing.T) {
	t.Parallel()
	onBothEngines(t, checkActionText)
}

func checkActionText(t *testing.T, b *bundle) {
	svc := sweep.New(sweep.Config{Store: b.store, HubID: "test", Logger: logging.Discard(),
		Publish: func(ctx context.Context, e wire.Event) error {
			raw, _ := json.Marshal(e)
			_, err := b.store.InsertEvents(ctx, []store.StoredEvent{{Event: e, Raw: raw, ReceivedAt: e.Time}}, nil)
			return err
		}})
	fo := &groups.Service{Store: b.store}
	b.api = New(Config{Store: b.store, Bus: b.bus, Logger: logging.Discard(), Registry: prometheus.NewRegistry(), Sweeps: svc,
		Failover: fo, MaxBodyBytes: 1 << 16})
	b.srv.Close()
	b.srv = httptest.NewServer(LoadOpenAPI(t).CheckedHandler(t, b.api, nil))
	t.Cleanup(b.srv.Close)

	if code, eb := b.call(t, "POST", "/api/v1/sweeps", b.admin, apiSweep, nil); code != http.StatusOK {
		t.Fatalf("apply sweep: %d %v", code, eb)
	}
	tok := b.token(t, 2, "1h")
	var ids []string
	for _, n := range []string{"pg-1", "pg-2"} {
		var er wire.EnrollResponse
		if code, eb := b.call(t, "POST", "/api/v1/enroll", "", `{"token":"`+tok+`","name":"`+n+`"}`, &er); code != http.StatusCreated {
			t.Fatalf("enroll: %d %v", code, eb)
		}
		ids = append(ids, er.AgentID)
	}
	group := fmt.Sprintf(`apiVersion: godwit.dev/v1
kind: FailoverGroup
metadata: {name: pg}
spec:
  members:
    - {agent: %s, priority: 100}
    - {agent: %s, priority: 50}
  failoverTimeout: 20s
  hooks:
    onPromote: {command: "true", timeout: 10s}
    onFence: {command: "true", timeout: 2s}
`, ids[0], ids[1])
	if code, eb := b.call(t, "POST", "/api/v1/failovergroups", b.admin, group, nil); code != http.StatusOK {
		t.Fatalf("apply group: %d %v", code, eb)
	}

	for _, bad := range []string{`a\u0000b`, `a\nb`, `x\u202eevil`} {
		for _, c := range []struct{ path, body, field string }{
			{"/api/v1/sweeps/drift/runs", `{"by":"` + bad + `"}`, "by"},
			{"/api/v1/sweeps/drift/suspend", `{"reason":"` + bad + `"}`, "reason"},
			{"/api/v1/sweeps/drift/suspend", `{"by":"` + bad + `"}`, "by"},
			{"/api/v1/failovergroups/pg/pause", `{"reason":"` + bad + `"}`, "reason"},
		} {
			code, eb := b.call(t, "POST", c.path, b.admin, c.body, nil)
			if code != http.StatusBadRequest || eb.Error.Code != "invalid" || !strings.HasPrefix(eb.Error.Message, c.field+": ") {
				t.Errorf("POST %s %s = %d %+v, want 400 naming %s", c.path, c.body, code, eb, c.field)
			}
		}
	}
	var sw wire.SweepSummary
	if b.call(t, "GET", "/api/v1/sweeps/drift", b.admin, "", &sw); sw.Suspended {
		t.Errorf("a refused suspension suspended the sweep: %+v", sw.Suspension)
	}
	var runs wire.List[wire.SweepRun]
	if b.call(t, "GET", "/api/v1/sweeps/drift/runs", b.admin, "", &runs); len(runs.Items) != 0 {
		t.Errorf("refused triggers started runs: %+v", runs.Items)
	}
	var g wire.FailoverGroupDetail
	if b.call(t, "GET", "/api/v1/failovergroups/pg", b.admin, "", &g); g.Paused {
		t.Errorf("a refused pause paused the group (reason %q)", g.PauseReason)
	}
	// Ordinary text still goes through.
	if code, eb := b.call(t, "POST", "/api/v1/sweeps/drift/suspend", b.admin, `{"reason":"canary first, cutover on Friday — ok","by":"alice@ops"}`, nil); code != http.StatusOK {
		t.Errorf("suspend: %d %v", code, eb)
	}
	if code, eb := b.call(t, "POST", "/api/v1/failovergroups/pg/pause", b.admin, `{"reason":"disk swap in rack 4"}`, nil); code != http.StatusOK {
		t.Errorf("pause: %d %v", code, eb)
	}
}
