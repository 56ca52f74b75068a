package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/sweep"
	"godwit.dev/godwit/internal/wire"
)

// setupSweeps is setup with the sweep service's API side (no leader: runs stay running).
// Hub events go straight into the store, as the ingest would put them.
func setupSweeps(t *testing.T) *bundle {
	t.Helper()
	b := setup(t)
	svc := sweep.New(sweep.Config{Store: b.store, HubID: "test", Logger: logging.Discard(),
		Publish: func(ctx context.Context, e wire.Event) error {
			raw, _ := json.Marshal(e)
			_, err := b.store.InsertEvents(ctx, []store.StoredEvent{{Event: e, Raw: raw, ReceivedAt: e.Time}}, nil)
			return err
		}})
	b.api = New(Config{Store: b.store, Bus: b.bus, Logger: logging.Discard(), Registry: prometheus.NewRegistry(), Sweeps: svc,
		MaxBodyBytes: 1 << 16})
	b.srv.Close()
	b.srv = httptest.NewServer(LoadOpenAPI(t).CheckedHandler(t, b.api, nil))
	t.Cleanup(b.srv.Close)
	return b
}

const apiSweep = `apiVersion: godwit.dev/v1
kind: Sweep
metadata: {name: drift}
spec:
  schedule: "*/15 * * * *"
  maxSeconds: 300
  check: {command: "test ! -f drift"}
`

func TestSweepAPI(t *testing.T) {
	t.Parallel()
	b := setupSweeps(t)
	var res wire.SweepApplyResult
	if code, eb := b.call(t, "POST", "/api/v1/sweeps", b.admin, apiSweep, &res); code != http.StatusOK || res.Outcome != "created" {
		t.Fatalf("apply: %d %v %+v", code, eb, res)
	}
	var list wire.List[wire.SweepSummary]
	if code, _ := b.call(t, "GET", "/api/v1/sweeps", b.admin, "", &list); code != http.StatusOK || len(list.Items) != 1 ||
		list.Items[0].Schedule != "*/15 * * * *" || list.Items[0].MaxSeconds != 300 || len(list.Items[0].NextFirings) != 3 {
		t.Fatalf("list: %d %+v", code, list)
	}

	t.Run("bad specs are 400 naming the field, nothing stored", func(t *testing.T) {
		for _, tc := range []struct{ from, to, field string }{
			{`"*/15 * * * *"`, `"*/15 * *"`, "spec.schedule"},
			{"maxSeconds: 300", "maxSeconds: 0", "spec.maxSeconds"},
			{"maxSeconds: 300", "maxSeconds: 300\n  timezone: Mars/Olympus", "spec.timezone"},
			{"maxSeconds: 300", "maxSeconds: 300\n  action: remediate\n  remediate: {migration: ghost}", "spec.remediate.migration"},
		} {
			bad := strings.Replace(strings.Replace(apiSweep, "name: drift", "name: bad", 1), tc.from, tc.to, 1)
			code, eb := b.call(t, "POST", "/api/v1/sweeps", b.admin, bad, nil)
			if code != http.StatusBadRequest || eb.Error.Code != "invalid" || !strings.Contains(eb.Error.Message, tc.field) {
				t.Errorf("%s: %d %+v", tc.field, code, eb)
			}
		}
		if code, _ := b.call(t, "GET", "/api/v1/sweeps/bad", b.admin, "", nil); code != http.StatusNotFound {
			t.Fatalf("a refused sweep was stored: %d", code)
		}
	})

	t.Run("two concurrent triggers: one runs, one is lock-skipped", func(t *testing.T) {
		runs := make([]wire.SweepRun, 2)
		codes := make([]int, 2)
		var wg sync.WaitGroup
		for i := range runs {
			wg.Go(func() {
				codes[i], _ = b.call(t, "POST", "/api/v1/sweeps/drift/runs", b.admin, `{"max_seconds": 300}`, &runs[i])
			})
		}
		wg.Wait()
		if codes[0] != http.StatusOK || codes[1] != http.StatusOK || runs[0].LockSkipped == runs[1].LockSkipped {
			t.Fatalf("triggers: %v %+v", codes, runs)
		}
		for _, r := range runs {
			if r.LockSkipped && (r.Status != wire.SweepRunSkipped || r.ExitCode == nil || *r.ExitCode != 0) {
				t.Fatalf("skipped record = %+v", r)
			}
			if !r.LockSkipped && (r.Status != wire.SweepRunRunning || r.MaxSeconds != 300 || !strings.HasPrefix(r.TriggeredBy, "admin from ")) {
				t.Fatalf("run record = %+v", r)
			}
		}
		// An empty body takes the spec's budget; the lock still holds.
		var r wire.SweepRun
		if code, eb := b.call(t, "POST", "/api/v1/sweeps/drift/runs", b.admin, "", &r); code != http.StatusOK || !r.LockSkipped {
			t.Fatalf("trigger without a body: %d %v %+v", code, eb, r)
		}
	})

	t.Run("runs are listed newest first, with limit", func(t *testing.T) {
		var l wire.List[wire.SweepRun]
		if code, _ := b.call(t, "GET", "/api/v1/sweeps/drift/runs?limit=2", b.admin, "", &l); code != http.StatusOK || len(l.Items) != 2 ||
			l.Items[0].FiredAt.Before(l.Items[1].FiredAt) {
			t.Fatalf("runs: %d %+v", code, l)
		}
		var d wire.SweepRunDetail
		id := l.Items[len(l.Items)-1].ID
		if code, _ := b.call(t, "GET", "/api/v1/sweeps/drift/runs/"+id, b.admin, "", &d); code != http.StatusOK || d.ID != id || d.Agents == nil {
			t.Fatalf("run: %d %+v", code, d)
		}
		for _, bad := range []string{"?limit=0", "?limit=1001", "?limit=x", "?sweep=drift"} {
			if code, _ := b.call(t, "GET", "/api/v1/sweeps/drift/runs"+bad, b.admin, "", nil); code != http.StatusBadRequest {
				t.Fatalf("runs%s: %d, want 400", bad, code)
			}
		}
	})

	t.Run("the latest sweeps are in the events", func(t *testing.T) {
		var page wire.List[store.StoredEvent]
		if code, eb := b.call(t, "GET", "/api/v1/events?type=sweep.progress&limit=5", b.admin, "", &page); code != http.StatusOK || len(page.Items) != 3 {
			t.Fatalf("events: %d %v %+v", code, eb, page)
		}
		var skipped int
		for _, e := range page.Items {
			var r wire.SweepRun
			if err := json.Unmarshal(e.Data.Extra, &r); err != nil || r.Sweep != "drift" {
				t.Fatalf("progress event data = %s, %v", e.Data.Extra, err)
			}
			if r.LockSkipped {
				skipped++
			}
		}
		if skipped != 2 {
			t.Fatalf("%d lock-skipped progress events, want 2", skipped)
		}
	})

	t.Run("bad triggers", func(t *testing.T) {
		for _, tc := range []struct {
			path, body string
			code       int
		}{
			{"/api/v1/sweeps/drift/runs", `{"max_seconds": 0}`, http.StatusBadRequest},
			{"/api/v1/sweeps/drift/runs", `{"max_seconds": -1}`, http.StatusBadRequest},
			{"/api/v1/sweeps/drift/runs", `{"max_secs": 10}`, http.StatusBadRequest},
			{"/api/v1/sweeps/drift/runs", `{"trigger": "schedule"}`, http.StatusBadRequest},
			{"/api/v1/sweeps/ghost/runs", `{}`, http.StatusNotFound},
		} {
			if code, eb := b.call(t, "POST", tc.path, b.admin, tc.body, nil); code != tc.code {
				t.Errorf("POST %s %s: %d %+v, want %d", tc.path, tc.body, code, eb, tc.code)
			}
		}
		if code, _ := b.call(t, "POST", "/api/v1/sweeps/drift/runs", "", `{}`, nil); code != http.StatusUnauthorized {
			t.Fatalf("trigger without a token: %d", code)
		}
	})

	t.Run("runs page with a cursor, without context", func(t *testing.T) {
		var first, second wire.List[wire.SweepRun]
		if code, _ := b.call(t, "GET", "/api/v1/sweeps/drift/runs?limit=2", b.admin, "", &first); code != http.StatusOK || len(first.Items) != 2 || first.NextCursor == "" {
			t.Fatalf("first page: %d %+v", code, first)
		}
		if code, _ := b.call(t, "GET", "/api/v1/sweeps/drift/runs?limit=2&cursor="+first.NextCursor, b.admin, "", &second); code != http.StatusOK ||
			len(second.Items) != 1 || second.NextCursor != "" || !second.Items[0].FiredAt.Before(first.Items[1].FiredAt) && second.Items[0].ID > first.Items[1].ID {
			t.Fatalf("second page: %d %+v", code, second)
		}
		for _, r := range append(first.Items, second.Items...) {
			if r.Context != nil {
				t.Fatalf("listed run %s carries its context", r.ID)
			}
		}
		var d wire.SweepRunDetail
		if code, _ := b.call(t, "GET", "/api/v1/sweeps/drift/runs/"+second.Items[0].ID, b.admin, "", &d); code != http.StatusOK || len(d.Context) == 0 {
			t.Fatalf("the single run has no context: %d %+v", code, d)
		}
		if code, eb := b.call(t, "GET", "/api/v1/sweeps/drift/runs?cursor=bogus", b.admin, "", nil); code != http.StatusBadRequest || !strings.Contains(eb.Error.Message, "cursor") {
			t.Fatalf("bad cursor: %d %+v", code, eb)
		}
	})

	t.Run("suspend and resume", func(t *testing.T) {
		var res wire.SweepSuspendResult
		if code, eb := b.call(t, "POST", "/api/v1/sweeps/drift/suspend", b.admin, `{"reason": "canary first", "via": "cli", "by": "alice@laptop"}`, &res); code != http.StatusOK ||
			res.Outcome != "suspended" || !res.Suspended || res.Suspension == nil || res.Suspension.Via != "cli" || res.Suspension.By != "alice@laptop" {
			t.Fatalf("suspend: %d %v %+v", code, eb, res)
		}
		var sum wire.SweepSummary
		if code, _ := b.call(t, "GET", "/api/v1/sweeps/drift", b.admin, "", &sum); code != http.StatusOK || !sum.Suspended ||
			sum.Suspension == nil || sum.Suspension.Reason != "canary first" || len(sum.NextFirings) != 0 || sum.ResumePolicy != "skip" {
			t.Fatalf("the suspended sweep: %d %+v", code, sum)
		}
		if code, _ := b.call(t, "POST", "/api/v1/sweeps/drift/suspend", b.admin, "", &res); code != http.StatusOK || res.Outcome != "unchanged" ||
			res.Suspension.By != "alice@laptop" {
			t.Fatalf("suspend again: %d %+v", code, res)
		}
		for _, tc := range []struct {
			path, body string
			code       int
		}{
			{"/api/v1/sweeps/drift/resume", `{"via": "ui"}`, http.StatusBadRequest},
			{"/api/v1/sweeps/drift/resume", `{"via": "spec"}`, http.StatusBadRequest},
			{"/api/v1/sweeps/drift/resume", `{"reason": "` + strings.Repeat("x", 501) + `"}`, http.StatusBadRequest},
			{"/api/v1/sweeps/drift/resume", `{"bogus": 1}`, http.StatusBadRequest},
			{"/api/v1/sweeps/drift/resume", `[`, http.StatusBadRequest},
			{"/api/v1/sweeps/ghost/resume", `{}`, http.StatusNotFound},
			{"/api/v1/sweeps/ghost/suspend", ``, http.StatusNotFound},
		} {
			if code, eb := b.call(t, "POST", tc.path, b.admin, tc.body, nil); code != tc.code {
				t.Errorf("POST %s %s: %d %+v, want %d", tc.path, tc.body, code, eb, tc.code)
			}
		}
		if code, _ := b.call(t, "POST", "/api/v1/sweeps/drift/resume", "", `{}`, nil); code != http.StatusUnauthorized {
			t.Fatalf("resume without a token: %d", code)
		}
		if code, _ := b.call(t, "GET", "/api/v1/sweeps/drift", b.admin, "", &sum); code != http.StatusOK || !sum.Suspended {
			t.Fatalf("refused resumes resumed the sweep: %+v", sum)
		}
		if code, eb := b.call(t, "POST", "/api/v1/sweeps/drift/resume", b.admin, "", &res); code != http.StatusOK || res.Outcome != "resumed" ||
			res.Suspended || res.ResumePolicy != "skip" || len(res.NextFirings) != 3 {
			t.Fatalf("resume: %d %v %+v", code, eb, res)
		}
		var page wire.List[store.StoredEvent]
		if code, _ := b.call(t, "GET", "/api/v1/events?type=operator.action&limit=10", b.admin, "", &page); code != http.StatusOK {
			t.Fatalf("events: %d", code)
		}
		var actions []string
		for _, e := range page.Items {
			var x struct{ Action, Actor, Via string }
			if json.Unmarshal(e.Data.Extra, &x) == nil && x.Action != "" {
				actions = append(actions, x.Action+" by "+x.Actor+" via "+x.Via)
			}
		}
		if len(actions) != 2 || actions[0] != "resume by admin from 127.0.0.1 via api" || actions[1] != "suspend by alice@laptop via cli" {
			t.Fatalf("operator actions (newest first) = %q", actions)
		}
		// Applying spec.suspended: true suspends it; the answer says so.
		var ar wire.SweepApplyResult
		suspendedSpec := strings.Replace(apiSweep, "maxSeconds: 300", "maxSeconds: 300\n  suspended: true", 1)
		if code, eb := b.call(t, "POST", "/api/v1/sweeps", b.admin, suspendedSpec, &ar); code != http.StatusOK || ar.Outcome != "updated" ||
			!ar.Suspended || ar.Suspension != "suspended" || len(ar.NextFirings) != 0 {
			t.Fatalf("apply suspended: %d %v %+v", code, eb, ar)
		}
		if code, eb := b.call(t, "POST", "/api/v1/sweeps", b.admin, apiSweep, &ar); code != http.StatusOK || ar.Suspended || ar.Suspension != "resumed" {
			t.Fatalf("apply without the field after it was set: %d %v %+v", code, eb, ar)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if code, _ := b.call(t, "DELETE", "/api/v1/sweeps/drift", b.admin, "", nil); code != http.StatusOK {
			t.Fatalf("delete: %d", code)
		}
		if code, _ := b.call(t, "DELETE", "/api/v1/sweeps/drift", b.admin, "", nil); code != http.StatusNotFound {
			t.Fatalf("delete twice: %d", code)
		}
		var l wire.List[wire.SweepRun]
		if code, _ := b.call(t, "GET", "/api/v1/sweeps/drift/runs", b.admin, "", &l); code != http.StatusOK || len(l.Items) != 3 {
			t.Fatalf("runs after delete: %d %+v", code, l)
		}
	})
}

func TestSweepAPIWithoutService(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if code, eb := b.call(t, "GET", "/api/v1/sweeps", b.admin, "", nil); code != http.StatusServiceUnavailable || eb.Error.Code != "unavailable" {
		t.Fatalf("sweeps without the service: %d %+v", code, eb)
	}
}
