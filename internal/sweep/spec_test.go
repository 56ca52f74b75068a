package sweep

import (
	"errors"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/fault"
)

// The hash is stored with every sweep: if it moves, every stored sweep looks changed on its next
// apply. Update the value below only together with a note in the release notes.
func TestHashGolden(t *testing.T) {
	const src = `apiVersion: godwit.dev/v1
kind: Sweep
metadata: {name: s, description: d}
spec:
  schedule: "*/15 * * * *"
  timezone: Europe/Berlin
  misfire: run_once
  maxSeconds: 60
  concurrency: 3
  selector:
    matchLabels: {role: web, env: prod}
    matchExpressions:
      - {key: site, operator: In, values: [b, a, b]}
      - {key: legacy, operator: DoesNotExist}
  check: {command: "test -f /x", timeout: 30s}
  action: remediate
  remediate: {migration: fix}
`
	const want = "d23f4a2c0b0d10af0e394acbb853fa173a12446377e6b91a674170572995c249"
	sp, err := Parse([]byte(src))
	if err == nil {
		err = sp.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := sp.Hash(); got != want {
		t.Errorf("Hash = %s, want %s", got, want)
	}
}

// spec.suspended is a state, not a setting of the runs: it leaves the hash alone, while
// resumePolicy (only when not the default) is part of it.
func TestSuspendedAndResumePolicy(t *testing.T) {
	parse := func(extra ...string) *Spec {
		t.Helper()
		sp, err := Parse([]byte(sweepYAML("s", append([]string{`schedule: "*/15 * * * *"`}, extra...)...)))
		if err == nil {
			err = sp.Validate()
		}
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	plain := parse()
	if plain.Suspended != nil || plain.ResumePolicy != ResumeSkip {
		t.Fatalf("defaults: suspended %v, resumePolicy %q", plain.Suspended, plain.ResumePolicy)
	}
	on, off := parse("suspended: true"), parse("suspended: false")
	if on.Suspended == nil || !*on.Suspended || off.Suspended == nil || *off.Suspended {
		t.Fatalf("suspended: true = %v, false = %v", on.Suspended, off.Suspended)
	}
	if on.Hash() != plain.Hash() || off.Hash() != plain.Hash() || parse("resumePolicy: skip").Hash() != plain.Hash() {
		t.Fatal("spec.suspended or a default resumePolicy changed the hash")
	}
	if parse("resumePolicy: misfire").Hash() == plain.Hash() {
		t.Fatal("resumePolicy: misfire left the hash alone")
	}
	for extra, field := range map[string]string{
		"resumePolicy: catch_up": "spec.resumePolicy",
		"suspended: yes":         "spec.suspended",
		`suspended: "true"`:      "spec.suspended",
	} {
		sp, err := Parse([]byte(sweepYAML("s", extra)))
		if err == nil {
			err = sp.Validate()
		}
		if !errors.Is(err, fault.ErrInvalid) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v, want an error naming %s", extra, err, field)
		}
	}
}
