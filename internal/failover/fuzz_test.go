package failover

import (
	"encoding/json"
	"errors"
	"testing"

	"godwit.dev/godwit/internal/fault"
)

// FuzzParse checks that Parse and Validate never panic, that every refusal is an invalid (or too
// large) spec, and that a valid spec written out again from its canonical form parses, validates
// and hashes the same: nothing is lost or changed on the way in.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		groupYAML(),
		groupYAML("heartbeatInterval: 500ms", "heartbeatTimeout: 1s", "failureThreshold: 2", "failoverTimeout: 5s", "safetyMargin: 2s",
			"recoveryThreshold: 1", "maxLagOnFailover: 1024", "handoverOnStop: false"),
		"apiVersion: godwit.dev/v1\nkind: FailoverGroup\nmetadata: {name: g}\nspec:\n  members:\n    - selector: {matchLabels: {role: db}}\n      noFailover: true\n" +
			"  hooks:\n    healthCheck: {command: h, timeout: 1s}\n    onPromote: {command: p, timeout: 1s}\n    onFence: {command: f, timeout: 1s}\n    onDemote: {command: d, timeout: 1m}\n",
		"apiVersion: godwit.dev/v1\nkind: Sweep\n", "", "a: [", "kind: FailoverGroup\n---\nkind: FailoverGroup\n",
		`{"apiVersion": "godwit.dev/v1", "kind": "FailoverGroup", "metadata": {"name": "g"}, "spec": {"members": [{"agent": "x"}]}}`,
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
		again, err := json.Marshal(Document(sp.Canonical()))
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
	})
}
