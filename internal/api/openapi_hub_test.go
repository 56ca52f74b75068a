package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/hub/hubtest"
	"godwit.dev/godwit/internal/wire"
)

const oneStep = `apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: %s}
spec:
  selector: {matchLabels: {role: web}}
  toVersion: "2"
  steps:
    - name: touch
      detect: 'test ! -f touched-%[1]s'
      run: 'echo changed; touch touched-%[1]s'
      rollback: 'rm -f touched-%[1]s'
      timeout: 1m
  rollout: {canary: 0, batchSize: 100%%, maxFailures: 0, approval: %s, onFailure: pause}
`

const driftSweep = `apiVersion: godwit.dev/v1
kind: Sweep
metadata: {name: drift}
spec:
  schedule: "0 3 * * *"
  maxSeconds: 60
  selector: {matchLabels: {role: web}}
  check: {command: "echo looking; test -f touched-first"}
`

// Every operation of the OpenAPI document, answered by a real hub with a real agent, and every
// answer checked against the document.
func TestOpenAPIAgainstARealHub(t *testing.T) {
	t.Parallel()
	covered := &api.Coverage{}
	oa := api.LoadOpenAPI(t)
	h := hubtest.Start(t, hubtest.Options{
		Agents: []hubtest.Agent{{Name: "web-1", Labels: []string{"role=web"}}},
		Front:  func(next http.Handler) http.Handler { return oa.CheckedHandler(t, next, covered) },
	})
	web1 := h.Agents["web-1"]

	var yamlDoc []byte
	func() {
		resp, err := http.Get(h.URL + "/api/v1/openapi.yaml")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		yamlDoc, _ = io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !bytes.HasPrefix(yamlDoc, []byte("openapi: 3.1")) {
			t.Fatalf("openapi.yaml: %d %.40q", resp.StatusCode, yamlDoc)
		}
	}()

	// Tokens and enrollment (the agent web-1 enrolled through the check as it started); this
	// agent is enrolled by hand, publishes garbage and is revoked.
	var tok wire.CreateTokenResponse
	h.Must(201, "POST", "/api/v1/tokens", "application/json", `{"uses": 1, "ttl": "10m", "description": "openapi test"}`, &tok)
	h.Must(200, "GET", "/api/v1/tokens", "", "", nil)
	var manual wire.EnrollResponse
	h.Must(201, "POST", "/api/v1/enroll", "application/json",
		`{"token": "`+tok.Token+`", "name": "by-hand", "system": {"os": "linux"}}`, &manual)
	basic := func(id, password string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Del("Authorization"); r.SetBasicAuth(id, password) }
	}
	h.Must(200, "GET", "/api/v1/agents/self", "", "", nil, basic(manual.AgentID, manual.NATSPassword))
	h.Must(401, "GET", "/api/v1/agents/self", "", "", nil, basic(manual.AgentID, "wrong"))
	h.Must(200, "GET", "/api/v1/agents/"+web1, "", "", nil)
	h.Must(404, "GET", "/api/v1/agents/nope", "", "", nil)
	h.Must(200, "GET", "/api/v1/status", "", "", nil)
	h.Must(200, "GET", "/api/v1/version", "", "", nil)

	// API tokens with roles: a viewer reads and is refused a change; revoked, it is refused.
	var viewer wire.CreateAPITokenResponse
	h.Must(201, "POST", "/api/v1/api-tokens", "application/json", `{"role": "viewer", "ttl": "1h", "description": "openapi viewer"}`, &viewer)
	h.Must(200, "GET", "/api/v1/api-tokens", "", "", nil)
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	h.Must(200, "GET", "/api/v1/agents", "", "", nil, bearer(viewer.Token))
	h.Must(403, "POST", "/api/v1/check", "", "", nil, bearer(viewer.Token))
	h.Must(200, "POST", "/api/v1/api-tokens/"+viewer.ID+"/revoke", "", "", nil)
	h.Must(401, "GET", "/api/v1/agents", "", "", nil, bearer(viewer.Token))

	// A migration that runs to the end on the agent, and one paused, resumed and aborted.
	h.Must(200, "POST", "/api/v1/migrations?dry_run=true", "application/yaml", fmt.Sprintf(oneStep, "first", "auto"), nil)
	h.Must(200, "POST", "/api/v1/migrations", "application/yaml", fmt.Sprintf(oneStep, "first", "auto"), nil)
	h.Must(400, "POST", "/api/v1/migrations", "application/yaml", "kind: Migration\n", nil)
	h.Must(409, "POST", "/api/v1/migrations", "application/yaml", strings.Replace(fmt.Sprintf(oneStep, "first", "auto"), "toVersion: \"2\"", "toVersion: \"3\"", 1), nil)
	h.Eventually("migration first succeeded", func() error {
		var d struct {
			Migration struct{ State string } `json:"migration"`
		}
		h.Must(200, "GET", "/api/v1/migrations/first", "", "", &d)
		if d.Migration.State != "succeeded" {
			return fmt.Errorf("state %s", d.Migration.State)
		}
		return nil
	})
	// The description with its assignments chosen: none and the failed (none here) are empty,
	// all lists the attempt; another value is refused naming the parameter.
	for which, n := range map[string]int{"all": 1, "failed": 0, "none": 0} {
		var d wire.MigrationDescription
		h.Must(200, "GET", "/api/v1/migrations/first?assignments="+which, "", "", &d)
		if len(d.Assignments) != n || len(d.Batches) != 1 || d.Batches[0].Total != 1 || d.Batches[0].States["succeeded"] != 1 {
			t.Errorf("assignments=%s: %d assignments, batches %+v; want %d", which, len(d.Assignments), d.Batches, n)
		}
	}
	h.Must(400, "GET", "/api/v1/migrations/first?assignments=some", "", "", nil)
	h.Must(400, "GET", "/api/v1/migrations/first?limit=1", "", "", nil)
	slow := strings.Replace(fmt.Sprintf(oneStep, "second", "manual"), "run: 'echo changed;", "run: 'sleep 30;", 1)
	h.Must(200, "POST", "/api/v1/migrations", "application/yaml", fmt.Sprintf(oneStep, "first", "auto"), nil) // unchanged
	h.Must(200, "POST", "/api/v1/migrations", "application/yaml", slow, nil)
	h.Eventually("migration second running", func() error {
		var m wire.List[struct{ Name, State string }]
		h.Must(200, "GET", "/api/v1/migrations", "", "", &m)
		for _, x := range m.Items {
			if x.Name == "second" && x.State == "running" {
				return nil
			}
		}
		return fmt.Errorf("migrations %+v", m.Items)
	})
	for _, act := range []string{"pause", "resume", "abort"} {
		h.Must(200, "POST", "/api/v1/migrations/second/"+act, "", "", nil)
	}
	h.Must(400, "POST", "/api/v1/migrations/second/explode", "", "", nil)
	// A migration that has ended is deleted once its agent has confirmed the last request.
	h.Eventually("migration first deleted", func() error {
		if code, body := h.Call("DELETE", "/api/v1/migrations/first", "", "", nil); code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	h.Must(404, "DELETE", "/api/v1/migrations/first", "", "", nil)
	h.Must(404, "GET", "/api/v1/migrations/ghost", "", "", nil)
	h.Must(200, "GET", "/api/v1/migrations", "", "", nil)
	h.Must(200, "POST", "/api/v1/check", "", "", nil)
	h.Must(200, "GET", "/api/v1/events?limit=50", "", "", nil)
	h.Must(200, "GET", "/api/v1/events?agent="+web1+"&severity=info", "", "", nil)

	// A sweep run by hand on the agent, to the end.
	h.Must(200, "POST", "/api/v1/sweeps?dry_run=true", "application/yaml", driftSweep, nil)
	h.Must(200, "POST", "/api/v1/sweeps", "application/yaml", driftSweep, nil)
	h.Must(200, "GET", "/api/v1/sweeps", "", "", nil)
	var run wire.SweepRun
	h.Must(200, "POST", "/api/v1/sweeps/drift/runs", "application/json", `{"trigger": "cli", "by": "openapi test"}`, &run)
	h.Eventually("sweep run finished", func() error {
		var d wire.SweepRunDetail
		h.Must(200, "GET", "/api/v1/sweeps/drift/runs/"+run.ID, "", "", &d)
		if !d.Final() {
			return fmt.Errorf("run %s", d.Status)
		}
		return nil
	})
	h.Must(200, "GET", "/api/v1/sweeps/drift", "", "", nil)
	h.Must(200, "GET", "/api/v1/sweeps/drift/runs?limit=5", "", "", nil)
	h.Must(200, "POST", "/api/v1/sweeps/drift/suspend", "application/json", `{"reason": "openapi test", "via": "cli"}`, nil)
	h.Must(200, "GET", "/api/v1/sweeps/drift", "", "", nil) // suspended: its suspension, no next firings
	h.Must(200, "GET", "/api/v1/sweeps", "", "", nil)
	h.Must(200, "POST", "/api/v1/sweeps/drift/resume", "", "", nil)
	h.Must(200, "DELETE", "/api/v1/sweeps/drift", "", "", nil)

	// A failover group of the two agents, paused and resumed, then deleted.
	group := "apiVersion: godwit.dev/v1\nkind: FailoverGroup\nmetadata: {name: pg}\nspec:\n  members:\n    - {agent: " + web1 +
		"}\n    - {agent: " + manual.AgentID + "}\n  hooks:\n    onPromote: {command: p, timeout: 5s}\n    onFence: {command: f, timeout: 1s}\n"
	h.Must(200, "POST", "/api/v1/failovergroups?dry_run=true", "application/yaml", group, nil)
	h.Must(200, "POST", "/api/v1/failovergroups", "application/yaml", group, nil)
	h.Must(400, "POST", "/api/v1/failovergroups", "application/yaml", strings.Replace(group, "pg}", "other}", 1), nil)
	h.Must(200, "GET", "/api/v1/failovergroups", "", "", nil)
	h.Must(200, "POST", "/api/v1/failovergroups/pg/pause", "application/json", `{"reason": "openapi test"}`, nil)
	h.Must(200, "GET", "/api/v1/failovergroups/pg", "", "", nil)
	h.Must(200, "POST", "/api/v1/failovergroups/pg/resume", "", "", nil)
	// A planned switchover once the running member is primary, to the other one (409 until a
	// primary is recorded).
	h.Eventually("a primary to switch over from", func() error {
		var res wire.FailoverSwitchoverResult
		code, body := h.Call("POST", "/api/v1/failovergroups/pg/switchover", "application/json", `{"to": "`+manual.AgentID+`"}`, &res)
		if code != 200 || res.From != web1 || res.To != manual.AgentID {
			return fmt.Errorf("switchover: %d %s %+v", code, body, res)
		}
		return nil
	})
	h.Must(200, "DELETE", "/api/v1/failovergroups/pg", "", "", nil)
	h.Must(404, "GET", "/api/v1/failovergroups/pg", "", "", nil)

	// A dead letter: the hand-enrolled agent publishes garbage on its own event subject.
	nc, err := bus.ConnectAgent(manual.NATSURLs, manual.AgentID, manual.NATSPassword)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for range 2 {
		if err := nc.Publish(wire.EventSubject(manual.AgentID), []byte("not an event")); err != nil {
			t.Fatal(err)
		}
	}
	var dl wire.List[wire.DeadLetter]
	h.Eventually("two dead letters", func() error {
		h.Must(200, "GET", "/api/v1/dlq?limit=10", "", "", &dl)
		if len(dl.Items) != 2 {
			return fmt.Errorf("%d dead letters", len(dl.Items))
		}
		return nil
	})
	seq := fmt.Sprint(dl.Items[0].Seq)
	h.Must(200, "GET", "/api/v1/dlq/"+seq, "", "", nil)
	h.Must(200, "POST", "/api/v1/dlq/"+seq+"/replay", "", "", nil)
	h.Must(404, "GET", "/api/v1/dlq/"+seq, "", "", nil)
	h.Must(200, "DELETE", "/api/v1/dlq/"+fmt.Sprint(dl.Items[1].Seq), "", "", nil)
	h.Must(200, "POST", "/api/v1/dlq/purge", "", "", nil)

	h.Must(200, "POST", "/api/v1/agents/"+web1+"/rehydrate", "", "", nil)
	h.Must(200, "POST", "/api/v1/agents/"+manual.AgentID+"/revoke", "", "", nil)
	h.Must(403, "GET", "/api/v1/agents/self", "", "", nil, basic(manual.AgentID, manual.NATSPassword))
	h.Must(200, "DELETE", "/api/v1/tokens/"+tok.ID, "", "", nil)
	h.Must(401, "GET", "/api/v1/agents", "", "", nil, func(r *http.Request) { r.Header.Set("Authorization", "Bearer gwa_wrong") })
	var audit wire.List[wire.AuditEntry]
	h.Must(200, "GET", "/api/v1/audit?since=1h&limit=500", "", "", &audit)
	if len(audit.Items) < 20 {
		t.Fatalf("%d audit entries after the calls above", len(audit.Items))
	}
	h.Must(405, "PUT", "/api/v1/agents", "", "", nil)
	h.Must(404, "GET", "/api/v1/nothing", "", "", nil)

	t.Logf("responses checked: %s", covered)
	// Every operation the document describes was answered successfully at least once.
	done := covered.Successes()
	for _, op := range oa.Operations() {
		if !done[op] {
			t.Errorf("no successful answer to %s was checked", op)
		}
	}
}
