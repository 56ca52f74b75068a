package storetest

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

func apiToken(id string, role wire.Role, expires time.Time) wire.APIToken {
	return wire.APIToken{ID: id, Role: role, Description: "desc " + id, CreatedBy: wire.AdminTokenID, CreatedAt: base, ExpiresAt: expires}
}

func storedAPIToken(tk wire.APIToken) wire.APIToken {
	tk.CreatedAt, tk.ExpiresAt = stored(tk.CreatedAt), stored(tk.ExpiresAt)
	if tk.RevokedAt != nil {
		r := stored(*tk.RevokedAt)
		tk.RevokedAt = &r
	}
	return tk
}

func runAccess(t *testing.T, setup func(t *testing.T) store.Store) {
	t.Run("Access", func(t *testing.T) {
		t.Run("APITokens", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			_, err := s.APITokenByHash(ctx, "h-viewer")
			requireIs(t, err, fault.ErrUnauthenticated, "APITokenByHash before any token")
			viewer := apiToken("t1", wire.RoleViewer, base.Add(time.Hour))
			admin := apiToken("t2", wire.RoleAdmin, base.Add(720*time.Hour))
			admin.Description = ""
			for _, c := range []struct {
				tk   wire.APIToken
				hash string
			}{{viewer, "h-viewer"}, {admin, "h-admin"}} {
				if err := s.CreateAPIToken(ctx, c.tk, c.hash); err != nil {
					t.Fatalf("CreateAPIToken(%s): %v", c.tk.ID, err)
				}
			}
			requireIs(t, s.CreateAPIToken(ctx, apiToken("t1", wire.RoleAdmin, base.Add(time.Hour)), "h-other"), fault.ErrConflict, "CreateAPIToken with a used id")
			requireIs(t, s.CreateAPIToken(ctx, apiToken("t3", wire.RoleAdmin, base.Add(time.Hour)), "h-viewer"), fault.ErrConflict, "CreateAPIToken with a used hash")
			requireIs(t, s.CreateAPIToken(ctx, apiToken("t4", "root", base.Add(time.Hour)), "h-root"), fault.ErrInvalid, "CreateAPIToken with an unknown role")
			got, err := s.APITokenByHash(ctx, "h-viewer")
			if err != nil || !reflect.DeepEqual(got, storedAPIToken(viewer)) || got.ExpiresAt.Location() != time.UTC {
				t.Fatalf("APITokenByHash = %+v, %v; want %+v", got, err, storedAPIToken(viewer))
			}
			for _, h := range []string{"", "h-view", "h-viewer ", "t1"} {
				_, err := s.APITokenByHash(ctx, h)
				requireIs(t, err, fault.ErrUnauthenticated, fmt.Sprintf("APITokenByHash(%q)", h))
			}
			list, err := s.ListAPITokens(ctx)
			if err != nil || !reflect.DeepEqual(list, []wire.APIToken{storedAPIToken(viewer), storedAPIToken(admin)}) {
				t.Fatalf("ListAPITokens = %+v, %v", list, err)
			}

			// Revocation is kept with its first time, and the token is still found (the caller
			// refuses it with its own message).
			at := base.Add(10 * time.Minute)
			rev, err := s.RevokeAPIToken(ctx, "t1", at)
			if err != nil || rev.RevokedAt == nil || !rev.RevokedAt.Equal(stored(at)) || rev.Role != wire.RoleViewer {
				t.Fatalf("RevokeAPIToken = %+v, %v", rev, err)
			}
			if again, err := s.RevokeAPIToken(ctx, "t1", at.Add(time.Hour)); err != nil || !again.RevokedAt.Equal(stored(at)) {
				t.Fatalf("second RevokeAPIToken = %+v, %v; want the first time kept", again, err)
			}
			got, err = s.APITokenByHash(ctx, "h-viewer")
			if err != nil || got.RevokedAt == nil || got.Usable(at) {
				t.Fatalf("revoked token = %+v, %v", got, err)
			}
			_, err = s.RevokeAPIToken(ctx, "nope", at)
			requireIs(t, err, fault.ErrNotFound, "RevokeAPIToken(unknown)")
			if got, _ := s.APITokenByHash(ctx, "h-admin"); got.RevokedAt != nil {
				t.Fatalf("revoking t1 revoked t2: %+v", got)
			}
		})

		t.Run("RevocationEndsSessions", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			if err := s.CreateAPIToken(ctx, apiToken("op", wire.RoleOperator, base.Add(time.Hour)), "h-op"); err != nil {
				t.Fatal(err)
			}
			sessions := []store.Session{
				{IDHash: "s-op-1", CSRF: "c", CreatedAt: base, ExpiresAt: base.Add(time.Hour), TokenID: "op", Role: wire.RoleOperator, Actor: "desc op"},
				{IDHash: "s-op-2", CSRF: "c", CreatedAt: base, ExpiresAt: base.Add(time.Hour), TokenID: "op", Role: wire.RoleOperator, Actor: "desc op"},
				{IDHash: "s-admin", CSRF: "c", CreatedAt: base, ExpiresAt: base.Add(time.Hour), TokenID: wire.AdminTokenID, Role: wire.RoleAdmin, Actor: "admin token"},
			}
			for _, sess := range sessions {
				if err := s.CreateSession(ctx, sess); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.GetSession(ctx, "s-op-1", base)
			if err != nil || got.TokenID != "op" || got.Role != wire.RoleOperator || got.Actor != "desc op" {
				t.Fatalf("GetSession = %+v, %v; want the token, role and actor kept", got, err)
			}
			if _, err := s.RevokeAPIToken(ctx, "op", base.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			for _, h := range []string{"s-op-1", "s-op-2"} {
				_, err := s.GetSession(ctx, h, base.Add(time.Minute))
				requireIs(t, err, fault.ErrUnauthenticated, "session of a revoked token")
			}
			if got, err := s.GetSession(ctx, "s-admin", base.Add(time.Minute)); err != nil || got.Role != wire.RoleAdmin {
				t.Fatalf("another token's session = %+v, %v; want it kept", got, err)
			}
		})

		t.Run("Audit", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			_, _, err := s.QueryAudit(ctx, store.AuditQuery{Limit: 0})
			requireIs(t, err, fault.ErrInvalid, "QueryAudit with limit 0")
			entries := []wire.AuditEntry{
				{Time: base, TokenID: wire.AdminTokenID, Actor: "admin token", Role: wire.RoleAdmin, Method: "POST", Path: "/api/v1/api-tokens",
					Route: "POST /api/v1/api-tokens", Target: "api token t1", Status: 201, Remote: "192.0.2.1", Via: wire.ViaAPI},
				{Time: base.Add(time.Minute), TokenID: "t1", Actor: "ci", Role: wire.RoleOperator, Method: "POST", Path: "/api/v1/migrations/web/pause",
					Route: "POST /api/v1/migrations/{name}/{action}", Status: 200, Remote: "192.0.2.2", Via: wire.ViaAPI},
				{Time: base.Add(2 * time.Minute), Method: "POST", Path: "/api/v1/migrations/web-2/pause",
					Route: "POST /api/v1/migrations/{name}/{action}", Status: 401, Remote: "198.51.100.7", Via: wire.ViaAPI},
				{Time: base.Add(3 * time.Minute), TokenID: "t1", Actor: "ci (ui:0a1b2c3d)", Role: wire.RoleOperator, Method: "DELETE", Path: "/api/v1/dlq/17",
					Route: "DELETE /api/v1/dlq/{seq}", Status: 403, Remote: "192.0.2.2", Via: wire.ViaUI},
				{Time: base.Add(4 * time.Minute), TokenID: "t1", Actor: "ci", Role: wire.RoleOperator, Method: "POST", Path: "/api/v1/migrations/web/resume",
					Route: "POST /api/v1/migrations/{name}/{action}", Status: 200, Remote: "192.0.2.2", Via: wire.ViaAPI},
			}
			for _, e := range entries {
				if err := s.InsertAudit(ctx, e); err != nil {
					t.Fatalf("InsertAudit: %v", err)
				}
			}
			query := func(q store.AuditQuery) []wire.AuditEntry {
				t.Helper()
				var out []wire.AuditEntry
				for {
					page, next, err := s.QueryAudit(ctx, q)
					if err != nil {
						t.Fatalf("QueryAudit(%+v): %v", q, err)
					}
					if len(page) > q.Limit {
						t.Fatalf("page of %d over limit %d", len(page), q.Limit)
					}
					out = append(out, page...)
					if next == "" {
						return out
					}
					q.Cursor = next
				}
			}
			all := query(store.AuditQuery{Limit: 2})
			if len(all) != len(entries) {
				t.Fatalf("QueryAudit listed %d entries, want %d", len(all), len(entries))
			}
			for i, e := range all {
				want := entries[len(entries)-1-i] // newest first
				want.Time = stored(want.Time)
				if e.Seq == 0 || (i > 0 && e.Seq >= all[i-1].Seq) {
					t.Fatalf("entry %d seq %d not decreasing", i, e.Seq)
				}
				want.Seq = e.Seq
				if !reflect.DeepEqual(e, want) {
					t.Fatalf("entry %d:\n got %+v\nwant %+v", i, e, want)
				}
			}
			paths := func(es []wire.AuditEntry) string {
				var p []string
				for _, e := range es {
					p = append(p, e.Method+" "+e.Path)
				}
				return strings.Join(p, ", ")
			}
			for _, c := range []struct {
				q    store.AuditQuery
				want string
			}{
				{store.AuditQuery{Since: base.Add(3 * time.Minute)}, "POST /api/v1/migrations/web/resume, DELETE /api/v1/dlq/17"},
				{store.AuditQuery{Actor: "t1"}, "POST /api/v1/migrations/web/resume, DELETE /api/v1/dlq/17, POST /api/v1/migrations/web/pause"},
				{store.AuditQuery{Actor: "admin token"}, "POST /api/v1/api-tokens"},
				{store.AuditQuery{Actor: wire.AdminTokenID}, "POST /api/v1/api-tokens"},
				{store.AuditQuery{Actor: "nobody"}, ""},
				{store.AuditQuery{Action: "DELETE"}, "DELETE /api/v1/dlq/17"},
				{store.AuditQuery{Action: "delete"}, "DELETE /api/v1/dlq/17"},
				{store.AuditQuery{Action: "/api/v1/migrations/web"}, "POST /api/v1/migrations/web/resume, POST /api/v1/migrations/web-2/pause, POST /api/v1/migrations/web/pause"},
				{store.AuditQuery{Action: "POST /api/v1/migrations/web/"}, "POST /api/v1/migrations/web/resume, POST /api/v1/migrations/web/pause"},
				{store.AuditQuery{Action: "POST /API"}, ""},
				{store.AuditQuery{Action: "POST /api/v1/migrations/web/", Actor: "t1", Since: base.Add(2 * time.Minute)}, "POST /api/v1/migrations/web/resume"},
			} {
				c.q.Limit = 1
				if got := paths(query(c.q)); got != c.want {
					t.Errorf("QueryAudit(%+v) = %s; want %s", c.q, got, c.want)
				}
			}
			// Paging is stable while entries are written: a new entry does not shift the pages.
			page, next, err := s.QueryAudit(ctx, store.AuditQuery{Limit: 2})
			if err != nil || len(page) != 2 || next == "" {
				t.Fatalf("first page: %d entries, next %q, %v", len(page), next, err)
			}
			if err := s.InsertAudit(ctx, wire.AuditEntry{Time: base.Add(time.Hour), Method: "POST", Path: "/ui/login", Route: "POST /ui/login", Status: 303, Via: wire.ViaUI}); err != nil {
				t.Fatal(err)
			}
			rest := query(store.AuditQuery{Limit: 2, Cursor: next})
			if got := paths(append(page, rest...)); got != paths(all) {
				t.Fatalf("pages after a write = %s; want %s", got, paths(all))
			}
			for _, bad := range []string{"x", "0", "-3", "ZXZlbnQ"} {
				_, _, err := s.QueryAudit(ctx, store.AuditQuery{Limit: 1, Cursor: bad})
				requireIs(t, err, fault.ErrInvalid, "QueryAudit with cursor "+bad)
			}
		})

		t.Run("AgentNamesAreUnique", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			tk := createToken(t, s, "tok", "secret", 20, base.Add(time.Hour))
			if err := s.Enroll(ctx, "secret", base, agent("a1", "web-1"), "cred"); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"web-1", "WEB-1", "Web-1"} {
				err := s.Enroll(ctx, "secret", base, agent("a-"+name, name), "cred")
				requireIs(t, err, fault.ErrConflict, "Enroll a second "+name)
				if !strings.Contains(err.Error(), `"`+name+`"`) || !strings.Contains(err.Error(), "a1") {
					t.Fatalf("error %q names neither the name nor the agent holding it", err)
				}
				requireNoAgent(t, s, "a-"+name)
			}
			requireUses(t, s, tk.ID, 1)
			// Once revoked, the name is free again (a node reinstalled keeps its host name).
			if err := s.RevokeAgent(ctx, "a1", base); err != nil {
				t.Fatal(err)
			}
			if err := s.Enroll(ctx, "secret", base, agent("a2", "Web-1"), "cred"); err != nil {
				t.Fatalf("Enroll after revoking the name's holder: %v", err)
			}
			requireIs(t, s.Enroll(ctx, "secret", base, agent("a3", "web-1"), "cred"), fault.ErrConflict, "Enroll a third web-1")

			// Racing enrollments of one name: exactly one wins, the others consume nothing.
			const n = 8
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					errs[i] = s.Enroll(ctx, "secret", base, agent(fmt.Sprintf("r%d", i), "race"), "cred")
				})
			}
			close(start)
			wg.Wait()
			won := 0
			for i, err := range errs {
				switch {
				case err == nil:
					won++
				case fault.Code(err) == "conflict":
				default:
					t.Fatalf("racing Enroll #%d: %v", i, err)
				}
			}
			if won != 1 {
				t.Fatalf("%d of %d racing enrollments of one name succeeded, want 1", won, n)
			}
			requireUses(t, s, tk.ID, 3)
		})
	})
}
