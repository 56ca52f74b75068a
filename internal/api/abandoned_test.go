package api

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"godwit.dev/godwit/internal/store"
)

// lockedBuffer is a log sink the handler's goroutine and the test both use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A call whose client went away before it was answered (its context cancelled) is no fault of
// the hub: it is recorded as 499 (client closed request) in the audit log and the metrics, and
// not logged as a failed request, while a real fault still is.
func TestCallAbandonedByItsClientIsNotAServerError(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	b := setup(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	for _, tc := range []struct {
		route string
		err   error
		want  int
	}{
		{"abandoned", fmt.Errorf("migration m1: %w", context.Canceled), StatusClientClosedRequest},
		{"broken", fmt.Errorf("disk on fire"), http.StatusInternalServerError},
	} {
		h := b.api.wrap(tc.route, http.StatusOK, func(*http.Request) (any, error) { return nil, tc.err })
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/migrations/m1/abort", nil))
		if rec.Code != tc.want {
			t.Fatalf("%s: status %d, want %d", tc.route, rec.Code, tc.want)
		}
		var m dto.Metric
		if err := b.api.reqs.WithLabelValues(tc.route, fmt.Sprint(tc.want)).Write(&m); err != nil {
			t.Fatal(err)
		}
		if n := m.GetCounter().GetValue(); n != 1 {
			t.Fatalf("%s: %v requests counted with status %d, want 1", tc.route, n, tc.want)
		}
	}
	entries, _, err := b.store.QueryAudit(context.Background(), store.AuditQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	statuses := map[string]int{}
	for _, e := range entries {
		statuses[e.Route] = e.Status
	}
	if statuses["abandoned"] != StatusClientClosedRequest || statuses["broken"] != http.StatusInternalServerError {
		t.Fatalf("audited statuses %v", statuses)
	}
	out := logs.String()
	if strings.Contains(out, `msg="api request failed" route=abandoned`) {
		t.Fatalf("the abandoned call was logged as a failure:\n%s", out)
	}
	if !strings.Contains(out, `msg="api request failed" route=broken`) {
		t.Fatalf("the real fault was not logged:\n%s", out)
	}
}
