package credential

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// PinSeparator joins an enrollment token's secret and the fingerprint of the hub's certificate
// authority: gwe_<secret>.sha256:<64 hex digits>. The suffix is not secret and never sent to the
// hub; the agent pins the CA with it on first contact.
const PinSeparator = ".sha256:"

// Fingerprint is the hex SHA-256 of a certificate's DER bytes: what
// `openssl x509 -noout -fingerprint -sha256` prints, lower-case and without colons.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// WithPin returns the enrollment token as handed to an operator: the secret, followed by the
// CA fingerprint when the hub has one (an empty fingerprint returns the secret unchanged).
func WithPin(secret, fingerprint string) string {
	if fingerprint == "" {
		return secret
	}
	return secret + PinSeparator + fingerprint
}

// ParseEnrollToken splits an enrollment token into its secret and the pinned CA fingerprint
// (empty for a token without one, as made by hubs without TLS). It checks the shape only: the
// hub decides whether the secret is valid.
func ParseEnrollToken(token string) (secret, fingerprint string, err error) {
	token = strings.TrimSpace(token)
	secret, pin, pinned := strings.Cut(token, PinSeparator)
	if !strings.HasPrefix(secret, PrefixEnroll) || len(secret) == len(PrefixEnroll) {
		return "", "", fmt.Errorf("enrollment token must start with %q", PrefixEnroll)
	}
	for _, r := range secret[len(PrefixEnroll):] {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return "", "", fmt.Errorf("enrollment token: unexpected character %q in the secret", r)
		}
	}
	if !pinned {
		return secret, "", nil
	}
	if len(pin) != 2*sha256.Size {
		return "", "", fmt.Errorf("enrollment token: the CA fingerprint after %q must be %d hex digits (got %d characters)",
			PinSeparator, 2*sha256.Size, len(pin))
	}
	if _, err := hex.DecodeString(pin); err != nil || strings.ToLower(pin) != pin {
		return "", "", errors.New("enrollment token: the CA fingerprint must be lower-case hex digits")
	}
	return secret, pin, nil
}

// RedactURL returns u with its credentials replaced by "xxxxx", for logs, files and errors: the
// password of user:password@, or the whole of a user-only part (in a NATS URL that is a token).
// It works on the text, not on a parsed URL, so that a mistyped URL (an unescaped '#', '/' or
// '@' in a password) is redacted all the same: everything between the scheme and the last '@'
// is hidden, except a plain user name.
func RedactURL(u string) string {
	at := strings.LastIndex(u, "@")
	if at < 0 {
		return u
	}
	start := 0
	if i := strings.Index(u, "://"); i > 0 && i < at && isScheme(u[:i]) {
		start = i + 3
	}
	user, _, hasPassword := strings.Cut(u[start:at], ":")
	if !hasPassword || !plainUser(user) {
		return u[:start] + "xxxxx" + u[at:]
	}
	return u[:start] + user + ":xxxxx" + u[at:]
}

func isScheme(s string) bool {
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	return s != ""
}

func plainUser(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return s != ""
}

// RedactURLs redacts every URL of a list (see RedactURL).
func RedactURLs(us []string) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = RedactURL(u)
	}
	return out
}

// StripUserinfo returns u without user name and password: what may be handed to another party.
func StripUserinfo(u string) (string, error) {
	p, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("bad URL %q: %w", RedactURL(u), err)
	}
	p.User = nil
	return p.String(), nil
}
