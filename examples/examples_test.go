package examples

import (
	"os"
	"path/filepath"
	"testing"

	"godwit.dev/godwit/internal/migration/spec"
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
		m, err := spec.Parse(raw)
		if err == nil {
			err = m.Validate()
		}
		if err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
