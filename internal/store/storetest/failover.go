package storetest

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

func runFailover(t *testing.T, setup func(t *testing.T) store.Store) {
	t.Run("Failover", func(t *testing.T) {
		group := func(name string, members ...string) wire.FailoverGroup {
			return wire.FailoverGroup{Name: name, Spec: []byte(`{"name":"` + name + `"}`), SpecHash: "h-" + name,
				Members: members, CreatedAt: base, UpdatedAt: base}
		}
		t.Run("CreateGetListDelete", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			got, err := s.PutFailoverGroup(ctx, group("pg", "a1", "a2"))
			if err != nil {
				t.Fatalf("PutFailoverGroup: %v", err)
			}
			want := group("pg", "a1", "a2")
			want.Version, want.CreatedAt, want.UpdatedAt = 1, stored(base), stored(base)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("stored %+v\nwant %+v", got, want)
			}
			_, err = s.PutFailoverGroup(ctx, group("pg", "a3"))
			requireIs(t, err, fault.ErrConflict, "creating a group twice")

			upd := got
			upd.Members, upd.Paused, upd.PauseReason, upd.UpdatedAt = []string{"a2", "a3"}, true, "upgrade", base.Add(time.Minute)
			got, err = s.PutFailoverGroup(ctx, upd)
			if err != nil || got.Version != 2 || !got.Paused || got.PauseReason != "upgrade" || !reflect.DeepEqual(got.Members, []string{"a2", "a3"}) {
				t.Fatalf("update = %+v, %v", got, err)
			}
			_, err = s.PutFailoverGroup(ctx, upd) // version 1 is stale now
			requireIs(t, err, fault.ErrConflict, "updating from a stale version")

			if _, err := s.PutFailoverGroup(ctx, group("web", "w1")); err != nil {
				t.Fatal(err)
			}
			list, err := s.ListFailoverGroups(ctx)
			if err != nil || len(list) != 2 || list[0].Name != "pg" || list[1].Name != "web" || !reflect.DeepEqual(list[1].Members, []string{"w1"}) {
				t.Fatalf("ListFailoverGroups = %+v, %v", list, err)
			}
			if err := s.DeleteFailoverGroup(ctx, "pg"); err != nil {
				t.Fatal(err)
			}
			requireIs(t, s.DeleteFailoverGroup(ctx, "pg"), fault.ErrNotFound, "deleting twice")
			_, err = s.GetFailoverGroup(ctx, "pg")
			requireIs(t, err, fault.ErrNotFound, "a deleted group")
			// Its members are free again.
			if _, err := s.PutFailoverGroup(ctx, group("pg2", "a2", "a3")); err != nil {
				t.Fatalf("members of a deleted group: %v", err)
			}
		})
		t.Run("OneGroupPerAgent", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			if _, err := s.PutFailoverGroup(ctx, group("pg", "a1", "a2")); err != nil {
				t.Fatal(err)
			}
			_, err := s.PutFailoverGroup(ctx, group("other", "a3", "a2"))
			requireIs(t, err, fault.ErrConflict, "an agent in two groups")
			if !strings.Contains(err.Error(), "a2") || !strings.Contains(err.Error(), "pg") {
				t.Fatalf("the error %q does not name the agent and its group", err)
			}
			// Nothing of the refused group was stored, a3 included.
			_, err = s.GetFailoverGroup(ctx, "other")
			requireIs(t, err, fault.ErrNotFound, "the refused group")
			if _, err := s.PutFailoverGroup(ctx, group("third", "a3")); err != nil {
				t.Fatalf("a3 was kept by the refused group: %v", err)
			}
			// A refused update keeps the stored members.
			g, _ := s.GetFailoverGroup(ctx, "pg")
			g.Members = []string{"a1", "a3"}
			_, err = s.PutFailoverGroup(ctx, g)
			requireIs(t, err, fault.ErrConflict, "taking another group's member")
			g2, _ := s.GetFailoverGroup(ctx, "pg")
			if g2.Version != g.Version || !reflect.DeepEqual(g2.Members, []string{"a1", "a2"}) {
				t.Fatalf("a refused update changed the group: %+v", g2)
			}
			_, err = s.PutFailoverGroup(ctx, group("dup", "d1", "d1"))
			requireIs(t, err, fault.ErrConflict, "an agent twice in one group")
		})
	})
}
