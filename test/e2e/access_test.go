package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/wire"
)

// as is the hub as seen by the command line with another token.
func (h *hubProc) as(token string) *hubProc {
	c := *h
	c.token = token
	return &c
}

// httpCall sends a request to the hub's API from the given client address (the hub trusts
// loopback as a proxy in these tests) and returns the status and Retry-After.
func (h *hubProc) httpCall(t *testing.T, method, path, token, from, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, h.api+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if from != "" {
		req.Header.Set("X-Forwarded-For", from)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// Roles, the audit log and the failure limit on a real hub process, through the real command
// line: a viewer reads and is refused changes, an operator acts and is refused admin routes, a
// revoked token is refused at once; the audit log holds one row per mutating call and none for
// reads; an address that keeps failing gets 429, another does not.
func TestRolesAuditAndLimitsOnARealHub(t *testing.T) {
	t.Parallel()
	h := startHub(t, filepath.Join(t.TempDir(), "hub"), "--auth-failure-burst", "3", "--auth-failure-interval", "1h",
		"--trusted-proxy", "127.0.0.1")
	mutating := 0
	create := func(role string) (string, string) {
		out, errOut, code := h.cliCode("token", "create", "--role", role, "--description", role+" e2e")
		mutating++
		if code != 0 || !strings.HasPrefix(out, "gwt_") {
			t.Fatalf("token create --role %s: %d %s %s", role, code, out, errOut)
		}
		id := strings.Fields(strings.TrimPrefix(errOut, "api token "))[0]
		return strings.TrimSpace(out), strings.TrimSuffix(id, ":")
	}
	viewer, viewerID := create("viewer")
	operator, _ := create("operator")

	v, op := h.as(viewer), h.as(operator)
	v.cli(t, "get", "agents")
	v.cli(t, "events", "--limit", "5")
	if _, errOut, code := v.cliCode("token", "create", "--uses", "1"); code != 1 || !strings.Contains(errOut, "role viewer may not") {
		t.Fatalf("viewer creates an enrollment token: %d %s", code, errOut)
	}
	mutating++
	if _, errOut, code := op.cliCode("pause", "no-such-migration"); code != 1 || strings.Contains(errOut, "may not") {
		t.Fatalf("operator pauses a missing migration: %d %s; want it let through to a not found", code, errOut)
	}
	mutating++
	if _, errOut, code := op.cliCode("dlq", "purge", "--all"); code != 1 || !strings.Contains(errOut, "role operator may not") {
		t.Fatalf("operator purges dead letters: %d %s", code, errOut)
	}
	mutating++
	if _, errOut, code := op.cliCode("audit"); code != 1 || !strings.Contains(errOut, "needs admin") {
		t.Fatalf("operator reads the audit log: %d %s", code, errOut)
	}
	h.cli(t, "token", "revoke", viewerID)
	mutating++
	if _, errOut, code := v.cliCode("get", "agents"); code != 1 || !strings.Contains(errOut, "revoked") {
		t.Fatalf("revoked viewer: %d %s", code, errOut)
	}

	var rows []wire.AuditEntry
	if err := json.Unmarshal([]byte(h.cli(t, "audit", "--limit", "1000", "-o", "json")), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != mutating {
		t.Fatalf("%d audit rows for %d mutating calls: %+v", len(rows), mutating, rows)
	}
	for _, r := range rows {
		if r.Method == http.MethodGet || r.Remote != "127.0.0.1" || r.Via != wire.ViaAPI {
			t.Errorf("audit row %+v", r)
		}
	}
	if rows[0].Path != "/api/v1/api-tokens/"+viewerID+"/revoke" || rows[0].TokenID != wire.AdminTokenID || rows[0].Status != 200 {
		t.Errorf("newest row %+v, want the revocation by the admin token", rows[0])
	}

	// Three failures from one address, then that address is refused even with a good token; a
	// second address is not. (Loopback is a trusted proxy here, so X-Forwarded-For names the
	// client.)
	bad := "gwt_" + strings.Repeat("q", 52)
	for i := range 3 {
		if code, _ := h.httpCall(t, "GET", "/api/v1/agents", bad, "198.51.100.20", ""); code != 401 {
			t.Fatalf("failure %d: %d", i+1, code)
		}
	}
	if code, retry := h.httpCall(t, "GET", "/api/v1/agents", h.token, "198.51.100.20", ""); code != 429 || retry == "" {
		t.Fatalf("the failing address with the admin token: %d, Retry-After %q; want 429", code, retry)
	}
	if code, _ := h.httpCall(t, "GET", "/api/v1/agents", h.token, "198.51.100.21", ""); code != 200 {
		t.Fatalf("another address: %d", code)
	}
	if !strings.Contains(h.cli(t, "audit", "--action", "GET"), "STATUS") {
		t.Fatal("godwit audit prints no table")
	}
}

// What an agent sends, on a real hub: enrollment refuses a bad or duplicate name; an agent's
// hub-only event is dead-lettered, an event from its future is stored at its receipt time, and a
// flood beyond its quota is dead-lettered while its first events are stored.
func TestAgentInputOnARealHub(t *testing.T) {
	t.Parallel()
	h := startHub(t, filepath.Join(t.TempDir(), "hub"), "--agent-event-rate", "1", "--agent-event-burst", "20", "--agent-clock-skew", "1m")
	tok := strings.TrimSpace(h.cli(t, "token", "create", "--uses", "5"))
	enroll := func(name string) (int, wire.EnrollResponse) {
		body := fmt.Sprintf(`{"token":%q,"name":%q}`, tok, name)
		resp, err := http.Post(h.api+"/api/v1/enroll", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var er wire.EnrollResponse
		_ = json.NewDecoder(resp.Body).Decode(&er)
		return resp.StatusCode, er
	}
	code, id := enroll("edge-1")
	if code != 201 {
		t.Fatalf("enroll: %d", code)
	}
	for name, want := range map[string]int{"EDGE-1": 409, "edge/1": 400, "edge..1": 400, "edge\u202e1": 400} {
		if code, _ := enroll(name); code != want {
			t.Errorf("enroll %q: %d, want %d", name, code, want)
		}
	}

	nc, err := bus.ConnectAgent(id.NATSURLs, id.AgentID, id.NATSPassword)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	publish := func(ev wire.Event) {
		t.Helper()
		b, _ := json.Marshal(ev)
		m := &nats.Msg{Subject: wire.EventSubject(id.AgentID), Data: b, Header: nats.Header{"Nats-Msg-Id": {ev.ID}}}
		if _, err := nc.RequestMsgWithContext(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	mine := func(typ string, at time.Time) wire.Event {
		ev := wire.NewEvent(wire.AgentSource(id.AgentID), typ, wire.SeverityError, wire.EventData{AgentID: id.AgentID, Message: "e2e " + typ})
		ev.Time = at
		return ev
	}
	publish(mine(wire.EventOperatorAction, time.Now()))
	future := mine(wire.EventExecutionFailed, time.Now().Add(48*time.Hour))
	publish(future)
	for range 40 {
		publish(mine(wire.EventDetectionSucceeded, time.Now()))
	}

	var dls []wire.DeadLetter
	var stored []wire.EventRecord
	eventually(t, time.Minute, "the events stored or dead-lettered", func() error {
		if err := json.Unmarshal([]byte(h.cli(t, "dlq", "list", "-o", "json")), &dls); err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(h.cli(t, "events", "--agent", id.AgentID, "--limit", "1000", "-o", "json")), &stored); err != nil {
			return err
		}
		if len(dls)+len(stored) != 42 {
			return fmt.Errorf("%d dead letters and %d events, want 42 in all", len(dls), len(stored))
		}
		return nil
	})
	reasons := map[string]int{}
	for _, dl := range dls {
		reasons[dl.Reason]++
	}
	// The burst is 20 and one more is earned a second: the hub-only event is not charged (it
	// never passes validation), the future one and the first 19 or more of the flood are stored.
	if reasons["hub_only"] != 1 || reasons["quota"] < 10 || reasons["quota"]+reasons["hub_only"] != len(dls) {
		t.Fatalf("dead letters by reason %v", reasons)
	}
	var clamped *wire.EventRecord
	for i, e := range stored {
		if e.ID == future.ID {
			clamped = &stored[i]
		}
	}
	if clamped == nil || clamped.AgentTime == nil || !clamped.AgentTime.Equal(future.Time) || clamped.Time.After(time.Now()) {
		t.Fatalf("the event from the future: %+v", clamped)
	}
}
