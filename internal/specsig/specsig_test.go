package specsig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/wire"
)

func steps() []wire.StepSpec {
	return []wire.StepSpec{
		{Name: "install", Detect: "test ! -f /etc/app/v2", Run: "app-install v2", Rollback: "app-install v1", TimeoutMS: 60000},
		{Name: "restart", Run: "systemctl restart app", Verify: "systemctl is-active app", TimeoutMS: 30000},
	}
}

func TestSignVerify(t *testing.T) {
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _, _ := GenerateKey()
	trusted := []TrustedKey{{Name: "other", Key: otherPub}, {Name: "ops", Key: pub}}
	env := Sign(priv, "app-v2", steps()).String()
	if k, err := Verify(trusted, env, "app-v2", steps()); err != nil || k.Name != "ops" {
		t.Fatalf("Verify = %v, %v; want the ops key", k.Name, err)
	}
	alter := []struct {
		name string
		mod  func(s []wire.StepSpec) []wire.StepSpec
	}{
		{"run", func(s []wire.StepSpec) []wire.StepSpec { s[0].Run += "; rm -rf /"; return s }},
		{"rollback", func(s []wire.StepSpec) []wire.StepSpec { s[0].Rollback = "true"; return s }},
		{"detect dropped", func(s []wire.StepSpec) []wire.StepSpec { s[0].Detect = ""; return s }},
		{"verify", func(s []wire.StepSpec) []wire.StepSpec { s[1].Verify = "true"; return s }},
		{"timeout", func(s []wire.StepSpec) []wire.StepSpec { s[1].TimeoutMS++; return s }},
		{"name", func(s []wire.StepSpec) []wire.StepSpec { s[1].Name = "x"; return s }},
		{"order", func(s []wire.StepSpec) []wire.StepSpec { return []wire.StepSpec{s[1], s[0]} }},
		{"dropped step", func(s []wire.StepSpec) []wire.StepSpec { return s[:1] }},
	}
	for _, a := range alter {
		if _, err := Verify(trusted, env, "app-v2", a.mod(steps())); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s altered: err = %v, want ErrMismatch", a.name, err)
		}
	}
	if _, err := Verify(trusted, env, "app-v3", steps()); !errors.Is(err, ErrMismatch) {
		t.Errorf("another migration's name: err = %v, want ErrMismatch", err)
	}
	if _, err := Verify(trusted, "", "app-v2", steps()); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned: err = %v, want ErrUnsigned", err)
	}
	if _, err := Verify(trusted[:1], env, "app-v2", steps()); !errors.Is(err, ErrUntrusted) {
		t.Errorf("untrusted key: err = %v, want ErrUntrusted", err)
	}
	if _, err := Verify(trusted, "ed25519:zz", "app-v2", steps()); err == nil || !strings.Contains(err.Error(), "cannot be read") {
		t.Errorf("garbage envelope: err = %v", err)
	}
}

func TestKeyFiles(t *testing.T) {
	pub, priv, _ := GenerateKey()
	privPEM, err := MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := MarshalPublicKey(pub)
	dir := t.TempDir()
	path := filepath.Join(dir, "k.key")
	if err := os.WriteFile(path, privPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrivateKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a 0644 private key: err = %v", err)
	}
	_ = os.Chmod(path, 0o600)
	got, err := ReadPrivateKey(path)
	if err != nil || !got.Equal(priv) {
		t.Fatalf("ReadPrivateKey = %v", err)
	}
	gotPub, err := ParsePublicKey(pubPEM)
	if err != nil || !gotPub.Equal(pub) {
		t.Fatalf("ParsePublicKey = %v", err)
	}
	if _, err := ParsePublicKey(privPEM); err == nil {
		t.Fatal("a private key read as a public key")
	}
	if _, err := ParsePublicKey(append(pubPEM, pubPEM...)); err == nil {
		t.Fatal("two PEM blocks accepted")
	}
}

// FuzzParseEnvelope checks that the envelope parser never panics, accepts only what it can
// render back byte for byte, and bounds what it reads.
func FuzzParseEnvelope(f *testing.F) {
	_, priv, _ := GenerateKey()
	f.Add(Sign(priv, "m", steps()).String())
	for _, s := range []string{"", "ed25519:", "ed25519:0123456789abcdef:", "rsa:0123456789abcdef:AAAA", "ed25519:0123456789ABCDEF:AAAA",
		"ed25519:0123456789abcdef:" + strings.Repeat("A", 86) + "==", "ed25519:0123456789abcdef:" + strings.Repeat("A", 88)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		env, err := ParseEnvelope(s)
		if err != nil {
			if env.KeyID != "" || env.Signature != nil {
				t.Fatalf("an error with a partial envelope: %+v", env)
			}
			return
		}
		if len(s) > MaxEnvelopeBytes {
			t.Fatalf("accepted %d bytes", len(s))
		}
		if env.String() != s {
			t.Fatalf("accepted %q, renders %q", s, env.String())
		}
	})
}
