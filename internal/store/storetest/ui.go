package storetest

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

func runUI(t *testing.T, setup func(t *testing.T) store.Store) {
	t.Run("UI", func(t *testing.T) {
		t.Run("Sessions", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			sess := store.Session{IDHash: "h1", CSRF: "csrf-1", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}
			if err := s.CreateSession(ctx, sess); err != nil {
				t.Fatalf("CreateSession: %v", err)
			}
			requireIs(t, s.CreateSession(ctx, store.Session{IDHash: "h1", CSRF: "other", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}),
				fault.ErrConflict, "CreateSession with a used id")
			got, err := s.GetSession(ctx, "h1", base.Add(59*time.Minute))
			if err != nil || got.CSRF != "csrf-1" || got.IDHash != "h1" || !got.CreatedAt.Equal(stored(base)) ||
				!got.ExpiresAt.Equal(stored(base.Add(time.Hour))) || got.ExpiresAt.Location() != time.UTC {
				t.Fatalf("GetSession = %+v, %v", got, err)
			}
			// Expiry is exclusive: at expires_at the session is gone.
			_, err = s.GetSession(ctx, "h1", base.Add(time.Hour))
			requireIs(t, err, fault.ErrUnauthenticated, "GetSession at expiry")
			_, err = s.GetSession(ctx, "nope", base)
			requireIs(t, err, fault.ErrUnauthenticated, "GetSession unknown")

			if err := s.CreateSession(ctx, store.Session{IDHash: "h2", CSRF: "c2", CreatedAt: base, ExpiresAt: base.Add(3 * time.Hour)}); err != nil {
				t.Fatal(err)
			}
			n, err := s.DeleteExpiredSessions(ctx, base.Add(2*time.Hour))
			if err != nil || n != 1 {
				t.Fatalf("DeleteExpiredSessions = %d, %v; want 1", n, err)
			}
			if _, err := s.GetSession(ctx, "h2", base.Add(2*time.Hour)); err != nil {
				t.Fatalf("unexpired session deleted: %v", err)
			}
			if err := s.DeleteSession(ctx, "h2"); err != nil {
				t.Fatalf("DeleteSession: %v", err)
			}
			_, err = s.GetSession(ctx, "h2", base)
			requireIs(t, err, fault.ErrUnauthenticated, "GetSession after logout")
			if err := s.DeleteSession(ctx, "h2"); err != nil {
				t.Fatalf("DeleteSession twice: %v", err)
			}
		})

		t.Run("PageAgents", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			createToken(t, s, "tok", "secret", 100, base.Add(time.Hour))
			// 25 agents: names with ties (the id breaks them) and distinct first letters otherwise (so any
			// collation orders them alike), labels that only differ in case
			// or sit inside another value, a name with LIKE metacharacters. A name is unique among
			// unrevoked agents, so the first agent of each tie is revoked before the second enrolls.
			type spec struct {
				id, name string
				labels   map[string]string
				status   string
				revoked  bool
			}
			var specs []spec
			for i := range 20 {
				st := []string{wire.StatusOnline, wire.StatusOffline, wire.StatusUnknown}[i%3]
				role := "web"
				if i%2 == 1 {
					role = "db"
				}
				specs = append(specs, spec{fmt.Sprintf("id-%02d", i), fmt.Sprintf("node-%02d", i/2), map[string]string{"role": role, "site": "ams"}, st, i%2 == 0})
			}
			specs = append(specs,
				spec{"id-20", "zz_front%1", map[string]string{"role": "Web"}, wire.StatusOnline, false},
				spec{"id-21", "tricky", map[string]string{"note": `"role":"web"`}, wire.StatusOnline, false},
				spec{"id-22", "webby", map[string]string{"role": "web-2"}, wire.StatusOnline, false},
				spec{"id-23", "revoked-1", map[string]string{"role": "web"}, wire.StatusOnline, true},
				spec{"id-24", "plain", nil, wire.StatusOffline, false},
			)
			var live []store.Liveness
			for _, sp := range specs {
				a := agent(sp.id, sp.name)
				a.Labels = sp.labels
				if err := s.Enroll(ctx, "secret", base, a, "cred"); err != nil {
					t.Fatalf("Enroll(%s): %v", sp.id, err)
				}
				if sp.revoked {
					if err := s.RevokeAgent(ctx, sp.id, base); err != nil {
						t.Fatal(err)
					}
				}
				if sp.status != wire.StatusUnknown {
					live = append(live, store.Liveness{AgentID: sp.id, LastSeen: base, Status: sp.status})
				}
			}
			if err := s.UpdateLiveness(ctx, live); err != nil {
				t.Fatal(err)
			}

			// walk pages through q with the given page size and returns the ids in order.
			walk := func(q store.AgentQuery, size int) []string {
				t.Helper()
				var ids []string
				q.Limit = size
				for pages := 0; ; pages++ {
					if pages > 30 {
						t.Fatalf("PageAgents(%+v) does not end", q)
					}
					page, next, err := s.PageAgents(ctx, q)
					if err != nil {
						t.Fatalf("PageAgents(%+v): %v", q, err)
					}
					if len(page) > size || (next != "" && len(page) != size) {
						t.Fatalf("PageAgents(%+v) = %d agents, next %q", q, len(page), next)
					}
					for _, a := range page {
						ids = append(ids, a.ID)
					}
					if next == "" {
						return ids
					}
					q.Cursor = next
				}
			}
			// want is the expected order: by name, then id (byte order, as both engines use).
			want := func(keep func(sp spec) bool) []string {
				var sel []spec
				for _, sp := range specs {
					if keep(sp) {
						sel = append(sel, sp)
					}
				}
				slices.SortFunc(sel, func(a, b spec) int {
					if a.name != b.name {
						if a.name < b.name {
							return -1
						}
						return 1
					}
					if a.id < b.id {
						return -1
					}
					return 1
				})
				var ids []string
				for _, sp := range sel {
					ids = append(ids, sp.id)
				}
				return ids
			}
			cases := []struct {
				name string
				q    store.AgentQuery
				keep func(sp spec) bool
			}{
				{"all", store.AgentQuery{}, func(spec) bool { return true }},
				{"online", store.AgentQuery{Status: wire.StatusOnline}, func(sp spec) bool { return sp.status == wire.StatusOnline && !sp.revoked }},
				{"unknown", store.AgentQuery{Status: wire.StatusUnknown}, func(sp spec) bool { return sp.status == wire.StatusUnknown && !sp.revoked }},
				{"revoked", store.AgentQuery{Status: store.AgentRevoked}, func(sp spec) bool { return sp.revoked }},
				{"label exact, case-sensitive, not inside values", store.AgentQuery{Labels: map[string]string{"role": "web"}},
					func(sp spec) bool { return sp.labels["role"] == "web" }},
				{"two labels", store.AgentQuery{Labels: map[string]string{"role": "db", "site": "ams"}},
					func(sp spec) bool { return sp.labels["role"] == "db" }},
				{"label and status", store.AgentQuery{Status: wire.StatusOffline, Labels: map[string]string{"role": "web"}},
					func(sp spec) bool {
						return sp.labels["role"] == "web" && sp.status == wire.StatusOffline && !sp.revoked
					}},
				{"search name, any case", store.AgentQuery{Search: "NODE-0"}, func(sp spec) bool { return len(sp.name) == 7 && sp.name[:6] == "node-0" }},
				{"search LIKE metacharacters literally", store.AgentQuery{Search: "_front%"}, func(sp spec) bool { return sp.id == "id-20" }},
				{"search id prefix", store.AgentQuery{Search: "id-2"}, func(sp spec) bool { return sp.id >= "id-20" }},
				{"nothing", store.AgentQuery{Labels: map[string]string{"role": "nope"}}, func(spec) bool { return false }},
			}
			for _, tc := range cases {
				w := want(tc.keep)
				for _, size := range []int{1, 3, 1000} {
					if got := walk(tc.q, size); !slices.Equal(got, w) {
						t.Errorf("%s, pages of %d:\n got %v\nwant %v", tc.name, size, got, w)
					}
				}
			}
			// Pages carry whole agents.
			page, _, err := s.PageAgents(ctx, store.AgentQuery{Search: "tricky", Limit: 10})
			if err != nil || len(page) != 1 {
				t.Fatalf("PageAgents(tricky) = %+v, %v", page, err)
			}
			wantAgent := storedAgent(agent("id-21", "tricky"))
			wantAgent.Labels, wantAgent.Status, wantAgent.LastSeen = specs[21].labels, wire.StatusOnline, stored(base)
			requireAgent(t, page[0], wantAgent)

			for _, bad := range []store.AgentQuery{{Limit: 0}, {Limit: 1001}, {Limit: 10, Status: "lost"}, {Limit: 10, Cursor: "!!"}} {
				if _, _, err := s.PageAgents(ctx, bad); !errorsIsInvalid(err) {
					t.Errorf("PageAgents(%+v): error %v, want invalid", bad, err)
				}
			}

			counts, err := s.CountAgentsByStatus(ctx)
			wantCounts := map[string]int{wire.StatusOnline: 6, wire.StatusOffline: 5, wire.StatusUnknown: 3, store.AgentRevoked: 11}
			if err != nil || !reflect.DeepEqual(counts, wantCounts) {
				t.Fatalf("CountAgentsByStatus = %v, %v; want %v", counts, err, wantCounts)
			}

			ids := []string{"id-00", "id-21", "no-such"}
			for i := range 1200 { // more than one chunk of bound parameters
				ids = append(ids, fmt.Sprintf("missing-%d", i))
			}
			names, err := s.AgentNames(ctx, ids)
			if err != nil || !reflect.DeepEqual(names, map[string]string{"id-00": "node-00", "id-21": "tricky"}) {
				t.Fatalf("AgentNames = %v, %v", names, err)
			}
		})

		t.Run("EmptyCounts", func(t *testing.T) {
			s := setup(t)
			counts, err := s.CountAgentsByStatus(t.Context())
			want := map[string]int{wire.StatusOnline: 0, wire.StatusOffline: 0, wire.StatusUnknown: 0, store.AgentRevoked: 0}
			if err != nil || !reflect.DeepEqual(counts, want) {
				t.Fatalf("CountAgentsByStatus on an empty store = %v, %v", counts, err)
			}
			ms, err := s.CountMigrationsByState(t.Context())
			if err != nil || len(ms) != 0 {
				t.Fatalf("CountMigrationsByState on an empty store = %v, %v", ms, err)
			}
			if mark, err := s.MigrationsMark(t.Context()); err != nil || mark == "" {
				t.Fatalf("MigrationsMark on an empty store = %q, %v", mark, err)
			}
		})

		t.Run("Migrations", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			marks := map[string]bool{}
			mark := func() {
				t.Helper()
				m, err := s.MigrationsMark(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if marks[m] {
					t.Fatalf("MigrationsMark %q repeated after a write", m)
				}
				marks[m] = true
			}
			mark()
			// m0..m6 created a minute apart; m5 and m6 at the same instant (the name breaks the tie).
			for i := range 7 {
				m := migrationRecord(fmt.Sprintf("m%d", i))
				m.CreatedAt = base.Add(time.Duration(min(i, 5)) * time.Minute)
				as := []wire.Assignment{assignment(m.Name, "a1", 1, 0), assignment(m.Name, "a2", 1, 0)}
				if err := s.CreateMigration(ctx, m, as); err != nil {
					t.Fatal(err)
				}
				mark()
			}
			for _, name := range []string{"m1", "m4"} {
				m, _ := s.GetMigration(ctx, name)
				m.State = "running"
				var changed []wire.Assignment
				if name == "m1" {
					// a1 failed and was retried: the latest attempt is what the agent page shows.
					a, retry := assignment("m1", "a1", 1, 0), assignment("m1", "a1", 2, 0)
					a.State, retry.State, retry.UpdatedAt = "failed", "applying", base.Add(time.Hour)
					changed = []wire.Assignment{a, retry}
				}
				if err := s.SaveMigration(ctx, store.Fence{}, m, changed); err != nil {
					t.Fatal(err)
				}
				mark()
			}
			// Counters alone (active time, a version bump) leave the mark as it is.
			before, _ := s.MigrationsMark(ctx)
			m4, _ := s.GetMigration(ctx, "m4")
			m4.ActiveMS += 500
			if err := s.SaveMigration(ctx, store.Fence{}, m4, nil); err != nil {
				t.Fatal(err)
			}
			if after, err := s.MigrationsMark(ctx); err != nil || after != before {
				t.Fatalf("MigrationsMark after a counter-only write = %q, %v; want %q", after, err, before)
			}
			// A reason change moves it.
			m4, _ = s.GetMigration(ctx, "m4")
			m4.Reason = "batch 1 of 2 dispatched"
			if err := s.SaveMigration(ctx, store.Fence{}, m4, nil); err != nil {
				t.Fatal(err)
			}
			mark()

			ac, err := s.CountAssignments(ctx, "m1")
			if want := map[string]int{"failed": 1, "applying": 1, "pending": 1}; err != nil || !reflect.DeepEqual(ac, want) {
				t.Fatalf("CountAssignments(m1) = %v, %v; want %v", ac, err, want)
			}
			if ac, err := s.CountAssignments(ctx, "nope"); err != nil || len(ac) != 0 {
				t.Fatalf("CountAssignments(nope) = %v, %v", ac, err)
			}

			counts, err := s.CountMigrationsByState(ctx)
			if want := map[string]int{"pending": 5, "running": 2}; err != nil || !reflect.DeepEqual(counts, want) {
				t.Fatalf("CountMigrationsByState = %v, %v; want %v", counts, err, want)
			}
			walk := func(q store.MigrationQuery) []string {
				var names []string
				for pages := 0; ; pages++ {
					if pages > 10 {
						t.Fatalf("PageMigrations(%+v) does not end", q)
					}
					page, next, err := s.PageMigrations(ctx, q)
					if err != nil {
						t.Fatalf("PageMigrations(%+v): %v", q, err)
					}
					for _, m := range page {
						names = append(names, m.Name)
					}
					if next == "" {
						return names
					}
					q.Cursor = next
				}
			}
			for _, size := range []int{1, 2, 100} {
				if got, want := walk(store.MigrationQuery{Limit: size}), []string{"m6", "m5", "m4", "m3", "m2", "m1", "m0"}; !slices.Equal(got, want) {
					t.Errorf("PageMigrations by %d = %v, want %v", size, got, want)
				}
				if got, want := walk(store.MigrationQuery{Limit: size, State: "running"}), []string{"m4", "m1"}; !slices.Equal(got, want) {
					t.Errorf("PageMigrations running by %d = %v, want %v", size, got, want)
				}
			}
			for _, bad := range []store.MigrationQuery{{Limit: 0}, {Limit: 5, Cursor: "x"}} {
				if _, _, err := s.PageMigrations(ctx, bad); !errorsIsInvalid(err) {
					t.Errorf("PageMigrations(%+v): error %v, want invalid", bad, err)
				}
			}

			as, err := s.AgentAssignments(ctx, "a1", 100)
			if err != nil || len(as) != 7 {
				t.Fatalf("AgentAssignments(a1) = %d, %v; want 7", len(as), err)
			}
			if as[0].Migration != "m1" || as[0].Attempt != 2 || as[0].State != "applying" {
				t.Fatalf("AgentAssignments(a1)[0] = %+v; want m1 attempt 2 (latest, most recently updated)", as[0])
			}
			for _, a := range as[1:] {
				if a.Migration == "m1" {
					t.Fatalf("AgentAssignments(a1) lists m1 twice: %+v", as)
				}
			}
			if as, err := s.AgentAssignments(ctx, "a1", 3); err != nil || len(as) != 3 {
				t.Fatalf("AgentAssignments(a1, 3) = %d, %v", len(as), err)
			}
			if as, err := s.AgentAssignments(ctx, "nobody", 3); err != nil || len(as) != 0 {
				t.Fatalf("AgentAssignments(nobody) = %+v, %v", as, err)
			}

			// Latest attempts, counted and listed in SQL: a retry hides the attempt it replaced,
			// a rollback keeps the failure it undid.
			{
				lt := migrationRecord("lt")
				lt.CreatedAt = base.Add(-time.Hour)
				at := func(agent string, attempt, batch int, st, failure string) wire.Assignment {
					a := assignment("lt", agent, attempt, batch)
					a.State, a.Failure = st, failure
					return a
				}
				as := []wire.Assignment{
					at("a1", 1, 0, "failed", "boom"), at("a1", 2, 0, "rolled_back", "boom"),
					at("a2", 1, 0, "rollback_failed", "boom"),
					at("a3", 1, 1, "succeeded", ""), at("a4", 1, 1, "pending", ""),
					at("a5", 1, 1, "failed", "x"), at("a5", 2, 1, "succeeded", ""),
				}
				if err := s.CreateMigration(ctx, lt, as); err != nil {
					t.Fatal(err)
				}
				mark()
				cs, err := s.CountLatestAssignments(ctx, "lt")
				if err != nil {
					t.Fatal(err)
				}
				key := func(c store.AssignmentCount) string {
					return fmt.Sprintf("%d/%s/%v=%d", c.Batch, c.State, c.Failed, c.N)
				}
				var got []string
				for _, c := range cs {
					got = append(got, key(c))
				}
				slices.Sort(got)
				if want := []string{"0/rollback_failed/true=1", "0/rolled_back/true=1", "1/pending/false=1", "1/succeeded/false=2"}; !slices.Equal(got, want) {
					t.Fatalf("CountLatestAssignments(lt) = %v, want %v", got, want)
				}
				list := func(q store.LatestQuery) []string {
					t.Helper()
					q.Migration = "lt"
					as, err := s.LatestAssignments(ctx, q)
					if err != nil {
						t.Fatalf("LatestAssignments(%+v): %v", q, err)
					}
					var out []string
					for _, a := range as {
						out = append(out, fmt.Sprintf("%s#%d", a.AgentID, a.Attempt))
					}
					return out
				}
				one := 1
				for _, c := range []struct {
					q    store.LatestQuery
					want []string
				}{
					{store.LatestQuery{}, []string{"a1#2", "a2#1", "a3#1", "a4#1", "a5#2"}},
					{store.LatestQuery{Failed: true}, []string{"a1#2", "a2#1"}},
					{store.LatestQuery{State: "succeeded"}, []string{"a3#1", "a5#2"}},
					{store.LatestQuery{State: "failed"}, nil},
					{store.LatestQuery{Batch: &one}, []string{"a3#1", "a4#1", "a5#2"}},
					{store.LatestQuery{Limit: 2}, []string{"a1#2", "a2#1"}},
					{store.LatestQuery{Limit: 2, Offset: 2}, []string{"a3#1", "a4#1"}},
					{store.LatestQuery{Limit: 2, Offset: 4}, []string{"a5#2"}},
				} {
					if got := list(c.q); !slices.Equal(got, c.want) {
						t.Errorf("LatestAssignments(%+v) = %v, want %v", c.q, got, c.want)
					}
				}
				_, err = s.LatestAssignments(ctx, store.LatestQuery{Migration: "lt", Offset: -1, Limit: 1})
				requireIs(t, err, fault.ErrInvalid, "LatestAssignments with a negative offset")
				if cs, err := s.CountLatestAssignments(ctx, "nope"); err != nil || len(cs) != 0 {
					t.Errorf("CountLatestAssignments(nope) = %v, %v", cs, err)
				}
			}

		})
	})
}

func errorsIsInvalid(err error) bool {
	return err != nil && fault.Code(err) == fault.ErrInvalid.Error()
}
