package sweep

import (
	"errors"
	"testing"

	"go.yaml.in/yaml/v3"
	"godwit.dev/godwit/internal/fault"
)

// FuzzParse checks that Parse never panics, that every refusal is an invalid (or too large)
// spec, and that a spec which parses and validates comes back with the same Hash when its
// fields are written out again as a new document: nothing is lost or changed on the way in.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		sweepYAML("s"),
		sweepYAML("s", `schedule: "*/15 * * * *"`, "timezone: Europe/Berlin", "misfire: run_once", "maxSeconds: 60", "concurrency: 2"),
		sweepYAML("s", "action: remediate", "remediate: {migration: fix}"),
		sweepYAML("s", `schedule: "@hourly"`, "suspended: true", "resumePolicy: misfire"),
		sweepYAML("s", "suspended: false", "resumePolicy: skip"),
		"apiVersion: godwit.dev/v1\nkind: Sweep\nmetadata: {name: s, description: d}\nspec:\n  selector:\n    matchExpressions:\n" +
			"      - {key: site, operator: In, values: [b, a]}\n      - {key: legacy, operator: DoesNotExist}\n  check: {command: x, timeout: 30s}\n",
		"apiVersion: godwit.dev/v1\nkind: Migration\n", "", "a: [", "kind: Sweep\n---\nkind: Sweep\n",
		`{"apiVersion": "godwit.dev/v1", "kind": "Sweep", "metadata": {"name": "s"}, "spec": {"check": {"command": "x"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sp, err := Parse(data)
		if err != nil {
			if !errors.Is(err, fault.ErrInvalid) && !errors.Is(err, fault.ErrTooLarge) {
				t.Fatalf("Parse error %v is neither invalid nor too large", err)
			}
			return
		}
		if err := sp.Validate(); err != nil {
			if !errors.Is(err, fault.ErrInvalid) {
				t.Fatalf("Validate error %v is not invalid", err)
			}
			return
		}
		again, err := yaml.Marshal(document(sp))
		if err != nil {
			t.Fatalf("writing the spec out: %v", err)
		}
		sp2, err := Parse(again)
		if err == nil {
			err = sp2.Validate()
		}
		if err != nil {
			t.Fatalf("the spec written out does not parse and validate: %v\n%s", err, again)
		}
		if sp2.Hash() != sp.Hash() {
			t.Fatalf("hash changed when written out again\ninput:\n%s\nwritten out:\n%s", data, again)
		}
		if (sp.Suspended == nil) != (sp2.Suspended == nil) || (sp.Suspended != nil && *sp.Suspended != *sp2.Suspended) {
			t.Fatalf("spec.suspended changed when written out again\ninput:\n%s\nwritten out:\n%s", data, again)
		}
	})
}

// document writes every field of a spec out as a document, defaults included.
func document(s *Spec) map[string]any {
	exprs := []map[string]any{}
	for _, r := range s.Selector.MatchExpressions {
		e := map[string]any{"key": r.Key, "operator": string(r.Operator)}
		if r.Values != nil {
			e["values"] = r.Values
		}
		exprs = append(exprs, e)
	}
	check := map[string]any{"command": s.Check.Command}
	if s.Check.Timeout != 0 {
		check["timeout"] = s.Check.Timeout.String()
	}
	spec := map[string]any{
		"schedule": s.Schedule, "timezone": s.Timezone, "misfire": s.Misfire, "resumePolicy": s.ResumePolicy, "overlap": s.Overlap,
		"maxSeconds": s.MaxSeconds, "concurrency": s.Concurrency, "check": check, "action": s.Action,
		"selector": map[string]any{"matchLabels": s.Selector.MatchLabels, "matchExpressions": exprs},
	}
	if s.Suspended != nil {
		spec["suspended"] = *s.Suspended
	}
	if s.Remediate.Migration != "" {
		spec["remediate"] = map[string]any{"migration": s.Remediate.Migration}
	}
	return map[string]any{
		"apiVersion": s.APIVersion, "kind": s.Kind,
		"metadata": map[string]any{"name": s.Name, "description": s.Description},
		"spec":     spec,
	}
}
