package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const unsignedSpec = `# a comment that stays
apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: m1}
spec:
  toVersion: "2"
  steps:
    - {name: a, run: touch a, rollback: rm -f a}
`

// TestSignRoundTrip signs with a fresh key pair, checks what verify says about the signed spec,
// an altered copy and a copy signed again, and that keygen never overwrites a key.
func TestSignRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	key := filepath.Join(dir, "ops")
	if _, errs, code := runCLI(ctx, "sign", "keygen", "--out", key); code != 0 {
		t.Fatalf("keygen: %d %s", code, errs)
	}
	if st, err := os.Stat(key + ".key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", st, err)
	}
	if _, _, code := runCLI(ctx, "sign", "keygen", "--out", key); code == 0 {
		t.Fatal("keygen overwrote a key pair")
	}
	spec := filepath.Join(dir, "m1.yaml")
	_ = os.WriteFile(spec, []byte(unsignedSpec), 0o644)
	if _, errs, code := runCLI(ctx, "sign", "-f", spec, "--key", key+".key", "-w"); code != 0 {
		t.Fatalf("sign: %d %s", code, errs)
	}
	signed, _ := os.ReadFile(spec)
	if !strings.HasPrefix(string(signed), "# a comment that stays\n") || strings.Count(string(signed), "signature: ed25519:") != 1 {
		t.Fatalf("signed spec:\n%s", signed)
	}
	verify := func(file string) (string, int) {
		out, errs, code := runCLI(ctx, "sign", "verify", "-f", file, "--public-key", key+".pub")
		return out + errs, code
	}
	if out, code := verify(spec); code != 0 || !strings.Contains(out, "signature OK") {
		t.Fatalf("verify signed: %d %s", code, out)
	}
	altered := filepath.Join(dir, "altered.yaml")
	_ = os.WriteFile(altered, []byte(strings.Replace(string(signed), "rm -f a", "rm -rf /", 1)), 0o644)
	if out, code := verify(altered); code == 0 || !strings.Contains(out, "altered after signing") {
		t.Fatalf("verify altered: %d %s", code, out)
	}
	// Signing the altered spec again replaces the signature.
	if _, errs, code := runCLI(ctx, "sign", "-f", altered, "--key", key+".key", "-w"); code != 0 {
		t.Fatalf("re-sign: %d %s", code, errs)
	}
	resigned, _ := os.ReadFile(altered)
	if out, code := verify(altered); code != 0 || strings.Count(string(resigned), "signature:") != 1 {
		t.Fatalf("verify re-signed: %d %s\n%s", code, out, resigned)
	}
	_ = os.Chmod(key+".key", 0o644)
	if _, errs, code := runCLI(ctx, "sign", "-f", spec, "--key", key+".key"); code == 0 || !strings.Contains(errs, "chmod 600") {
		t.Fatalf("a readable private key: %d %s", code, errs)
	}
}
