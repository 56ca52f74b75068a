package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/credential"
)

func TestEnsure(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), Dir)
	now := time.Now()
	hosts := []string{"localhost", "127.0.0.1", "hub.example"}
	b, err := Ensure(dir, hosts, now)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Generated || b.CA == nil || !b.CA.IsCA || b.Fingerprint() != credential.Fingerprint(b.CA.Raw) {
		t.Fatalf("bundle %+v", b)
	}
	leaf := b.Cert.Leaf
	if leaf.NotAfter.Sub(now) < ServerLifetime-2*time.Hour || b.CA.NotAfter.Sub(now) < CALifetime-2*time.Hour {
		t.Fatalf("lifetimes: server until %s, CA until %s", leaf.NotAfter, b.CA.NotAfter)
	}
	for _, c := range []*x509.Certificate{leaf, b.CA} {
		if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			t.Fatalf("%s key %T, want ECDSA P-256", c.Subject.CommonName, c.PublicKey)
		}
	}
	for _, h := range hosts {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("certificate does not cover %s: %v", h, err)
		}
	}
	if len(b.Cert.Certificate) != 2 || !bytes.Equal(b.Cert.Certificate[1], b.CA.Raw) {
		t.Fatal("the served chain does not end with the CA")
	}
	for _, f := range []string{CAKeyFile, KeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st, err)
		}
	}

	again, err := Ensure(dir, hosts, now.Add(time.Hour))
	if err != nil || again.Generated || !bytes.Equal(again.Cert.Leaf.Raw, leaf.Raw) || !bytes.Equal(again.CA.Raw, b.CA.Raw) {
		t.Fatalf("second start: generated %v, err %v; want the same certificate", again.Generated, err)
	}
	// A new name: a new server certificate, the same CA.
	wider, err := Ensure(dir, append(hosts, "10.1.2.3"), now.Add(time.Hour))
	if err != nil || !wider.Generated || !bytes.Equal(wider.CA.Raw, b.CA.Raw) || wider.Cert.Leaf.VerifyHostname("10.1.2.3") != nil {
		t.Fatalf("new SAN: generated %v, err %v", wider.Generated, err)
	}
	// Close to expiry: renewed, with the same CA.
	late := now.Add(ServerLifetime - RenewBefore + time.Hour)
	renewed, err := Ensure(dir, hosts, late)
	if err != nil || !renewed.Generated || !bytes.Equal(renewed.CA.Raw, b.CA.Raw) || renewed.Cert.Leaf.NotAfter.Before(late.Add(ServerLifetime-2*time.Hour)) {
		t.Fatalf("renewal: generated %v, err %v", renewed.Generated, err)
	}
	// A damaged CA is an error, never replaced: agents pin it.
	if err := os.WriteFile(filepath.Join(dir, CAKeyFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(dir, hosts, now); err == nil || !strings.Contains(err.Error(), "never replaced") {
		t.Fatalf("damaged CA: %v", err)
	}
}

// A server presenting b's chain, for host.
func serve(t *testing.T, b *Bundle) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
	s.TLS = b.ServerConfig()
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func TestPinnedClientConfig(t *testing.T) {
	t.Parallel()
	b1, err := Ensure(filepath.Join(t.TempDir(), Dir), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b2, err := Ensure(filepath.Join(t.TempDir(), Dir), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s1, s2 := serve(t, b1), serve(t, b2)
	get := func(url, pin, host string) (*x509.Certificate, error) {
		var got *x509.Certificate
		tr := &http.Transport{TLSClientConfig: PinnedClientConfig(pin, host, func(c *x509.Certificate) { got = c })}
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		return got, nil
	}
	if ca, err := get(s1.URL, b1.Fingerprint(), "127.0.0.1"); err != nil || !bytes.Equal(ca.Raw, b1.CA.Raw) {
		t.Fatalf("the pinned hub: %v", err)
	}
	if _, err := get(s2.URL, b1.Fingerprint(), "127.0.0.1"); err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("another hub: %v; want a fingerprint refusal", err)
	}
	if _, err := get(s1.URL, b1.Fingerprint(), "hub.example"); err == nil {
		t.Fatal("the pinned CA accepted for a name the certificate does not cover")
	}
	// A chain that carries the pinned CA but whose server certificate another CA signed.
	mixed := &Bundle{Cert: tls.Certificate{Certificate: [][]byte{b2.Cert.Leaf.Raw, b1.CA.Raw}, PrivateKey: b2.Cert.PrivateKey, Leaf: b2.Cert.Leaf}}
	if _, err := get(serve(t, mixed).URL, b1.Fingerprint(), "127.0.0.1"); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("pinned CA in a chain it did not sign: %v", err)
	}
	// Afterwards: only the kept CA.
	pool := x509.NewCertPool()
	pool.AddCert(b1.CA)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: ClientConfig(pool)}, Timeout: 5 * time.Second}
	if resp, err := c.Get(s1.URL); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if _, err := c.Get(s2.URL); err == nil {
		t.Fatal("a hub of another CA accepted after enrollment")
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), Dir)
	b, err := Ensure(dir, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// An operator's certificate file without the CA in it.
	leafOnly := filepath.Join(t.TempDir(), "leaf.pem")
	if err := os.WriteFile(leafOnly, CertPEM(b.Cert.Leaf), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Load(leafOnly, filepath.Join(dir, KeyFile), filepath.Join(dir, CACertFile))
	if err != nil || l.Fingerprint() != b.Fingerprint() || len(l.Cert.Certificate) != 2 {
		t.Fatalf("Load: %v, fingerprint %s, chain %d", err, l.Fingerprint(), len(l.Cert.Certificate))
	}
	noCA, err := Load(leafOnly, filepath.Join(dir, KeyFile), "")
	if err != nil || noCA.CA != nil || noCA.Fingerprint() != "" {
		t.Fatalf("Load without a CA: %v %+v", err, noCA)
	}
	other, err := Ensure(filepath.Join(t.TempDir(), Dir), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(leafOnly, filepath.Join(dir, KeyFile), other.CAFile); err == nil || !strings.Contains(err.Error(), "does not sign") {
		t.Fatalf("Load with a CA that did not sign the certificate: %v", err)
	}
	if _, err := Load(leafOnly, filepath.Join(filepath.Dir(other.CAFile), KeyFile), ""); err == nil {
		t.Fatal("Load with another certificate's key")
	}
}

// FuzzParseCerts: PEM from files and from the hub's enrollment response never panics the parser,
// and what it accepts holds at least one certificate.
func FuzzParseCerts(f *testing.F) {
	b, err := Ensure(filepath.Join(f.TempDir(), Dir), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b.CAPEM())
	f.Add(append(CertPEM(b.Cert.Leaf), b.CAPEM()...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		certs, err := ParseCerts(in)
		if err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificate")
		}
	})
}
