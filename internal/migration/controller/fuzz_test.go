package controller

import (
	"encoding/json"
	"fmt"
	"testing"

	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/wire"
)

// FuzzDocumentSizeBoundsWhatIsSent checks that the size Apply judges a spec by is never smaller
// than a desired document the controller can send for it: a spec that passes the check always
// reaches its agents, whatever its commands hold (quotes, '&', control characters, non-ASCII).
func FuzzDocumentSizeBoundsWhatIsSent(f *testing.F) {
	f.Add([]byte(fmt.Sprintf(specTmpl, "m1", "    batchSize: 1")))
	f.Add([]byte(bigSpec("big", 3, 100, "")))
	f.Add([]byte("apiVersion: godwit.dev/v1\nkind: Migration\nmetadata: {name: x}\nspec:\n  toVersion: \"\\u2028<&>\"\n  fromVersion: \"\\\"\"\n  steps:\n    - {name: a, run: \"\\t\\u0001&<>\\\"\\\\\", rollback: é, verify: \"\\u00ff\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sp, err := spec.Parse(data)
		if err != nil || sp.Validate() != nil {
			return
		}
		limit := documentSize(sp.Metadata.Name, sp)
		for _, action := range []string{wire.ActionApply, wire.ActionRollback} {
			doc, err := json.Marshal(wire.DesiredState{AgentID: "0196a000-0000-7000-8000-000000000001", Epoch: 1 << 40,
				Assignments: []wire.DesiredAssignment{{Migration: sp.Metadata.Name, Attempt: 12, Generation: 345, Action: action,
					FromVersion: sp.Spec.FromVersion, ToVersion: sp.Spec.ToVersion, Steps: stepSpecs(sp), Signature: sp.Spec.Signature}}})
			if err != nil {
				t.Fatal(err)
			}
			if len(doc) > limit {
				t.Fatalf("a %s document of %d bytes, over the %d bytes the spec was judged by", action, len(doc), limit)
			}
		}
	})
}
