package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

func TestParseEventQuery(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	bad := map[string]string{
		"severity=fatal":                   "severity",
		"type=migration.exploded":          "type",
		"type=*":                           "type",
		"since=yesterday":                  "since",
		"until=-5m":                        "until",
		"limit=0":                          "limit",
		"limit=5000":                       "limit",
		"limit=ten":                        "limit",
		"colour=red":                       "colour",
		"since=1h&until=2h":                "until",
		"since=2026-01-01T10:00:00+02:00x": "since",
	}
	for raw, param := range bad {
		v, _ := url.ParseQuery(raw)
		_, err := ParseEventQuery(v, now)
		if err == nil || !strings.HasPrefix(err.Error(), param+":") {
			t.Errorf("%s: err = %v, want one naming %q", raw, err, param)
		}
	}
	v, _ := url.ParseQuery("agent=a1&type=migration.rollback.*,agent.started&severity=error,warning&since=2h&until=2026-01-01T11:30:00Z&limit=20")
	q, err := ParseEventQuery(v, now)
	if err != nil {
		t.Fatal(err)
	}
	if q.AgentID != "a1" || len(q.Types) != 2 || len(q.Severities) != 2 || q.Limit != 20 ||
		!q.Since.Equal(now.Add(-2*time.Hour)) || !q.Until.Equal(time.Date(2026, 1, 1, 11, 30, 0, 0, time.UTC)) {
		t.Fatalf("parsed %+v", q)
	}
}

func TestEventsEndpoint(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var evs []store.StoredEvent
	for i := range 5 {
		e := wire.NewEvent(wire.AgentSource("a1"), wire.EventExecutionFailed, wire.SeverityError, wire.EventData{AgentID: "a1", Error: "disk full"})
		e.Time = b.now.Add(time.Duration(i) * time.Minute)
		raw, _ := json.Marshal(e)
		evs = append(evs, store.StoredEvent{Event: e, Raw: raw, ReceivedAt: b.now})
	}
	if _, err := b.store.InsertEvents(context.Background(), evs, nil); err != nil {
		t.Fatal(err)
	}
	var page wire.List[store.StoredEvent]
	if code, eb := b.call(t, "GET", "/api/v1/events?severity=error&limit=3", b.admin, "", &page); code != 200 {
		t.Fatalf("%d %v", code, eb)
	}
	if len(page.Items) != 3 || page.NextCursor == "" || page.Items[0].ID != evs[4].ID {
		t.Fatalf("first page: %d items, cursor %q", len(page.Items), page.NextCursor)
	}
	var rest wire.List[store.StoredEvent]
	b.call(t, "GET", "/api/v1/events?severity=error&limit=3&cursor="+page.NextCursor, b.admin, "", &rest)
	if len(rest.Items) != 2 || rest.NextCursor != "" || rest.Items[1].ID != evs[0].ID {
		t.Fatalf("second page: %d items, cursor %q", len(rest.Items), rest.NextCursor)
	}
	if code, eb := b.call(t, "GET", "/api/v1/events?severity=loud", b.admin, "", nil); code != http.StatusBadRequest || !strings.Contains(eb.Error.Message, "severity") {
		t.Fatalf("bad severity: %d %v", code, eb)
	}
	if code, eb := b.call(t, "GET", "/api/v1/events?cursor=nope", b.admin, "", nil); code != http.StatusBadRequest || !strings.Contains(eb.Error.Message, "cursor") {
		t.Fatalf("bad cursor: %d %v", code, eb)
	}
	if code, _ := b.call(t, "GET", "/api/v1/dlq", b.admin, "", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("dlq without a pipeline: %d, want 503", code)
	}
}
