package spec

import (
	"errors"
	"testing"

	"godwit.dev/godwit/internal/fault"
)

// FuzzParse checks that Parse never panics, that every refusal is an invalid (or too large) spec,
// and that a spec which parses and validates keeps its Hash through its canonical form, which is
// a fixed point.
func FuzzParse(f *testing.F) {
	for _, s := range []string{full, minimal, base, header, "", "a: [", "- 1\n", "kind: Migration\n",
		doc("  steps:\n    - &s {name: a, run: x}\n    - *s\n"),
		doc("  steps: [{name: a, run: \"echo \\t\\u00e9\\0\"}]\n"),
		doc("  steps: [{name: a, run: \"x\\n  y \"}]\n  selector: {matchLabels: {\"a:b\": \"- c\"}}\n"),
		doc("  steps: [{name: a, run: x}]\n  rollout: {batchSize: 10%, maxFailures: 3}\n  timeouts: {migration: 3d}\n"),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			if !errors.Is(err, fault.ErrInvalid) && !errors.Is(err, fault.ErrTooLarge) {
				t.Fatalf("Parse error %v is neither invalid nor too large", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			if !errors.Is(err, fault.ErrInvalid) {
				t.Fatalf("Validate error %v is not invalid", err)
			}
			return
		}
		c, err := m.Canonical()
		if err != nil {
			t.Fatalf("Canonical: %v", err)
		}
		m2, err := Parse(c)
		if err != nil {
			t.Fatalf("canonical form does not parse: %v\n%s", err, c)
		}
		if err := m2.Validate(); err != nil {
			t.Fatalf("canonical form does not validate: %v\n%s", err, c)
		}
		if m2.Hash() != m.Hash() {
			t.Fatalf("hash changed through the canonical form\ninput:\n%s\ncanonical:\n%s", data, c)
		}
		c2, err := m2.Canonical()
		if err != nil || string(c2) != string(c) {
			t.Fatalf("canonical form is not a fixed point (%v):\n%s\n---\n%s", err, c, c2)
		}
	})
}
