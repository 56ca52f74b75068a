package wire

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"godwit.dev/godwit/internal/fault"
)

// Bounds of what an agent may send when it enrolls. Everything in an enrollment comes from the
// node, which the hub does not control; the hub refuses what exceeds a bound rather than cut it.
const (
	// MaxEnrollBodyBytes bounds the whole body of POST /api/v1/enroll, well above the sum of the
	// per-field bounds below.
	MaxEnrollBodyBytes = 16 << 10
	MaxAgentNameLength = 128
	MaxLabels          = 64
	MaxLabelKeyLength  = 63
	MaxLabelValLength  = 63
	MaxVersionLength   = 64
	// MaxSystemFieldLength bounds kernel, hostname and agent_version; os and arch get
	// maxShortSystemField.
	MaxSystemFieldLength = 256
	maxShortSystemField  = 32
	// MaxEnrollTokenLength bounds the token field: a secret with its CA fingerprint is about
	// 130 bytes.
	MaxEnrollTokenLength = 256
)

// Validate checks an enrollment request field by field, each bound and character rule; the
// error names the field. The token's shape is the hub's to judge (credential.ParseEnrollToken);
// here only its length is bounded.
func (r *EnrollRequest) Validate() error {
	if len(r.Token) > MaxEnrollTokenLength {
		return fault.Invalid("token", "longer than %d bytes", MaxEnrollTokenLength)
	}
	if err := CheckAgentName(r.Name); err != nil {
		return err
	}
	if err := CheckLabels(r.Labels); err != nil {
		return err
	}
	if err := CheckText("version", r.Version, MaxVersionLength); err != nil {
		return err
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"system.os", r.System.OS, maxShortSystemField},
		{"system.arch", r.System.Arch, maxShortSystemField},
		{"system.kernel", r.System.Kernel, MaxSystemFieldLength},
		{"system.hostname", r.System.Hostname, MaxSystemFieldLength},
		{"system.agent_version", r.System.AgentVersion, MaxSystemFieldLength},
		{"system.policy_digest", r.System.PolicyDigest, MaxSystemFieldLength},
	} {
		if err := CheckText(f.name, f.value, f.max); err != nil {
			return err
		}
	}
	return nil
}

// CheckAgentName refuses an agent name that is not 1 to MaxAgentNameLength ASCII letters, digits,
// '.', '-' and '_', starting and ending with a letter or digit, without "..": a host name fits,
// while '/', "..", spaces, control and bidirectional characters — anything that could pass for
// a path or hide what a name says in a terminal or a page — do not. Names are unique among
// unrevoked agents (the store refuses a second one, whatever its case).
func CheckAgentName(name string) error {
	return checkName("name", "agent name", name, 1, MaxAgentNameLength)
}

// CheckLabels checks an agent's labels: at most MaxLabels, keys like agent names of at most
// MaxLabelKeyLength, values likewise (or empty) of at most MaxLabelValLength.
func CheckLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fault.Invalid("labels", "at most %d labels (got %d)", MaxLabels, len(labels))
	}
	for k, v := range labels {
		if err := checkName("labels", "label key", k, 1, MaxLabelKeyLength); err != nil {
			return err
		}
		if err := checkName("labels."+k, "label value", v, 0, MaxLabelValLength); err != nil {
			return err
		}
	}
	return nil
}

// checkName is the rule of agent names and label keys and values, with a message that says
// which character or sequence is wrong.
func checkName(field, what, s string, minLen, maxLen int) error {
	if len(s) < minLen {
		return fault.Invalid(field, "%s must not be empty", what)
	}
	if len(s) > maxLen {
		return fault.Invalid(field, "%s %.40q… is longer than %d bytes", what, s, maxLen)
	}
	if s == "" {
		return nil
	}
	if err := unsafeRune(s); err != "" {
		return fault.Invalid(field, "%s %q %s", what, s, err)
	}
	if i := strings.IndexAny(s, `/\`); i >= 0 {
		return fault.Invalid(field, "%s %q must not contain '%c'", what, s, s[i])
	}
	for _, r := range s {
		if r >= utf8.RuneSelf || !nameByte(byte(r)) {
			return fault.Invalid(field, "%s %q: %q is not allowed (use letters, digits, '.', '-' and '_')", what, s, r)
		}
	}
	switch {
	case strings.Contains(s, ".."):
		return fault.Invalid(field, "%s %q must not contain \"..\"", what, s)
	case !alnum(s[0]) || !alnum(s[len(s)-1]):
		return fault.Invalid(field, "%s %q must start and end with a letter or digit", what, s)
	}
	return nil
}

func nameByte(c byte) bool { return alnum(c) || c == '.' || c == '-' || c == '_' }

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

// CheckText refuses free text that is too long, not UTF-8, or holds control, line-separating or
// bidirectional formatting characters; the error names field.
func CheckText(field, s string, maxLen int) error {
	if len(s) > maxLen {
		return fault.Invalid(field, "longer than %d bytes", maxLen)
	}
	if err := unsafeRune(s); err != "" {
		return fault.Invalid(field, "%q %s", s, err)
	}
	return nil
}

// unsafeRune describes the first character of s that may not appear in any name or text taken
// from outside (control, line-separating and bidirectional formatting characters, invalid
// UTF-8), or returns "" when there is none.
func unsafeRune(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		switch {
		case unicode.IsControl(r), r == '\u2028', r == '\u2029':
			return fmt.Sprintf("contains the control character U+%04X", r)
		case isBidi(r):
			return fmt.Sprintf("contains the bidirectional formatting character U+%04X", r)
		}
	}
	return ""
}

// isBidi reports the characters that change the direction text is shown in (Unicode's
// Bidi_Control property) and the invisible ones that hide a character's identity.
func isBidi(r rune) bool {
	switch {
	case r == '\u061c', r == '\u200e', r == '\u200f', r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
		return true
	case r == '\u200b', r == '\u200c', r == '\u200d', r == '\u2060', r == '\ufeff':
		return true
	}
	return false
}
