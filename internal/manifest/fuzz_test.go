package manifest

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"godwit.dev/godwit/internal/fault"
)

// FuzzDecode checks that Decode never panics, that every refusal is an invalid or too large
// document whose errors each name a field and a line of the input (at most MaxErrors of them),
// and that decoding is deterministic.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		widgetDoc("  color: red\n  size: 3\n  every: 2d\n  labels: {a: x}\n  parts: [p]\n  inner: {depth: 1}\n"),
		widgetDoc("  selector:\n    matchLabels: {role: db}\n    matchExpressions: [{key: a, operator: In, values: [x]}]\n"),
		widgetDoc("  color: &c red\n  parts: [*c]\n"), widgetDoc("  color: !x y\n  ? [a]\n  : b\n"),
		widgetDoc("  size: 1\n  size: 2\n"), widgetDoc("  on: true\n"), widgetDoc("  on: !!bool yes\n  inner: {}\n"), "", "- a\n", "kind: Widget\n", "a: [", "---\n---\n",
		`{"apiVersion": "godwit.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The last line a node can be on: an empty value after the input's last line break is
		// on the line after it.
		last := lineBreaks(data) + 2
		w, err := decodeWidget(data)
		w2, err2 := decodeWidget(data)
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) || (err == nil && !reflect.DeepEqual(w, w2)) {
			t.Fatalf("two decodes differ: %v / %v", err, err2)
		}
		if err == nil {
			for p, l := range w.lines {
				if p == "" || l < 1 || l > last {
					t.Fatalf("field %q read at line %d of a %d-byte input", p, l, len(data))
				}
			}
			return
		}
		if errors.Is(err, fault.ErrTooLarge) {
			return
		}
		if !errors.Is(err, fault.ErrInvalid) {
			t.Fatalf("error %v is neither invalid nor too large", err)
		}
		fes := fieldErrors(t, err)
		if len(fes) == 0 || len(fes) > MaxErrors {
			t.Fatalf("%d errors: %v", len(fes), err)
		}
		for _, fe := range fes {
			if fe.Field == "" || fe.Message == "" || fe.Line < 0 || fe.Line > last {
				t.Fatalf("error without a field, a message or a line of the input: %#v", fe)
			}
		}
	})
}

// lineBreaks counts the line breaks of data as YAML does: \r\n, \r, \n, and NEL, LS and PS.
func lineBreaks(data []byte) int {
	n := bytes.Count(data, []byte("\r")) + bytes.Count(data, []byte("\n")) - bytes.Count(data, []byte("\r\n"))
	for _, b := range []string{"\u0085", "\u2028", "\u2029"} {
		n += bytes.Count(data, []byte(b))
	}
	return n
}
