package ui_test

// Page render times at fleet scale: 10,000 agents and 1,000,000 events (GODWIT_BENCH_AGENTS and
// GODWIT_BENCH_EVENTS change that), on SQLite and, when reachable, PostgreSQL. Each sub-benchmark
// is one page served by the UI handler in process (server time: store queries, template, no
// network), with a logged-in session. The target is 200 ms per page; nothing asserts on it.
// `godwit bench ui` measures the same fixture and pages (and the API's listings) with p95s.
//
//	go test ./internal/ui -run '^$' -bench Pages -benchtime 20x
//
// Building the fixture takes a while (a million events written through the store); it is built
// once per engine and reused by every page.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/bench"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/migration/controller"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/pgtest"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/sweep"
	"godwit.dev/godwit/internal/ui"
	"godwit.dev/godwit/internal/wire"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchPages(b *testing.B, st store.Store, reuse bool) {
	agents, events := envInt("GODWIT_BENCH_AGENTS", 10000), envInt("GODWIT_BENCH_EVENTS", 1000000)
	ctx := context.Background()
	f := bench.UIFixture{Migration: "fleet-openssl-3"}
	if reuse {
		page, _, err := st.PageAgents(ctx, store.AgentQuery{Search: "node-00000", Limit: 1})
		if err != nil || len(page) != 1 {
			b.Fatalf("reused fixture has no node-00000: %v", err)
		}
		f.AgentID = page[0].ID
		b.Logf("reusing the %s fixture", st.Engine())
	} else {
		var err error
		if f, err = bench.SeedUI(ctx, st, agents, events, b.Logf); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now().UTC()
	sessionID := "bench-session"
	_ = st.DeleteSession(ctx, credential.Hash(sessionID))
	if err := st.CreateSession(ctx, store.Session{IDHash: credential.Hash(sessionID), CSRF: "csrf", CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour),
		TokenID: wire.AdminTokenID, Role: wire.RoleAdmin, Actor: "bench"}); err != nil {
		b.Fatal(err)
	}
	dlq := &deadLetterQueue{}
	for i := range 200 {
		dlq.items = append(dlq.items, wire.DeadLetter{Seq: uint64(i + 1), Subject: "godwit.events.x", Reason: "decode", Error: "invalid character", Payload: "{", Time: now})
	}
	s := ui.New(ui.Config{Store: st, Migrations: controller.New(controller.Config{Store: st, HubID: "bench"}), Pipeline: dlq.pipeline(),
		Sweeps: sweep.New(sweep.Config{Store: st, HubID: "bench"})})
	defer s.Close()

	pages := append(bench.UIPages(f, agents), bench.UIPage{Name: "dead letters", Path: "/ui/dead-letters"})
	for _, p := range pages {
		if strings.HasPrefix(p.Path, "/api/") {
			continue // godwit bench ui measures the API
		}
		b.Run(strings.ReplaceAll(p.Name, " ", "_"), func(b *testing.B) {
			b.ReportAllocs()
			size := 0
			start := time.Now()
			for b.Loop() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest("GET", p.Path, nil)
				req.AddCookie(&http.Cookie{Name: "godwit_session", Value: sessionID})
				s.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("GET %s: %d\n%s", p.Path, rec.Code, rec.Body.String())
				}
				size = rec.Body.Len()
			}
			per := time.Since(start) / time.Duration(b.N)
			b.ReportMetric(float64(per.Microseconds())/1000, "ms/page")
			b.ReportMetric(float64(size)/1024, "KiB/page")
		})
	}
	fmt.Printf("%s: %d agents, %d events\n", st.Engine(), agents, events)
}

// BenchmarkPagesSQLite builds its fixture in a temp dir, or with GODWIT_BENCH_SQLITE=path in
// that file, which later runs reuse as it is (delete it to build a new one).
func BenchmarkPagesSQLite(b *testing.B) {
	path := os.Getenv("GODWIT_BENCH_SQLITE")
	if path == "" {
		path = filepath.Join(b.TempDir(), "hub.db")
	}
	_, err := os.Stat(path)
	reuse := err == nil
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchPages(b, st, reuse)
}

func BenchmarkPagesPostgres(b *testing.B) {
	st, err := postgres.Open(context.Background(), pgtest.DSN(b))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchPages(b, st, false)
}
