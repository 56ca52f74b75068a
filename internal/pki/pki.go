// Package pki is the hub's certificate authority and the agents' side of trusting it.
//
// On its first start with TLS the hub makes a CA (ECDSA P-256, ten years) and a server
// certificate signed by it (one year, renewed at start when it has less than 90 days left or does
// not cover the hub's current addresses), all in <data-dir>/tls, keys 0600 — as k3s does. An
// operator may bring a certificate, key and CA instead. Enrollment tokens carry the CA's SHA-256
// fingerprint; an agent accepts the hub on first contact only if the hub's chain leads to a
// certificate with that fingerprint, keeps that CA in its state dir and verifies every later
// connection (HTTP and NATS) against it.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/datadir"
)

// Files in the hub's TLS directory.
const (
	Dir        = "tls"
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
	CertFile   = "server.crt"
	KeyFile    = "server.key"
)

// Lifetimes of generated certificates.
const (
	CALifetime     = 10 * 365 * 24 * time.Hour
	ServerLifetime = 365 * 24 * time.Hour
	RenewBefore    = 90 * 24 * time.Hour
)

// Bundle is what the hub serves with: its certificate (the chain, ending with the CA) and the CA
// that agents pin.
type Bundle struct {
	Cert tls.Certificate
	// CA is the certificate agents pin; nil for a brought certificate without --tls-ca (then
	// agents verify it against their system roots or --hub-ca).
	CA *x509.Certificate
	// CAFile is where the CA certificate is on disk (for the local CLI); empty without a CA.
	CAFile string
	// Generated is true when this call made or renewed the server certificate.
	Generated bool
}

// Fingerprint is the CA's fingerprint (credential.Fingerprint), empty without a CA.
func (b *Bundle) Fingerprint() string {
	if b.CA == nil {
		return ""
	}
	return credential.Fingerprint(b.CA.Raw)
}

// CAPEM is the CA certificate in PEM, nil without a CA.
func (b *Bundle) CAPEM() []byte {
	if b.CA == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.CA.Raw})
}

// ServerConfig is the TLS configuration of the hub's listeners (TLS 1.2 and later).
func (b *Bundle) ServerConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{b.Cert}, MinVersion: tls.VersionTLS12}
}

// Ensure returns the generated bundle in dir (the hub's <data-dir>/tls), making the CA on first
// use and the server certificate whenever it is missing, expires within RenewBefore, or does not
// cover hosts (DNS names and IP addresses). The CA is never replaced: agents pin it.
func Ensure(dir string, hosts []string, now time.Time) (*Bundle, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	ca, caKey, err := ensureCA(dir, now)
	if err != nil {
		return nil, err
	}
	b := &Bundle{CA: ca, CAFile: filepath.Join(dir, CACertFile)}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err == nil && cert.Leaf != nil && usable(cert.Leaf, ca, hosts, now) {
		cert.Certificate = appendCA(cert.Certificate, ca)
		b.Cert = cert
		return b, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("tls: %s: %w", filepath.Join(dir, CertFile), err)
	}
	leaf, key, err := issueServer(ca, caKey, hosts, now)
	if err != nil {
		return nil, err
	}
	keyPEM, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	if err := datadir.WriteFileAtomic(filepath.Join(dir, KeyFile), keyPEM); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if err := datadir.WriteFileAtomic(filepath.Join(dir, CertFile), certPEM(leaf)); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	b.Cert = tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Raw}, PrivateKey: key, Leaf: leaf}
	b.Generated = true
	return b, nil
}

// usable reports whether leaf is signed by ca, valid for long enough and covers every host.
func usable(leaf, ca *x509.Certificate, hosts []string, now time.Time) bool {
	if leaf.CheckSignatureFrom(ca) != nil || now.Before(leaf.NotBefore) || leaf.NotAfter.Sub(now) < RenewBefore {
		return false
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func appendCA(chain [][]byte, ca *x509.Certificate) [][]byte {
	if ca == nil || slices.ContainsFunc(chain, func(c []byte) bool { return bytes.Equal(c, ca.Raw) }) {
		return chain
	}
	return append(chain, ca.Raw)
}

func ensureCA(dir string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err == nil {
		signer, ok := pair.PrivateKey.(crypto.Signer)
		if !ok || pair.Leaf == nil || !pair.Leaf.IsCA {
			return nil, nil, fmt.Errorf("tls: %s is not a CA certificate with its key", certPath)
		}
		return pair.Leaf, signer, nil
	}
	if _, statErr := os.Stat(certPath); !errors.Is(statErr, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("tls: CA in %s: %w (it is never replaced: agents pin it)", dir, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "godwit-ca@" + host, Organization: []string{"godwit"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: make CA: %w", err)
	}
	ca, _ := x509.ParseCertificate(der)
	kp, err := keyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	if err := datadir.WriteFileAtomic(keyPath, kp); err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	if err := datadir.WriteFileAtomic(certPath, certPEM(ca)); err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	return ca, key, nil
}

func issueServer(ca *x509.Certificate, caKey crypto.Signer, hosts []string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "godwit-hub", Organization: []string{"godwit"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ServerLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: make server certificate: %w", err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return leaf, key, nil
}

// Load returns a bundle from an operator's certificate (chain), key and, optionally, CA. The CA
// is appended to the served chain when the chain does not hold it, so agents can pin it.
func Load(certFile, keyFile, caFile string) (*Bundle, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %s, %s: %w", certFile, keyFile, err)
	}
	b := &Bundle{Cert: cert}
	if caFile == "" {
		return b, nil
	}
	raw, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	cas, err := ParseCerts(raw)
	if err != nil {
		return nil, fmt.Errorf("tls: %s: %w", caFile, err)
	}
	// The pinned CA is the one the chain verifies against.
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	for _, ca := range cas {
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: cert.Leaf.NotBefore.Add(time.Second)}); err == nil {
			b.CA = ca
			break
		}
	}
	if b.CA == nil {
		return nil, fmt.Errorf("tls: %s does not sign %s", caFile, certFile)
	}
	b.Cert.Certificate = appendCA(b.Cert.Certificate, b.CA)
	b.CAFile = caFile
	return b, nil
}

// ParseCerts returns every certificate of a PEM text; none at all is an error.
func ParseCerts(pemText []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := pemText; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// Pool returns a certificate pool of the PEM certificates in the file at path.
func Pool(path string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCerts(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// PinnedClientConfig is the TLS configuration of an agent's first contact with a hub at host,
// when all it knows is the CA's fingerprint: the hub's chain must contain a certificate with that
// fingerprint, and the server certificate must verify against it (as the only root) for host.
// got receives the pinned CA once a handshake succeeded.
func PinnedClientConfig(fingerprint, host string, got func(*x509.Certificate)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is VerifyConnection's: against the pinned certificate, not system roots.
		InsecureSkipVerify: true, //nolint:gosec // see VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			ca, err := VerifyPinned(cs.PeerCertificates, fingerprint, host)
			if err != nil {
				return err
			}
			if got != nil {
				got(ca)
			}
			return nil
		},
	}
}

// VerifyPinned checks a presented chain against a pinned CA fingerprint and returns the CA.
func VerifyPinned(chain []*x509.Certificate, fingerprint, host string) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("the hub presented no certificate")
	}
	var ca *x509.Certificate
	inter := x509.NewCertPool()
	for _, c := range chain {
		if credential.Fingerprint(c.Raw) == fingerprint {
			ca = c
		} else {
			inter.AddCert(c)
		}
	}
	if ca == nil {
		return nil, fmt.Errorf("the hub's certificate chain holds no CA with the fingerprint sha256:%s of the enrollment token: it is not the hub the token was made for", fingerprint)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host}); err != nil {
		return nil, fmt.Errorf("the hub's certificate does not verify against the pinned CA: %w", err)
	}
	return ca, nil
}

// ClientConfig verifies servers against the CAs in pool (nil: the system roots).
func ClientConfig(pool *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("pki: crypto/rand failed: " + err.Error())
	}
	return n
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// CertPEM encodes one certificate in PEM.
func CertPEM(c *x509.Certificate) []byte { return certPEM(c) }
