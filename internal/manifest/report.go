package manifest

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"godwit.dev/godwit/internal/fault"
)

// MaxNameLength bounds metadata.name and every other name Report.Name checks (a DNS label).
const MaxNameLength = 63

// nameRE is a DNS label: it is safe in URLs, KV keys, NATS subjects and file names, and cannot be
// mistaken for a CLI flag.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// Lines maps a field path (spec.steps[1].run) to the line it was read from. It is nil for a
// document built in code.
type Lines map[string]int

// Of returns the line of path, or of its closest recorded parent; 0 when unknown. A missing
// field thus points at the mapping that should hold it.
func (l Lines) Of(path string) int {
	for path != "" {
		if n, ok := l[path]; ok {
			return n
		}
		path = parent(path)
	}
	return 0
}

// parent strips the last segment of a path: a.b[k.x] → a.b, a.b → a, a → "".
func parent(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

// Report gathers the errors of one document, each a *fault.FieldError naming the field path and
// its line, and keeps at most MaxErrors of them. A kind's validation fills one and returns Err.
type Report struct {
	// Lines gives each error its line; nil for a document built in code.
	Lines Lines
	errs  []error
}

// Fail records an error on path, at the line Lines gives it.
func (r *Report) Fail(path, format string, args ...any) {
	r.FailAt(path, r.Lines.Of(path), format, args...)
}

// FailAt records an error on path at line.
func (r *Report) FailAt(path string, line int, format string, args ...any) {
	r.add(&fault.FieldError{Field: path, Line: line, Message: fmt.Sprintf(format, args...)})
}

func (r *Report) add(err error) {
	if len(r.errs) < MaxErrors {
		r.errs = append(r.errs, err)
	}
}

// Err returns nil, the only error, or all of them joined (errors.As finds the first).
func (r *Report) Err() error {
	switch len(r.errs) {
	case 0:
		return nil
	case 1:
		return r.errs[0]
	default:
		return errors.Join(r.errs...)
	}
}

// Header checks what every document has: apiVersion, kind (which must be kind), metadata.name
// and metadata.description. Decode has checked the first two already; a document built in code
// has not.
func (r *Report) Header(kind, apiVersion, gotKind string, meta Metadata) {
	if apiVersion != APIVersion {
		r.Fail("apiVersion", "must be %s, not %q", APIVersion, apiVersion)
	}
	if gotKind != kind {
		r.Fail("kind", "must be %s, not %q", kind, gotKind)
	}
	r.Name("metadata.name", meta.Name)
	r.Text("metadata.description", meta.Description)
}

// Name requires a DNS label: lowercase letters, digits and '-', starting and ending with a
// letter or digit, at most MaxNameLength long. Names end up in URLs, KV keys and NATS subjects.
func (r *Report) Name(path, s string) {
	switch {
	case s == "":
		r.Fail(path, "is required")
	case len(s) > MaxNameLength:
		r.Fail(path, "must be at most %d characters, not %d", MaxNameLength, len(s))
	case !nameRE.MatchString(s):
		r.Fail(path, "%q is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit", s)
	}
}

// Text refuses a string that cannot round-trip: one that is not valid UTF-8.
func (r *Report) Text(path, s string) {
	if !utf8.ValidString(s) {
		r.Fail(path, "must be valid UTF-8")
	}
}

// Command refuses what cannot be passed to a process: invalid UTF-8 or a NUL byte. Whether a
// command is required is the kind's rule.
func (r *Report) Command(path, s string) {
	switch {
	case !utf8.ValidString(s):
		r.Fail(path, "must be valid UTF-8")
	case strings.ContainsRune(s, 0):
		r.Fail(path, "must not contain a NUL byte")
	}
}

// Enum requires got to be one of allowed, which the error lists in their order.
func Enum[T ~string](r *Report, path string, got T, allowed ...T) {
	names := make([]string, len(allowed))
	for i, a := range allowed {
		if got == a {
			return
		}
		names[i] = string(a)
	}
	r.Fail(path, "must be one of %s, not %q", strings.Join(names, ", "), string(got))
}

// Within requires lo ≤ d ≤ hi.
func (r *Report) Within(path string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		r.Fail(path, "must be between %s and %s, not %s", FormatDuration(lo), FormatDuration(hi), FormatDuration(d))
	}
}
