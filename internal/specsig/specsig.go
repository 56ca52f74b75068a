// Package specsig signs and verifies the steps of a migration with ed25519, so that an agent
// can refuse commands that an operator holding a trusted key did not sign (docs/security.md,
// "Signed specs").
//
// # What is signed
//
// The signature covers the steps the agent runs, exactly as it receives them, and the name of
// the migration they belong to: the bytes of Payload, which are the line
//
//	godwit.dev/v1 signed steps
//
// followed by the JSON of {"migration": NAME, "steps": [{"name", "detect", "run", "verify",
// "rollback", "timeout_ms"}, …]} (encoding/json, fields in that order, empty commands written
// as ""). Every command of every step, its rollback included, and every step's timeout are
// covered, and so are the order and the number of steps; the rollout, the selector and the
// versions are not (they decide where and when, not what runs). A signature therefore survives
// reformatting the YAML, and breaks on any change to a command.
//
// # The envelope
//
// A signature travels as one line of text, the envelope, in the Migration's spec.signature:
//
//	ed25519:KEYID:SIGNATURE
//
// KEYID is the first 16 hexadecimal digits of the SHA-256 of the raw 32-byte public key (so an
// agent can say which key signed without trying them all); SIGNATURE is the 64-byte ed25519
// signature in standard base64 with padding. ParseEnvelope is strict: anything else is refused.
//
// # Key files
//
// A private key is a PEM block "PRIVATE KEY" holding the key in PKCS #8 (as `openssl genpkey
// -algorithm ed25519` writes it), in a file of mode 0600; a public key is a PEM block "PUBLIC
// KEY" holding it in PKIX form (as `openssl pkey -pubout` writes it).
package specsig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"godwit.dev/godwit/internal/wire"
)

// Algorithm is the only signature algorithm.
const Algorithm = "ed25519"

// payloadHeader separates a signed step list from anything else an ed25519 key might sign.
const payloadHeader = "godwit.dev/v1 signed steps\n"

// MaxEnvelopeBytes bounds an envelope; a valid one is 106 bytes.
const MaxEnvelopeBytes = 256

// keyIDLen is the length of a key id in hexadecimal digits.
const keyIDLen = 16

// Errors of Verify, for callers that tell them apart.
var (
	ErrUnsigned  = errors.New("the steps are not signed")
	ErrUntrusted = errors.New("signed with a key that is not trusted")
	ErrMismatch  = errors.New("the signature does not match the steps (altered after signing, or signed for another migration)")
)

type signedStep struct {
	Name      string `json:"name"`
	Detect    string `json:"detect"`
	Run       string `json:"run"`
	Verify    string `json:"verify"`
	Rollback  string `json:"rollback"`
	TimeoutMS int64  `json:"timeout_ms"`
}

type signedSteps struct {
	Migration string       `json:"migration"`
	Steps     []signedStep `json:"steps"`
}

// Payload returns the bytes a signature covers: the steps of migration as an agent receives
// them (see the package comment).
func Payload(migration string, steps []wire.StepSpec) []byte {
	p := signedSteps{Migration: migration, Steps: make([]signedStep, len(steps))}
	for i, s := range steps {
		p.Steps[i] = signedStep{Name: s.Name, Detect: s.Detect, Run: s.Run, Verify: s.Verify, Rollback: s.Rollback, TimeoutMS: s.TimeoutMS}
	}
	var buf bytes.Buffer
	buf.WriteString(payloadHeader)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p); err != nil {
		panic("specsig: payload does not marshal: " + err.Error()) // strings and ints only
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// KeyID returns the id of a public key: 16 hexadecimal digits of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])[:keyIDLen]
}

// Envelope is a parsed signature.
type Envelope struct {
	KeyID     string
	Signature []byte // ed25519.SignatureSize bytes
}

// String renders the envelope as it is written in a spec.
func (e Envelope) String() string {
	return Algorithm + ":" + e.KeyID + ":" + base64.StdEncoding.EncodeToString(e.Signature)
}

// ParseEnvelope reads ed25519:KEYID:SIGNATURE. Its errors say what is wrong, without echoing
// more than a few bytes of the input.
func ParseEnvelope(s string) (Envelope, error) {
	if len(s) > MaxEnvelopeBytes {
		return Envelope{}, fmt.Errorf("a signature is at most %d bytes, not %d", MaxEnvelopeBytes, len(s))
	}
	alg, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Envelope{}, errors.New("must be ed25519:KEYID:SIGNATURE")
	}
	if alg != Algorithm {
		return Envelope{}, fmt.Errorf("algorithm must be %s, not %q", Algorithm, clip(alg))
	}
	id, sig, ok := strings.Cut(rest, ":")
	if !ok {
		return Envelope{}, errors.New("must be ed25519:KEYID:SIGNATURE")
	}
	if len(id) != keyIDLen || strings.Trim(id, "0123456789abcdef") != "" {
		return Envelope{}, fmt.Errorf("key id must be %d lowercase hexadecimal digits, not %q", keyIDLen, clip(id))
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(sig)
	if err != nil {
		return Envelope{}, fmt.Errorf("signature is not standard base64: %v", err)
	}
	if len(raw) != ed25519.SignatureSize {
		return Envelope{}, fmt.Errorf("signature must be %d bytes, not %d", ed25519.SignatureSize, len(raw))
	}
	return Envelope{KeyID: id, Signature: raw}, nil
}

func clip(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// Sign returns the envelope of migration's steps signed with key.
func Sign(key ed25519.PrivateKey, migration string, steps []wire.StepSpec) Envelope {
	pub := key.Public().(ed25519.PublicKey)
	return Envelope{KeyID: KeyID(pub), Signature: ed25519.Sign(key, Payload(migration, steps))}
}

// TrustedKey is a public key an agent accepts signatures of.
type TrustedKey struct {
	Name string // how the policy file calls it
	Key  ed25519.PublicKey
}

// Verify checks envelope (as written in the spec; "" when unsigned) against the steps of
// migration with the trusted keys. It returns the key that signed, or an error wrapping
// ErrUnsigned, ErrUntrusted, ErrMismatch or saying why the envelope cannot be read.
func Verify(keys []TrustedKey, envelope, migration string, steps []wire.StepSpec) (TrustedKey, error) {
	if envelope == "" {
		return TrustedKey{}, ErrUnsigned
	}
	env, err := ParseEnvelope(envelope)
	if err != nil {
		return TrustedKey{}, fmt.Errorf("the signature cannot be read: %w", err)
	}
	payload := Payload(migration, steps)
	found := false
	for _, k := range keys {
		if KeyID(k.Key) != env.KeyID {
			continue
		}
		found = true
		if ed25519.Verify(k.Key, payload, env.Signature) {
			return k, nil
		}
	}
	if !found {
		return TrustedKey{}, fmt.Errorf("%w (key id %s)", ErrUntrusted, env.KeyID)
	}
	return TrustedKey{}, fmt.Errorf("%w (key id %s)", ErrMismatch, env.KeyID)
}

// GenerateKey makes a key pair.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}

// MarshalPrivateKey renders key as a PEM "PRIVATE KEY" block (PKCS #8).
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKey renders key as a PEM "PUBLIC KEY" block (PKIX).
func MarshalPublicKey(key ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivateKey reads a PEM "PRIVATE KEY" block holding an ed25519 key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New(`not a PEM "PRIVATE KEY" block (make one with godwit sign keygen)`)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block: a key file holds exactly one key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the private key is a %T, not an ed25519 key", k)
	}
	return ek, nil
}

// ParsePublicKey reads a PEM "PUBLIC KEY" block holding an ed25519 key.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New(`not a PEM "PUBLIC KEY" block (godwit sign keygen writes one next to the private key)`)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block: a key file holds exactly one key")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the public key is a %T, not an ed25519 key", k)
	}
	return ek, nil
}

// ReadPrivateKey reads a private key file, refusing one that other users may read.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("private key %s has mode %#o: other users may read it; chmod 600 it", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
