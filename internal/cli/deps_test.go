package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// The client commands speak only the hub's API (types in package wire): package cli links
// neither the hub nor what runs inside it. A hub reaches the commands that start one through
// the Hub interface, from package hubcmd.
func TestClientLinksNoHubInternals(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the package's dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || deps[len(deps)-1] != "godwit.dev/godwit/internal/cli" {
		t.Fatalf("go list -deps gave an unexpected answer:\n%s", out)
	}
	hubSide := []string{"hub", "hubcmd", "store", "migration/controller", "api", "ui", "ingest", "sweep", "liveness", "bench"}
	for _, dep := range deps {
		for _, p := range hubSide {
			if pkg := "godwit.dev/godwit/internal/" + p; dep == pkg || strings.HasPrefix(dep, pkg+"/") {
				t.Errorf("package cli depends on %s", dep)
			}
		}
	}
}
