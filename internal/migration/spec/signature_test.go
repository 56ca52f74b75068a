package spec

import (
	"strings"
	"testing"

	"godwit.dev/godwit/internal/specsig"
)

const signable = `apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: m1}
spec:
  toVersion: "2"
  steps:
    - {name: a, run: touch a, rollback: rm -f a, timeout: 30s}
`

// spec.signature is read, checked for its form only, kept in the canonical form (and so in the
// hash), and covers the steps as StepSpecs gives them to agents.
func TestSignature(t *testing.T) {
	m, err := Parse([]byte(signable))
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := specsig.GenerateKey()
	sig := specsig.Sign(priv, "m1", m.StepSpecs()).String()
	if got := m.StepSpecs(); len(got) != 1 || got[0].TimeoutMS != 30000 || got[0].Rollback != "rm -f a" {
		t.Fatalf("StepSpecs = %+v", got)
	}

	signed, err := Parse([]byte(signable + "  signature: " + sig + "\n"))
	if err != nil || signed.Validate() != nil || signed.Spec.Signature != sig {
		t.Fatalf("a signed spec: %v, %v, %q", err, signed.Validate(), signed.Spec.Signature)
	}
	if signed.Hash() == m.Hash() {
		t.Fatal("the signature is not in the spec's hash")
	}
	canon, _ := signed.Canonical()
	if !strings.Contains(string(canon), "signature: "+sig) {
		t.Fatalf("canonical form without the signature:\n%s", canon)
	}

	bad, err := Parse([]byte(signable + "  signature: ed25519:0123456789abcdef:AAAA\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "spec.signature (line 8): signature must be 64 bytes") {
		t.Fatalf("a malformed signature: %v", err)
	}
}
