package api

import (
	"net/http"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// A path segment or query value that is not valid UTF-8, or holds a NUL byte, is refused with
// a 400 naming it (PostgreSQL cannot even compare such a string: it was a 500), and every
// write that carries one is still in the audit log (its row could not be stored before).
func TestBytesNoStoreKeepsAre400AndAudited(t *testing.T) {
	t.Parallel()
	onBothEngines(t, checkBytesNoStoreKeeps)
}

func checkBytesNoStoreKeeps(t *testing.T, b *bundle) {
	writes := 0
	for _, c := range []struct{ method, path, field string }{
		{"GET", "/api/v1/agents/%FF", "id"},
		{"GET", "/api/v1/agents/a%00b", "id"},
		{"GET", "/api/v1/events?agent=%FF", "agent"},
		{"GET", "/api/v1/events?migration=%00", "migration"},
		{"GET", "/api/v1/audit?actor=%C3", "actor"},
		{"GET", "/api/v1/audit?action=%2Fapi%00", "action"},
		{"POST", "/api/v1/agents/%FF/revoke", "id"},
		{"DELETE", "/api/v1/tokens/%FE%FF", "id"},
		{"POST", "/api/v1/api-tokens/x%00/revoke", "id"},
	} {
		code, eb := b.call(t, c.method, c.path, b.admin, "", nil)
		if code != http.StatusBadRequest || eb.Error.Code != "invalid" || !strings.HasPrefix(eb.Error.Message, c.field+": ") {
			t.Errorf("%s %s = %d %+v, want 400 invalid naming %s", c.method, c.path, code, eb, c.field)
		}
		if c.method != "GET" {
			writes++
		}
	}
	// Refused for its token too, the call is recorded.
	if code, _ := b.call(t, "POST", "/api/v1/agents/%FF/revoke", "", "", nil); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", code)
	}
	writes++
	es := b.audit(t, store.AuditQuery{Limit: 100})
	if len(es) != writes {
		t.Fatalf("%d audit rows, want %d (one per write): %+v", len(es), writes, es)
	}
	for _, e := range es {
		if e.Method == "" || !strings.HasPrefix(e.Path, "/api/v1/") || e.Status < 400 {
			t.Errorf("audit row %+v", e)
		}
	}
	if es[0].Status != http.StatusUnauthorized || es[0].TokenID != "" || es[1].TokenID != wire.AdminTokenID {
		t.Errorf("audit rows %+v", es[:2])
	}
}
