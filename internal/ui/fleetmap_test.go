package ui_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"godwit.dev/godwit/internal/wire"
)

// The fleet map stays one readable picture at 10,000 agents: a group per site, one square per
// agent, and the few that are not online named.
func TestBrowserFleetMap10k(t *testing.T) {
	exe := chromium(t)
	r := newRig(t)
	ctx := t.Context()
	const n = 10000
	now := time.Now().UTC()
	// Seeded in one transaction: 10,000 enrollments one by one would take minutes under -race.
	sites := []string{"ams", "fra", "lon", "nyc", "sin"}
	start := time.Now()
	tx, err := r.store.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	offline := 0
	const chunk = 500
	for from := 0; from < n; from += chunk {
		var rows []string
		var args []any
		for i := from; i < min(from+chunk, n); i++ {
			st := wire.StatusOnline
			if i%97 == 0 {
				st = wire.StatusOffline
				offline++
			}
			k := len(args)
			rows = append(rows, fmt.Sprintf("($%d, $%d, $%d, $%d, $%d, $%d, 'cred')", k+1, k+2, k+3, k+4, k+4, k+5))
			args = append(args, fmt.Sprintf("00000000-0000-7000-9000-%012d", i), fmt.Sprintf("node-%05d", i),
				fmt.Sprintf(`{"role":"web","site":%q}`, sites[i%len(sites)]), now.UnixMicro(), st)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO agents (id, name, labels, enrolled_at, last_seen, status, cred_hash) VALUES `+
			strings.Join(rows, ", "), args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded %d agents in %s", n, time.Since(start).Round(time.Millisecond))

	b := newBrowser(t, exe)
	b.login(r.srv.URL, "/ui/fleet")
	b.do("the map", chromedp.WaitVisible(css("#fleet-map svg.fleetmap")))
	total := n + len(r.agent) // the rig's own agents have no site label: their own group
	if got := js[string](b, `document.getElementById("fleet-map").dataset.total`); got != fmt.Sprint(total) {
		t.Errorf("the map counts %s agents, want %d", got, total)
	}
	if by := js[string](b, `document.getElementById("fleet-by").value`); by != "role" && by != "site" {
		t.Errorf("grouped by %q", by)
	}
	b.do("group by site", chromedp.SetValue(id("fleet-by"), "site"), click(css(`form.filters button[type="submit"]`)),
		until(`location.search.includes("by=site")`), chromedp.WaitVisible(css(`section.map-group[data-group="ams"]`)))
	groups := js[[]string](b, `Array.from(document.querySelectorAll("section.map-group")).map(s => s.dataset.group)`)
	if strings.Join(groups, ",") != ",ams,fra,lon,nyc,sin" {
		t.Errorf("groups %v", groups)
	}
	// One square per agent: every path's squares ("M…z") add up to the fleet.
	squares := js[int](b, `Array.from(document.querySelectorAll("svg.fleetmap path.fm")).reduce((s, p) => s + (p.getAttribute("d").match(/z/g) || []).length, 0)`)
	if squares != total {
		t.Errorf("%d squares drawn, want %d", squares, total)
	}
	if got := js[string](b, `document.getElementById("fleet-count-offline").innerText`); got != fmt.Sprint(offline) {
		t.Errorf("offline count %s, want %d", got, offline)
	}
	// Readable: a square is at least 4 px wide at 1400 px, and the page answers in one piece.
	if w := js[float64](b, `document.querySelector("section.map-group[data-group='ams'] svg.fleetmap").getBoundingClientRect().width / 100`); w < 4 {
		t.Errorf("a square is %.1f px wide", w)
	}
	if ex := text(b, `section.map-group[data-group="ams"] .exceptions`); !strings.Contains(ex, "node-00000") || !strings.Contains(ex, "offline") {
		t.Errorf("ams's exceptions: %q", ex)
	}
	b.shotWidths("fleet-map-10000")
}
