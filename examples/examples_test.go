package examples

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/sweep"
)

// Every sample spec parses and validates: the examples are documentation that cannot rot.
func TestExamplesAreValid(t *testing.T) {
	files, _ := filepath.Glob("*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), "\nkind: Sweep\n") {
			sw, err := sweep.Parse(raw)
			if err == nil {
				err = sw.Validate()
			}
			if err != nil {
				t.Errorf("%s: %v", f, err)
			}
			continue
		}
		m, err := spec.Parse(raw)
		if err == nil {
			err = m.Validate()
		}
		if err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
