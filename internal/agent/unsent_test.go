package agent

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/agent/outbox"
	"godwit.dev/godwit/internal/syncbuf"
	"godwit.dev/godwit/internal/wire"
)

// An event of the agent's own that waited in memory for a failing outbox and is then refused
// for good (an info event past the hard limit) is dropped with an error in the log, as record
// does, never silently.
func TestRefusedUnsentEventIsLogged(t *testing.T) {
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Limits{HardMaxBytes: 2 * wire.MaxEventBytes}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	ctx := context.Background()
	for range 3 {
		big := wire.NewEvent(wire.AgentSource("agent-1"), wire.EventAgentOutboxFull, wire.SeverityWarning,
			wire.EventData{AgentID: "agent-1", Message: strings.Repeat("x", 60<<10)})
		if err := ob.Append(ctx, big); err != nil {
			t.Fatal(err)
		}
	}
	e := wire.NewEvent(wire.AgentSource("agent-1"), wire.EventAgentStarted, wire.SeverityInfo, wire.EventData{AgentID: "agent-1"})
	a := &Agent{log: log, outbox: ob, unsent: []wire.Event{e}}
	a.retryUnsent(ctx)
	if len(a.unsent) != 0 {
		t.Fatalf("unsent %d, want the refused event given up", len(a.unsent))
	}
	if !strings.Contains(logs.String(), e.ID) {
		t.Fatalf("the refused event %s left no trace in the log:\n%s", e.ID, logs.String())
	}
}
