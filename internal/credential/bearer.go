package credential

import (
	"errors"
	"fmt"
	"strings"
)

// secretLength is the length of the encoded random part of every secret New makes: 32 bytes
// in unpadded base32.
const secretLength = 52

// maxAuthorizationHeader bounds what ParseBearer looks at; a real header is about 64 bytes.
const maxAuthorizationHeader = 1024

// ParseBearer reads an Authorization header value of the form "Bearer <token>" (the scheme in
// any case, RFC 9110) and returns the token when it has the shape of an admin or API token:
// its prefix and 52 lower-case base32 characters. Anything else is an error saying what is
// wrong, never the header itself (it may be someone's secret). It checks the shape only; the
// store says whether the token is valid.
func ParseBearer(header string) (token string, err error) {
	if header == "" {
		return "", errors.New("missing bearer token (Authorization: Bearer <token>)")
	}
	if len(header) > maxAuthorizationHeader {
		return "", fmt.Errorf("authorization header longer than %d bytes", maxAuthorizationHeader)
	}
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New("authorization header must be Bearer <token>")
	}
	token = strings.Trim(rest, " \t")
	prefix, ok := apiPrefix(token)
	if !ok {
		return "", fmt.Errorf("bearer token must start with %s (the admin token) or %s (an API token)", PrefixAdmin, PrefixAPI)
	}
	if err := checkSecret(token[len(prefix):]); err != nil {
		return "", fmt.Errorf("bearer token: %w", err)
	}
	return token, nil
}

// IsAdminToken reports whether a token has the admin token's prefix (ParseBearer checked the
// rest).
func IsAdminToken(token string) bool { return strings.HasPrefix(token, PrefixAdmin) }

func apiPrefix(token string) (string, bool) {
	for _, p := range []string{PrefixAdmin, PrefixAPI} {
		if strings.HasPrefix(token, p) {
			return p, true
		}
	}
	return "", false
}

// checkSecret checks the random part of a secret New made.
func checkSecret(s string) error {
	if len(s) != secretLength {
		return fmt.Errorf("the secret after the prefix must be %d characters (got %d)", secretLength, len(s))
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '2' && r <= '7') {
			return fmt.Errorf("unexpected character %q", r)
		}
	}
	return nil
}
