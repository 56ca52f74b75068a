package manifest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
)

// widget is a kind made up for these tests: one field of every shape the package reads.
type widget struct {
	meta     Metadata
	color    string
	size     int
	every    time.Duration
	labels   map[string]string
	selector LabelSelector
	parts    []string
	inner    struct{ depth int }
	on       *bool
	lines    Lines
}

var widgetKind = Kind{Name: "Widget", MaxBytes: 4 << 10}

func decodeWidget(data []byte) (*widget, error) {
	w := &widget{color: "blue", every: time.Minute} // defaults
	lines, err := widgetKind.Decode(data, &w.meta,
		String("color", &w.color),
		Int("size", &w.size),
		Duration("every", &w.every),
		Labels("labels", &w.labels),
		Selector("selector", &w.selector),
		List("parts", func(v Value) {
			if s, ok := v.Scalar(); ok {
				w.parts = append(w.parts, s)
			}
		}),
		Object("inner", Int("depth", &w.inner.depth)),
		Bool("on", &w.on),
	)
	if err != nil {
		return nil, err
	}
	w.lines = lines
	return w, nil
}

// widgetDoc is a widget whose spec mapping continues at line 5 with two spaces of indentation.
func widgetDoc(body string) string {
	return "apiVersion: godwit.dev/v1\nkind: Widget\nmetadata: {name: w}\nspec:\n" + body
}

func fieldErrors(t *testing.T, err error) []*fault.FieldError {
	t.Helper()
	var out []*fault.FieldError
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var fe *fault.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %v (%T) is not a *fault.FieldError", e, e)
		}
		out = append(out, fe)
	}
	walk(err)
	return out
}

func TestDecodeReadsEveryShape(t *testing.T) {
	w, err := decodeWidget([]byte(widgetDoc(`  color: red
  size: 3
  every: 2d
  labels: {a: x, b: ~}
  selector:
    matchLabels: {role: db}
    matchExpressions: [{key: site, operator: In, values: [b, a]}]
  parts: [p, q]
  inner: {depth: 4}
  on: false
`)))
	if err != nil {
		t.Fatal(err)
	}
	if w.meta.Name != "w" || w.color != "red" || w.size != 3 || w.every != 48*time.Hour || w.inner.depth != 4 || w.on == nil || *w.on {
		t.Errorf("decoded %+v", w)
	}
	if len(w.labels) != 2 || w.labels["a"] != "x" || w.labels["b"] != "" {
		t.Errorf("labels = %v; a null value is the empty string", w.labels)
	}
	if w.selector.MatchLabels["role"] != "db" || len(w.selector.MatchExpressions) != 1 ||
		w.selector.MatchExpressions[0].Operator != OpIn || strings.Join(w.selector.MatchExpressions[0].Values, ",") != "b,a" {
		t.Errorf("selector = %+v", w.selector)
	}
	if strings.Join(w.parts, ",") != "p,q" {
		t.Errorf("parts = %v", w.parts)
	}
	for path, want := range map[string]int{
		"metadata.name": 3, "spec.color": 5, "spec.labels[b]": 8, "spec.parts[1]": 12, "spec.inner.depth": 13,
		"spec.selector.matchExpressions[0].values": 11,
		"spec.inner.missing":                       13, "spec.labels[a.b]": 8, "spec.absent": 4, "nowhere": 0,
	} {
		if got := w.lines.Of(path); got != want {
			t.Errorf("Lines.Of(%q) = %d, want %d", path, got, want)
		}
	}
}

// Null and absent are the same: the destination keeps the default set before Decode.
func TestDecodeNullKeepsDefault(t *testing.T) {
	w, err := decodeWidget([]byte(widgetDoc("  color: ~\n  every:\n  inner:\n  on: ~\n")))
	if err != nil {
		t.Fatal(err)
	}
	if w.color != "blue" || w.every != time.Minute || w.on != nil {
		t.Errorf("color %q, every %v, on %v: want the defaults (on left unset)", w.color, w.every, w.on)
	}
	for doc, want := range map[string]bool{
		widgetDoc("  on: true\n"): true, widgetDoc("  on: True\n"): true, widgetDoc("  on: FALSE\n"): false,
		`{"apiVersion": "godwit.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"on": true}}`: true,
	} {
		w, err := decodeWidget([]byte(doc))
		if err != nil || w.on == nil || *w.on != want {
			t.Errorf("%s: %+v, %v; want on %v", doc, w, err, want)
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	tests := []struct {
		name, src, field string
		line             int
		msg              string
	}{
		{"unknown field", widgetDoc("  colour: red\n"), "spec.colour", 5, `unknown field "colour" (allowed here: color, size, every, labels, selector, parts, inner, on)`},
		{"unknown top-level field", widgetDoc("") + "status: {}\n", "status", 5, "allowed here: apiVersion, kind, metadata, spec"},
		{"field set twice", widgetDoc("  size: 1\n  size: 2\n"), "spec.size", 6, `field "size" is set twice`},
		{"label set twice", widgetDoc("  labels:\n    a: x\n    a: y\n"), "spec.labels[a]", 7, `label "a" is set twice`},
		{"custom tag", widgetDoc("  color: !paint red\n"), "spec.color", 5, "unsupported YAML tag !paint"},
		{"binary tag", widgetDoc("  color: !!binary cmVk\n"), "spec.color", 5, "unsupported YAML tag !!binary"},
		{"tag on a mapping", widgetDoc("  inner: !box {depth: 1}\n"), "spec.inner", 5, "unsupported YAML tag !box"},
		{"alias", widgetDoc("  color: &c red\n  parts: [*c]\n"), "spec.parts[0]", 6, "aliases (*c) are not supported"},
		{"complex key", widgetDoc("  ? [a]\n  : b\n"), "spec", 5, "keys must be plain strings"},
		{"root complex key", "? [a]\n: b\napiVersion: godwit.dev/v1\nkind: Widget\n", "document", 1, "keys must be plain strings"},
		{"not a number", widgetDoc("  size: big\n"), "spec.size", 5, `must be a whole number, not "big"`},
		{"not a duration", widgetDoc("  every: often\n"), "spec.every", 5, `"often" is not a duration`},
		{"yes for a boolean", widgetDoc("  on: yes\n"), "spec.on", 5, `must be true or false, not "yes"`},
		{"quoted boolean", widgetDoc("  on: \"true\"\n"), "spec.on", 5, `must be true or false, not the text "true"`},
		{"number for a boolean", widgetDoc("  on: 1\n"), "spec.on", 5, `must be true or false, not "1"`},
		{"tagged yes", widgetDoc("  on: !!bool yes\n"), "spec.on", 5, `must be true or false, not "yes"`},
		{"list for a boolean", widgetDoc("  on: [true]\n"), "spec.on", 5, "must be a single value, not a list"},
		{"mapping for a value", widgetDoc("  color: {r: 1}\n"), "spec.color", 5, "must be a single value, not a mapping"},
		{"list for a mapping", widgetDoc("  inner: [1]\n"), "spec.inner", 5, "must be a mapping, not a list"},
		{"value for a list", widgetDoc("  parts: p\n"), "spec.parts", 5, "must be a list, not a value"},
		{"labels not a mapping", widgetDoc("  labels: [a]\n"), "spec.labels", 5, "must be a mapping of label keys to values, not a list"},
		{"unknown selector field", widgetDoc("  selector: {matchLabel: {a: b}}\n"), "spec.selector.matchLabel", 5, "allowed here: matchLabels, matchExpressions"},
		{"wrong kind", "apiVersion: godwit.dev/v1\nkind: Gadget\nspec: {bogus: 1}\n", "kind", 2, `must be Widget, not "Gadget"`},
		{"missing kind", "apiVersion: godwit.dev/v1\n", "kind", 1, "is required (must be Widget)"},
		{"wrong apiVersion", "apiVersion: v2\nkind: Widget\n", "apiVersion", 1, `must be godwit.dev/v1, not "v2"`},
		{"kind is a mapping", "apiVersion: godwit.dev/v1\nkind: {a: b}\n", "kind", 2, `not "mapping"`},
		{"empty", "", "document", 0, "empty document: expected a Widget"},
		{"two documents", widgetDoc("") + "---\n" + widgetDoc(""), "document", 5, "more than one YAML document: a spec is exactly one Widget"},
		{"not a mapping", "- a\n", "document", 1, "must be a mapping with apiVersion, kind, metadata and spec"},
		{"invalid YAML", "apiVersion: godwit.dev/v1\nkind: [Widget\n", "document", -1, "invalid YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := decodeWidget([]byte(tt.src))
			if w != nil || err == nil {
				t.Fatalf("got %+v, %v; want an error", w, err)
			}
			if !errors.Is(err, fault.ErrInvalid) {
				t.Fatalf("error %v does not wrap fault.ErrInvalid", err)
			}
			for _, fe := range fieldErrors(t, err) {
				if fe.Field == tt.field && (tt.line == -1 || fe.Line == tt.line) && strings.Contains(fe.Message, tt.msg) {
					return
				}
			}
			t.Fatalf("no error on %s (line %d) containing %q in:\n%v", tt.field, tt.line, tt.msg, err)
		})
	}
}

func TestDecodeTooLarge(t *testing.T) {
	_, err := decodeWidget([]byte(widgetDoc("# " + strings.Repeat("x", widgetKind.MaxBytes) + "\n")))
	if !errors.Is(err, fault.ErrTooLarge) || !strings.Contains(err.Error(), "Widget spec is") {
		t.Fatalf("err = %v, want ErrTooLarge naming the kind", err)
	}
}

// Errors are reported together, in document order, up to MaxErrors.
func TestDecodeErrorCap(t *testing.T) {
	_, err := decodeWidget([]byte(widgetDoc("  size: x\n  every: y\n")))
	fes := fieldErrors(t, err)
	if len(fes) != 2 || fes[0].Error() != `spec.size (line 5): must be a whole number, not "x"` || fes[1].Field != "spec.every" {
		t.Fatalf("got %v", err)
	}
	var b strings.Builder
	b.WriteString(widgetDoc("  parts:\n"))
	for range 3 * MaxErrors {
		b.WriteString("    - [nested]\n")
	}
	_, err = decodeWidget([]byte(b.String()))
	if n := len(fieldErrors(t, err)); n != MaxErrors {
		t.Fatalf("got %d errors, want them capped at %d", n, MaxErrors)
	}
}
