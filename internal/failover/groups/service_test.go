package groups_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/failover"
	"godwit.dev/godwit/internal/failover/groups"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

const (
	a1 = "0f0e0d0c-0b0a-4908-8706-050403020101"
	a2 = "0f0e0d0c-0b0a-4908-8706-050403020102"
	a3 = "0f0e0d0c-0b0a-4908-8706-050403020103"
)

type recorder struct{ got []wire.FailoverGroup }

func (r *recorder) Publish(_ context.Context, g wire.FailoverGroup) error {
	r.got = append(r.got, g)
	return nil
}

func setup(t *testing.T) (*groups.Service, store.Store, *recorder) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	now := time.Now()
	if err := st.CreateEnrollToken(t.Context(), wire.EnrollToken{ID: "t", MaxUses: 10, ExpiresAt: now.Add(time.Hour), CreatedAt: now}, "h"); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{a1, a2, a3} {
		site := []string{"a", "b", "b"}[i]
		a := wire.Agent{ID: id, Name: "db" + id[len(id)-1:], Labels: map[string]string{"role": "db", "site": site}, EnrolledAt: now}
		if err := st.Enroll(t.Context(), "h", now, a, "c"); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	return &groups.Service{Store: st, Publisher: rec}, st, rec
}

func doc(name string, members ...string) []byte {
	s := "apiVersion: godwit.dev/v1\nkind: FailoverGroup\nmetadata: {name: " + name + "}\nspec:\n  members:\n"
	for _, m := range members {
		s += "    - " + m + "\n"
	}
	return []byte(s + "  hooks:\n    onPromote: {command: p, timeout: 5s}\n    onFence: {command: f, timeout: 1s}\n")
}

func TestApplyStoresAndPublishes(t *testing.T) {
	svc, _, rec := setup(t)
	ctx := t.Context()
	res, err := svc.Apply(ctx, doc("pg", "{agent: "+a1+", priority: 5}", "{selector: {matchLabels: {site: b}}}"), false)
	if err != nil || res.Outcome != "created" {
		t.Fatalf("Apply = %+v, %v", res, err)
	}
	if got := res.Group.Members; len(got) != 3 || got[0] != a1 {
		t.Fatalf("members %v", got)
	}
	if len(rec.got) != 1 || rec.got[0].Name != "pg" {
		t.Fatalf("published %+v", rec.got)
	}
	res, err = svc.Apply(ctx, doc("pg", "{agent: "+a1+", priority: 5}", "{selector: {matchLabels: {site: b}}}"), false)
	if err != nil || res.Outcome != "unchanged" || len(rec.got) != 1 {
		t.Fatalf("re-apply = %+v, %v", res, err)
	}
	c, err := failover.SpecOf(res.Group)
	if err != nil || c.Members[0].Priority != 5 || c.FailoverTimeout != failover.DefaultFailoverTimeout.Milliseconds() {
		t.Fatalf("stored spec %+v, %v", c, err)
	}
	g, err := svc.SetPaused(ctx, "pg", true, "upgrade")
	if err != nil || !g.Paused || len(rec.got) != 2 || !rec.got[1].Paused {
		t.Fatalf("SetPaused = %+v, %v (published %d)", g, err, len(rec.got))
	}
	res, _ = svc.Apply(ctx, doc("pg", "{agent: "+a1+"}", "{agent: "+a2+"}"), false)
	if res.Outcome != "configured" || !res.Group.Paused || len(res.Group.Members) != 2 {
		t.Fatalf("re-apply with other members = %+v (the pause must be kept)", res)
	}
}

func TestApplyRefusesNamingTheField(t *testing.T) {
	svc, st, rec := setup(t)
	ctx := t.Context()
	if _, err := svc.Apply(ctx, doc("pg", "{agent: "+a1+"}", "{agent: "+a2+"}"), false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		doc  []byte
		want string
	}{
		{"member of another group", doc("other", "{agent: "+a3+"}", "{agent: "+a2+"}"),
			"spec.members[1].agent (line 7): agent " + a2 + " is already a member of failover group pg"},
		{"unknown agent", doc("other", "{agent: "+a3+"}", "{agent: 0f0e0d0c-0b0a-4908-8706-0504030201ff}"),
			"spec.members[1].agent (line 7): unknown agent"},
		{"selector overlapping an agent", doc("other", "{agent: "+a3+"}", "{selector: {matchLabels: {site: b}}}"),
			"spec.members[1].selector (line 7): agent " + a3 + " is already a member through spec.members[0].agent"},
		{"selector matching nothing", doc("other", "{selector: {matchLabels: {site: z}}}"), "spec.members[0].selector (line 6): matches no enrolled agent"},
		{"timing rule", append(doc("other", "{agent: "+a3+"}"), []byte("  failoverTimeout: 5s\n")...), "spec.failoverTimeout (line 10)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := svc.Apply(ctx, tc.doc, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, fault.ErrInvalid) {
				t.Fatalf("Apply error %v\nwant it to contain %q", err, tc.want)
			}
			if _, err := st.GetFailoverGroup(ctx, "other"); !errors.Is(err, fault.ErrNotFound) {
				t.Fatalf("a refused group was stored: %v", err)
			}
		})
	}
	if len(rec.got) != 1 {
		t.Fatalf("refused groups were published: %d", len(rec.got))
	}
	res, err := svc.Apply(ctx, doc("other", "{agent: "+a3+"}"), true)
	if err != nil || res.Outcome != "valid" {
		t.Fatalf("dry run = %+v, %v", res, err)
	}
	if _, err := st.GetFailoverGroup(ctx, "other"); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("a dry run stored the group: %v", err)
	}
}

// A switchover names a member that may become primary; anything else is refused naming "to",
// and nothing is asked of the members.
func TestSwitchoverRefusesNamingTheField(t *testing.T) {
	svc, _, _ := setup(t)
	ctx := t.Context()
	if _, err := svc.Apply(ctx, doc("pg", "{agent: "+a1+"}", "{agent: "+a2+", noFailover: true}"), false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ to, want string }{
		{a3, "to: \"" + a3 + "\" is not a member"},
		{a2, "to: member " + a2 + " is noFailover"},
	} {
		_, err := svc.Switchover(ctx, "pg", tc.to)
		if !errors.Is(err, fault.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Switchover(%s) = %v, want %q", tc.to, err, tc.want)
		}
	}
	if _, err := svc.Switchover(ctx, "nope", a1); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("unknown group: %v", err)
	}
	// The recorder is no Switcher: without the bus there is nobody to tell.
	if _, err := svc.Switchover(ctx, "pg", a1); !errors.Is(err, fault.ErrUnavailable) {
		t.Fatalf("without the bus: %v", err)
	}
}

// A member's noFailover and priority hold whether the entry that took it in names it by id or
// selects it: the stored spec carries the resolution the members read, and a switchover to a
// member marked noFailover through a selector is refused.
func TestSelectorMembersKeepTheirSettings(t *testing.T) {
	svc, _, rec := setup(t)
	ctx := t.Context()
	res, err := svc.Apply(ctx, doc("pg", "{agent: "+a1+", priority: 10}", "{selector: {matchLabels: {site: b}}, priority: 50, noFailover: true}"), false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := failover.SpecOf(res.Group)
	if err != nil {
		t.Fatal(err)
	}
	want := []failover.Settings{{Agent: a1, Priority: 10, Entry: 0}, {Agent: a2, Priority: 50, NoFailover: true, Entry: 1}, {Agent: a3, Priority: 50, NoFailover: true, Entry: 1}}
	if !slices.Equal(c.Resolved, want) || res.Group.SpecHash != c.Hash() {
		t.Fatalf("stored resolution %+v (hash %s, want %s)\nwant %+v", c.Resolved, res.Group.SpecHash, c.Hash(), want)
	}
	for _, to := range []string{a2, a3} {
		_, err := svc.Switchover(ctx, "pg", to)
		if want := "to: member " + to + " is noFailover (through spec.members[1])"; !errors.Is(err, fault.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Switchover(%s) = %v, want %q", to, err, want)
		}
	}
	// The selector entry now lets its members fail over: the settings change, and so does the
	// hash the members restart on.
	res2, err := svc.Apply(ctx, doc("pg", "{agent: "+a1+", priority: 10}", "{selector: {matchLabels: {site: b}}, priority: 50}"), false)
	if err != nil || res2.Outcome != "configured" || res2.Group.SpecHash == res.Group.SpecHash || len(rec.got) != 2 {
		t.Fatalf("re-apply = %+v, %v", res2, err)
	}
	if _, err := svc.Switchover(ctx, "pg", a2); !errors.Is(err, fault.ErrUnavailable) {
		t.Fatalf("a switchover to an eligible selector member reaches the bus check: %v", err)
	}
	// Two selectors taking in one agent are refused naming both fields, and nothing is stored.
	_, err = svc.Apply(ctx, doc("pg", "{selector: {matchLabels: {role: db}}}", "{selector: {matchLabels: {site: b}}, noFailover: true}"), false)
	if want := "spec.members[1].selector (line 7): agent " + a2 + " is already a member through spec.members[0].selector"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("overlapping selectors: %v\nwant %q", err, want)
	}
}
