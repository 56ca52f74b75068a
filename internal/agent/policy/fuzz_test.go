package policy

import (
	"errors"
	"testing"

	"godwit.dev/godwit/internal/fault"
)

// FuzzParse checks that a policy file never panics the parser or the validation, that every
// refusal is an invalid or too large document, and that a valid policy checks commands
// without panicking.
func FuzzParse(f *testing.F) {
	f.Add([]byte(allowList))
	f.Add([]byte("apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  commands: ~\n  runAs: {group: x}\n"))
	f.Add([]byte("apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  commands: {run: [{regexp: 'a(b'}], check: null}\n"))
	f.Add([]byte("apiVersion: godwit.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec:\n  signatures: {trustedKeys: [{name: k, publicKey: x}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err == nil {
			err = p.Validate()
		}
		if err != nil {
			if !errors.Is(err, fault.ErrInvalid) && !errors.Is(err, fault.ErrTooLarge) {
				t.Fatalf("refusal of another kind: %v", err)
			}
			return
		}
		for _, k := range Kinds {
			_ = p.Check(Command{Kind: k, Script: "true"})
		}
	})
}
