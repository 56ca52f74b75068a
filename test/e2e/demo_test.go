package e2e

import (
	"strings"
	"testing"
	"time"
)

// The README's "run it" command plays out end to end and exits 0.
func TestDemo(t *testing.T) {
	t.Parallel()
	p := start(t, "demo", nil, "demo", "--agents", "2", "--dir", t.TempDir())
	if code := p.wait(120 * time.Second); code != 0 {
		t.Fatalf("demo exit code %d:\n%s", code, p.output())
	}
	out := p.output()
	for _, want := range []string{"demo-agent-1", "demo-agent-2", "all 2 agents online"} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
}
