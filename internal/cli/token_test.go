package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/wire"
)

// token create makes an API token with --role and an enrollment token otherwise; both are
// listed, a role token works at its role, token revoke stops it (and deletes an enrollment
// token); godwit audit shows who did what.
func TestTokenAndAuditCommands(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	hub, admin := testHub(t)
	run := func(args ...string) (string, string, int) {
		return runCLI(ctx, append(args, "--hub-url", hub, "--token", admin)...)
	}
	out, errs, code := run("token", "create", "--role", "viewer", "--ttl", "48h", "--description", "grafana")
	viewer := strings.TrimSpace(out)
	if code != ExitOK || !strings.HasPrefix(viewer, "gwt_") || !strings.Contains(errs, "role viewer") {
		t.Fatalf("create api token: %d %q %q", code, out, errs)
	}
	out, errs, code = run("token", "create", "--uses", "3")
	if code != ExitOK || !strings.HasPrefix(strings.TrimSpace(out), "gwe_") || !strings.Contains(errs, "enrollment token") {
		t.Fatalf("create enrollment token: %d %q %q", code, out, errs)
	}
	if _, errs, code := run("token", "create"); code != ExitOK || !strings.Contains(errs, "1 use(s)") {
		t.Fatalf("create with neither flag: %d %q, want an enrollment token of one use", code, errs)
	}
	if _, errs, code := run("token", "create", "--role", "viewer", "--uses", "2"); code != ExitUsage || !strings.Contains(errs, "give one of them") {
		t.Fatalf("--role with --uses: %d %q", code, errs)
	}
	if _, errs, code := run("token", "create", "--role", "root"); code != ExitUsage || !strings.Contains(errs, "role") {
		t.Fatalf("--role root: %d %q", code, errs)
	}

	out, _, code = run("token", "list", "-o", "json")
	var rows []tokenRow
	if code != ExitOK || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 3 {
		t.Fatalf("token list -o json: %d %s", code, out)
	}
	var apiID, enrollID string
	for _, r := range rows {
		switch r.Kind {
		case kindAPI:
			apiID = r.ID
			if r.Role != wire.RoleViewer || r.Description != "grafana" || r.CreatedBy != wire.AdminTokenID {
				t.Fatalf("api row %+v", r)
			}
		case kindEnrollment:
			if r.MaxUses == 3 {
				enrollID = r.ID
			}
		}
	}
	out, _, code = run("token", "list")
	if code != ExitOK || !strings.Contains(out, "api") || !strings.Contains(out, "viewer") || !strings.Contains(out, "0/3 uses") ||
		strings.Contains(out, viewer[4:]) {
		t.Fatalf("token list:\n%s", out)
	}
	if out, _, code := run("token", "list", "--kind", "api", "-o", "json"); code != ExitOK || strings.Count(out, `"kind"`) != 1 {
		t.Fatalf("token list --kind api: %d %s", code, out)
	}

	// The viewer reads, and is refused a change with the hub's reason.
	if _, errs, code := runCLI(ctx, "get", "agents", "--hub-url", hub, "--token", viewer); code != ExitOK {
		t.Fatalf("viewer get agents: %d %s", code, errs)
	}
	if _, errs, code := runCLI(ctx, "token", "create", "--uses", "1", "--hub-url", hub, "--token", viewer); code != ExitError ||
		!strings.Contains(errs, "role viewer may not") {
		t.Fatalf("viewer creates a token: %d %s", code, errs)
	}

	if out, _, code := run("token", "revoke", apiID); code != ExitOK || !strings.Contains(out, "api token "+apiID+" (viewer) revoked") {
		t.Fatalf("revoke api token: %d %s", code, out)
	}
	if _, errs, code := runCLI(ctx, "get", "agents", "--hub-url", hub, "--token", viewer); code != ExitError || !strings.Contains(errs, "revoked") {
		t.Fatalf("revoked viewer: %d %s", code, errs)
	}
	if out, _, code := run("token", "revoke", enrollID); code != ExitOK || !strings.Contains(out, "enrollment token "+enrollID+" deleted") {
		t.Fatalf("revoke enrollment token: %d %s", code, out)
	}
	if _, errs, code := run("token", "revoke", "nope"); code != ExitError || !strings.Contains(errs, "no api or enrollment token nope") {
		t.Fatalf("revoke unknown: %d %s", code, errs)
	}

	out, errs, code = run("audit", "--action", "POST /api/v1/api-tokens", "-o", "json")
	var entries []wire.AuditEntry
	if code != ExitOK || json.Unmarshal([]byte(out), &entries) != nil {
		t.Fatalf("audit: %d %s %s", code, out, errs)
	}
	// Newest first: revoke of nope (404), revoke of the enrollment token tried as an API token
	// first (404), the viewer's revocation (200), its creation (201). --role root never left the
	// command line.
	want := []int{404, 404, 200, 201}
	if len(entries) != len(want) || entries[3].TokenID != wire.AdminTokenID || entries[3].Target == "" {
		t.Fatalf("audit of api-token calls: %+v", entries)
	}
	for i, e := range entries {
		if e.Status != want[i] {
			t.Fatalf("audit entry %d: %+v, want status %d", i, e, want[i])
		}
	}
	out, errs, code = run("audit", "--limit", "2")
	if code != ExitOK || strings.Count(out, "\n") != 3 || !strings.Contains(errs, "(more: --cursor ") || !strings.Contains(out, "STATUS") {
		t.Fatalf("audit --limit 2: %d\n%s\n%s", code, out, errs)
	}
	if _, errs, code := runCLI(ctx, "audit", "--hub-url", hub, "--token", viewer); code != ExitError || !strings.Contains(errs, "revoked") {
		t.Fatalf("audit as a revoked viewer: %d %s", code, errs)
	}
	if _, errs, code := run("audit", "--since", "yesterday"); code != ExitError || !strings.Contains(errs, "since") {
		t.Fatalf("audit --since yesterday: %d %s", code, errs)
	}
}
