package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/failover/groups"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/ui"
	"godwit.dev/godwit/internal/wire"
)

// fakeGroupBus stands in for the hub's bus under the real failover service: it records what was
// published and the switchovers asked for, and answers as the group's primary is web-2 of epoch 9.
type fakeGroupBus struct {
	mu       sync.Mutex
	switched []string
}

func (b *fakeGroupBus) Publish(context.Context, wire.FailoverGroup) error { return nil }

func (b *fakeGroupBus) Switchover(_ context.Context, g wire.FailoverGroup, to string) (wire.FailoverSwitchoverResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.switched = append(b.switched, g.Name+" to "+to)
	return wire.FailoverSwitchoverResult{Group: g.Name, From: g.Members[1], To: to, Epoch: 9}, nil
}

func (b *fakeGroupBus) taken() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.switched...)
}

// failoverRig is a rig with the real failover service on its store, the group pg-main of the
// three agents (the third noFailover), and the members' reported transitions: web-1 was primary
// of epoch 5 and fenced after failing; web-2 promoted and is primary of epoch 9; the third
// agent reported nothing.
func newFailoverRig(t *testing.T) (*rig, *fakeGroupBus, *groups.Service) {
	t.Helper()
	bus := &fakeGroupBus{}
	var svc *groups.Service
	r := newRig(t, func(c *ui.Config) {
		svc = &groups.Service{Store: c.Store, Publisher: bus}
		c.Failover = svc
	})
	ctx := t.Context()
	web1, web2, evil := r.agent["web-1"], r.agent["web-2"], r.agent[`<script>alert("agent")</script>`]
	doc := fmt.Sprintf(`apiVersion: godwit.dev/v1
kind: FailoverGroup
metadata: {name: pg-main}
spec:
  members:
    - {agent: %s, priority: 100}
    - {agent: %s, priority: 50}
    - {agent: %s, noFailover: true}
  failoverTimeout: 20s
  hooks:
    onPromote: {command: "true", timeout: 10s}
    onFence: {command: "true", timeout: 2s}
`, web1, web2, evil)
	if _, err := svc.Apply(ctx, []byte(doc), false); err != nil {
		t.Fatal(err)
	}
	type tr struct {
		member, role, from, to string
		epoch                  uint64
		reason, hook, result   string
	}
	base := r.now.Add(-time.Hour)
	var evs []store.StoredEvent
	for i, x := range []tr{
		{web1, "primary", "initializing", "activating", 5, "reason-1 no record: bootstrap", "", ""},
		{web1, "primary", "activating", "healthy", 5, "reason-2 onPromote ok", "", ""},
		{web2, "replica", "initializing", "watching", 5, "reason-3 another is primary", "", ""},
		{web1, "primary", "healthy", "failed", 5, "reason-4 3 health checks failed", "", ""},
		{web1, "primary", "failed", "fencing", 5, "reason-5 fence", "", ""},
		{web1, "primary", "fencing", "fencing", 5, "reason-6 hook", "onFence", "succeeded"},
		{web1, "primary", "fencing", "fenced", 5, "reason-7 onFence ok", "", ""},
		{web2, "replica", "watching", "promoting", 5, "reason-8 primary fenced", "", ""},
		{web2, "primary", "promoting", "activating", 9, "reason-9 won the record", "", ""},
		{web2, "primary", "activating", "healthy", 9, "reason-10 onPromote ok", "", ""},
		// Another group's transition is not this group's.
		{web2, "primary", "healthy", "failed", 77, "reason-other-group", "", ""},
	} {
		group := "pg-main"
		if strings.HasPrefix(x.reason, "reason-other") {
			group = "pg-other"
		}
		extra, _ := json.Marshal(wire.FailoverTransition{Group: group, Member: x.member, Role: x.role, From: x.from, To: x.to,
			Epoch: x.epoch, Reason: x.reason, Hook: x.hook, HookResult: x.result})
		e := wire.NewEvent(wire.AgentSource(x.member), wire.EventFailoverTransition, wire.SeverityInfo,
			wire.EventData{AgentID: x.member, Message: x.reason, Extra: extra})
		e.Time = base.Add(time.Duration(i) * time.Minute)
		evs = append(evs, store.StoredEvent{Event: e, ReceivedAt: e.Time})
	}
	if _, err := r.store.InsertEvents(ctx, evs, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.store.UpdateLiveness(ctx, []store.Liveness{
		{AgentID: web1, Status: wire.StatusOnline, LastSeen: r.now},
		{AgentID: web2, Status: wire.StatusOnline, LastSeen: r.now},
	}); err != nil {
		t.Fatal(err)
	}
	return r, bus, svc
}

// rowOf is the text of body from the element with id to the end of its table row (or the page).
func rowOf(t *testing.T, body, id string) string {
	t.Helper()
	i := strings.Index(body, `id="`+id+`"`)
	if i < 0 {
		t.Fatalf("no element %s in the page", id)
	}
	rest := body[i:]
	if j := strings.Index(rest, "</tr>"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// The list and the group's page show who is primary, the epoch, the fenced member marked, and
// the timeline newest first; an operator is offered pause and switchover; an unknown group is
// the normal 404 page naming it.
func TestFailoverGroupPages(t *testing.T) {
	t.Parallel()
	r, bus, _ := newFailoverRig(t)
	web1, web2, evil := r.agent["web-1"], r.agent["web-2"], r.agent[`<script>alert("agent")</script>`]
	c := r.client()
	r.loginWith(c, r.apiToken("tok-op", wire.RoleOperator, time.Hour))

	res, list := r.get(c, "/ui/failovergroups")
	if res.StatusCode != http.StatusOK || !strings.Contains(list, `href="/ui/failovergroups" aria-current="page">Failover<`) {
		t.Fatalf("list: %s, or no current Failover nav entry", res.Status)
	}
	row := list[strings.Index(list, `data-group="pg-main"`):]
	row = row[:strings.Index(row, "</tr>")]
	for _, want := range []string{`href="/ui/failovergroups/pg-main"`, `<td class="num epoch">9</td>`, `href="/ui/agents/` + web2 + `">web-2<`,
		"primary: healthy", `<td class="num healthy">1</td>`, `<td class="num failed">0</td>`, "degraded"} {
		if !strings.Contains(row, want) {
			t.Errorf("the list's row lacks %q:\n%s", want, row)
		}
	}
	// The fenced count carries a symbol, not colour alone.
	if !strings.Contains(row, `<td class="num fenced"><svg class="icon icon-paused"`) || !strings.Contains(row, "</svg> 1</td>") {
		t.Errorf("the fenced count is not shown with its symbol:\n%s", row)
	}

	res, page := r.get(c, "/ui/failovergroups/pg-main")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("group page: %s", res.Status)
	}
	if !strings.Contains(page, `data-live-topic="failover"`) {
		t.Error("the group's page does not update itself")
	}
	if strings.Contains(page, `<script>alert("agent")`) {
		t.Fatal("an agent's name is not escaped")
	}
	if p := rowOf(t, page, "group-primary"); !strings.Contains(p, ">web-2<") || !strings.Contains(p, "primary: healthy") {
		t.Errorf("primary: %s", p)
	}
	if e := rowOf(t, page, "group-epoch"); !strings.HasPrefix(e, `id="group-epoch">9<`) {
		t.Errorf("epoch: %s", e)
	}
	if s := rowOf(t, page, "group-since"); !strings.Contains(s, r.now.Add(-time.Hour+8*time.Minute).UTC().Format("2006-01-02 15:04:05Z")) {
		t.Errorf("primary since (the first report of epoch 9): %s", s)
	}
	m2 := rowOf(t, page, "member-"+web2)
	if !strings.Contains(m2, `data-primary="true"`) || !strings.Contains(m2, "PRIMARY") || strings.Contains(m2, "switchover-") {
		t.Errorf("web-2's row does not mark it primary, or offers a switchover to itself:\n%s", m2)
	}
	m1 := rowOf(t, page, "member-"+web1)
	if !strings.Contains(m1, `data-health="fenced"`) || !strings.Contains(m1, "primary: fenced") || !strings.Contains(m1, "reason-7 onFence ok") ||
		!strings.Contains(m1, `<td class="num">100</td>`) || !strings.Contains(m1, `id="switchover-`+web1+`"`) {
		t.Errorf("web-1's row:\n%s", m1)
	}
	m3 := rowOf(t, page, "member-"+evil)
	for _, want := range []string{"not reported", "<strong>yes</strong>: never promoted", "is noFailover", "has reported no state yet", "not online"} {
		if !strings.Contains(m3, want) {
			t.Errorf("the noFailover member's row lacks %q:\n%s", want, m3)
		}
	}
	if !strings.Contains(page, `id="failover-timeout">20s<`) || !strings.Contains(page, "6s <span") {
		t.Error("the timing (failover timeout 20s, fence deadline 6s) is not shown")
	}
	if !strings.Contains(page, "<dt>healthCheck</dt><dd><span class=\"muted\">none</span>") || !strings.Contains(page, "<dt>onFence</dt><dd><code>true</code>") {
		t.Error("the hooks are not shown as applied")
	}
	// The timeline: this group's ten entries, newest first, the hook result among them.
	tl := page[strings.Index(page, `id="timeline"`):]
	if strings.Contains(tl, "reason-other-group") {
		t.Error("another group's transition is in the timeline")
	}
	last := -1
	for _, reason := range []string{"reason-10 ", "reason-9 ", "reason-8 ", "reason-7 ", "reason-6 ", "reason-4 ", "reason-1 "} {
		i := strings.Index(tl, reason)
		if i < 0 || i < last {
			t.Fatalf("timeline entry %q missing or out of order (newest first)", reason)
		}
		last = i
	}
	if !strings.Contains(tl, "onFence succeeded") || !strings.Contains(tl, "10 of the 10 entries read: transitions and hook refusals") {
		t.Error("the timeline does not show the hook result, or its bound")
	}
	if !strings.Contains(page, `action="/ui/failovergroups/pg-main/pause"`) {
		t.Error("an operator is not offered pause")
	}

	res, body := r.get(c, "/ui/failovergroups/pg-nope")
	if res.StatusCode != http.StatusNotFound || !strings.Contains(body, "pg-nope") {
		t.Fatalf("unknown group: %s, body names it: %v", res.Status, strings.Contains(body, "pg-nope"))
	}
	if len(bus.taken()) != 0 {
		t.Fatalf("reading pages switched over: %v", bus.taken())
	}
}

// Pause and resume go through the confirmation and the service; a switchover is confirmed with
// its warnings, refused with the hub's reason for a noFailover member or a non-member (nothing
// asked of the bus), and asked of the bus for an eligible member.
func TestFailoverGroupActions(t *testing.T) {
	t.Parallel()
	r, bus, svc := newFailoverRig(t)
	web1, evil := r.agent["web-1"], r.agent[`<script>alert("agent")</script>`]
	c := r.client()
	csrf := r.loginWith(c, r.apiToken("tok-op", wire.RoleOperator, time.Hour))
	base := "/ui/failovergroups/pg-main"

	res, body := r.post(c, base+"/pause", url.Values{"csrf": {csrf}, "reason": {"disk swap"}}, nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "Pause failover group pg-main?") || !strings.Contains(body, `name="reason" value="disk swap"`) {
		t.Fatalf("pause without confirm: %s, not the confirmation", res.Status)
	}
	if g, _ := svc.Get(t.Context(), "pg-main"); g.Paused {
		t.Fatal("paused before it was confirmed")
	}
	res, _ = r.post(c, base+"/pause", url.Values{"csrf": {csrf}, "reason": {"disk swap"}, "confirm": {"yes"}}, nil)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != base+"?done=paused" {
		t.Fatalf("pause: %s to %q", res.Status, res.Header.Get("Location"))
	}
	if g, _ := svc.Get(t.Context(), "pg-main"); !g.Paused || g.PauseReason != "disk swap" {
		t.Fatalf("after pause: %+v", g)
	}
	_, page := r.get(c, base+"?done=paused")
	if !strings.Contains(page, `id="paused-banner"`) || !strings.Contains(page, "disk swap") || !strings.Contains(page, `action="`+base+`/resume"`) {
		t.Fatal("the paused group's page shows no banner with the reason, or no resume")
	}
	if res, _ := r.post(c, base+"/resume", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("resume: %s", res.Status)
	}
	if g, _ := svc.Get(t.Context(), "pg-main"); g.Paused || g.PauseReason != "" {
		t.Fatalf("after resume: %+v", g)
	}

	// The confirmation of a switchover to the noFailover member warns; confirmed, the hub refuses.
	res, body = r.post(c, base+"/switchover", url.Values{"csrf": {csrf}, "to": {evil}}, nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "Warning:") || !strings.Contains(body, "is noFailover") ||
		!strings.Contains(body, `name="to" value="`+evil+`"`) {
		t.Fatalf("switchover confirmation for a noFailover member: %s\n%s", res.Status, body)
	}
	res, body = r.post(c, base+"/switchover", url.Values{"csrf": {csrf}, "to": {evil}, "confirm": {"yes"}}, nil)
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "is noFailover (through spec.members[2]): it never becomes primary") || !strings.Contains(body, `id="members"`) {
		t.Fatalf("switchover to a noFailover member: %s", res.Status)
	}
	// A non-member: refused on the confirmation step and confirmed, naming it.
	stranger := "00000000-0000-7000-8000-999999999999"
	for _, confirm := range []string{"", "yes"} {
		res, body = r.post(c, base+"/switchover", url.Values{"csrf": {csrf}, "to": {stranger}, "confirm": {confirm}}, nil)
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, stranger) || !strings.Contains(body, "is not a member of failover group pg-main") {
			t.Fatalf("switchover to a non-member (confirm %q): %s", confirm, res.Status)
		}
	}
	if got := bus.taken(); len(got) != 0 {
		t.Fatalf("refused switchovers reached the bus: %v", got)
	}
	res, _ = r.post(c, base+"/switchover", url.Values{"csrf": {csrf}, "to": {web1}, "confirm": {"yes"}}, nil)
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusSeeOther || !strings.Contains(loc, "done=switchover") || !strings.Contains(loc, "epoch=9") {
		t.Fatalf("switchover: %s to %q", res.Status, loc)
	}
	if got := bus.taken(); len(got) != 1 || got[0] != "pg-main to "+web1 {
		t.Fatalf("switchovers asked of the bus: %v", got)
	}
	if _, page := r.get(c, loc); !strings.Contains(page, "hands over to "+web1) {
		t.Fatal("the switchover's flash is not shown")
	}
	if res, body := r.post(c, "/ui/failovergroups/pg-nope/pause", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil); res.StatusCode != http.StatusNotFound || !strings.Contains(body, "pg-nope") {
		t.Fatalf("pause of an unknown group: %s", res.Status)
	}
}

// A viewer sees the group but no action, and its posts are refused (403) with nothing changed.
func TestFailoverGroupViewer(t *testing.T) {
	t.Parallel()
	r, bus, svc := newFailoverRig(t)
	viewer := r.client()
	csrf := r.loginWith(viewer, r.apiToken("tok-viewer", wire.RoleViewer, time.Hour))
	res, page := r.get(viewer, "/ui/failovergroups/pg-main")
	if res.StatusCode != http.StatusOK || !strings.Contains(page, `id="group-epoch">9<`) {
		t.Fatalf("viewer's group page: %s", res.Status)
	}
	if strings.Contains(page, "/switchover") || strings.Contains(page, "/pause") || strings.Contains(page, `scope="col">Switchover<`) || strings.Contains(page, "<button type=\"submit\" class=\"danger\"") ||
		!strings.Contains(page, "Role viewer may watch this group, not act on it") {
		t.Fatal("a viewer is offered failover actions")
	}
	for _, path := range []string{"/pause", "/resume", "/switchover"} {
		res, body := r.post(viewer, "/ui/failovergroups/pg-main"+path, url.Values{"csrf": {csrf}, "confirm": {"yes"}, "to": {r.agent["web-1"]}}, nil)
		if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "Role viewer may not") {
			t.Fatalf("viewer posts %s: %s", path, res.Status)
		}
	}
	if g, _ := svc.Get(t.Context(), "pg-main"); g.Paused || len(bus.taken()) != 0 {
		t.Fatalf("a viewer's posts changed something: paused %v, switchovers %v", g.Paused, bus.taken())
	}
}

// A member agent whose policy refused a hook of the group is shown so on the group's page —
// its row and the timeline name the hook and the rule.
func TestFailoverGroupPageShowsPolicyRefusal(t *testing.T) {
	t.Parallel()
	r, _, _ := newFailoverRig(t)
	evil := r.agent[`<script>alert("agent")</script>`]
	extra, _ := json.Marshal(map[string]string{"group": "pg-main", "hook": "onFence", "rule": "spec.commands.run", "policy": "web-hosts"})
	e := wire.NewEvent(wire.AgentSource(evil), wire.EventFailoverPolicyRefused, wire.SeverityError, wire.EventData{AgentID: evil, Extra: extra})
	e.Time = r.now.Add(-time.Minute)
	if _, err := r.store.InsertEvents(t.Context(), []store.StoredEvent{{Event: e, ReceivedAt: e.Time}}, nil); err != nil {
		t.Fatal(err)
	}
	c := r.client()
	r.loginWith(c, r.apiToken("tok-view", wire.RoleViewer, time.Hour))
	res, page := r.get(c, "/ui/failovergroups/pg-main")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("group page: %s", res.Status)
	}
	m := rowOf(t, page, "member-"+evil)
	if !strings.Contains(m, `data-health="failed"`) || !strings.Contains(m, "refused: hook onFence (agent policy)") ||
		!strings.Contains(m, "refused by agent policy web-hosts, rule spec.commands.run") {
		t.Errorf("the refusing member's row:\n%s", m)
	}
	tl := page[strings.Index(page, `id="timeline"`):]
	if !strings.Contains(tl, "onFence refused") || !strings.Contains(tl, "refused by agent policy web-hosts, rule spec.commands.run") ||
		!strings.Contains(tl, "11 of the 11") {
		t.Errorf("the timeline does not show the refusal:\n%s", tl)
	}
}
