// Package credential makes and checks the secrets Godwit hands out: the admin token, API tokens,
// enrollment tokens and agents' NATS passwords.
//
// Every secret is 256 random bits, so a single SHA-256 is a sound way to store it: there is nothing
// to brute-force that a slow hash would protect. Only hashes are stored; the secret is shown once.
package credential

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"strings"
)

// Prefixes make a leaked secret recognisable (and greppable) for what it is.
const (
	PrefixAdmin  = "gwa_" // the hub's own admin token, made at its first start
	PrefixAPI    = "gwt_" // API tokens with a role (godwit token create --role)
	PrefixEnroll = "gwe_"
	PrefixAgent  = "gwn_"
)

var encoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// New returns a fresh secret with the given prefix.
func New(prefix string) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("credential: crypto/rand failed: " + err.Error())
	}
	return prefix + strings.ToLower(encoding.EncodeToString(b[:]))
}

// Hash returns the hex SHA-256 of a secret, the form in which it is stored.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Matches reports whether secret hashes to hash, in constant time.
func Matches(secret, hash string) bool {
	h := Hash(secret)
	return subtle.ConstantTimeCompare([]byte(h), []byte(hash)) == 1
}
