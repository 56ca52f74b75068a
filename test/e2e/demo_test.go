package e2e

import (
	"strings"
	"testing"
	"time"
)

// The README's "run it" command plays out end to end and exits 0: two agents migrate, the one
// with a full disk fails and is rolled back, and the failure reaches the hub as an error event.
func TestDemo(t *testing.T) {
	t.Parallel()
	p := start(t, "demo", nil, "demo", "--dir", t.TempDir())
	if code := p.wait(120 * time.Second); code != 0 {
		t.Fatalf("demo exit code %d:\n%s", code, p.output())
	}
	out := p.output()
	for _, want := range []string{"demo-agent-1", "demo-agent-2", "demo-agent-3", "partially_succeeded", "rolled_back",
		"migration.execution.partial", "played out as expected"} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
}
