package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"godwit.dev/godwit/internal/fault"
)

// APIVersion is the only apiVersion a document may have.
const APIVersion = "godwit.dev/v1"

// MaxErrors bounds how many errors one Decode, or one Report, holds, so that a garbage input
// does not give a garbage-sized message.
const MaxErrors = 20

// documentField is the Field of errors about the document as a whole: its syntax, a second
// document, a document that is not a mapping.
const documentField = "document"

// Kind is one kind of document: what its kind field says and how large one may be.
type Kind struct {
	// Name is the value of the document's kind field, such as Migration.
	Name string
	// MaxBytes bounds the input of Decode.
	MaxBytes int
}

// Metadata names a document. Every kind has it.
type Metadata struct {
	// Name identifies the document among those of its kind; Report.Name states the rule.
	Name        string
	Description string
}

// Decode reads exactly one YAML (or JSON) document of kind k. It refuses, in this order: an
// input over MaxBytes (fault.ErrTooLarge); invalid YAML, an empty input and a second document;
// a document that is not a mapping; an apiVersion or kind other than APIVersion and k.Name, alone,
// so that a wrong file gives one clear error rather than a list of unknown fields. Then it reads
// the top-level fields apiVersion, kind, metadata (into meta) and spec, whose allowed fields are
// spec, and refuses every unknown or repeated field, alias, unusual tag and value of the wrong
// shape, up to MaxErrors of them. A field that is absent or null keeps what its destination held:
// set defaults before calling Decode.
//
// Errors are *fault.FieldError values (joined when there are several) naming the field path and
// its line. The returned Lines say where every field was read, for the kind's validation.
func (k Kind) Decode(data []byte, meta *Metadata, spec ...Field) (Lines, error) {
	if len(data) > k.MaxBytes {
		return nil, fmt.Errorf("%s spec is %d bytes, the limit is %d: %w", k.Name, len(data), k.MaxBytes, fault.ErrTooLarge)
	}
	root, err := k.document(data)
	if err != nil {
		return nil, err
	}
	if err := k.checkKind(root); err != nil {
		return nil, err
	}
	d := &decoder{report: Report{Lines: Lines{}}}
	var apiVersion, kind string
	d.mapping(root, "", []Field{
		String("apiVersion", &apiVersion),
		String("kind", &kind),
		Object("metadata", String("name", &meta.Name), String("description", &meta.Description)),
		Object("spec", spec...),
	})
	if err := d.report.Err(); err != nil {
		return nil, err
	}
	return d.report.Lines, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document returns the root node of the only document in data.
func (k Kind) document(data []byte) (root *yaml.Node, err error) {
	// The YAML library has panicked on hostile input in the past; a spec comes from the API, so
	// a panic here must be an invalid spec, not a dead hub.
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, &fault.FieldError{Field: documentField, Message: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	empty := &fault.FieldError{Field: documentField, Message: "empty document: expected a " + k.Name}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, empty
		}
		return nil, syntaxError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(err)
	default:
		return nil, &fault.FieldError{Field: documentField, Line: extra.Line, Message: "more than one YAML document: a spec is exactly one " + k.Name}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		empty.Line = doc.Line
		return nil, empty
	}
	return doc.Content[0], nil
}

func syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	return &fault.FieldError{Field: documentField, Line: line, Message: "invalid YAML: " + msg}
}

// checkKind refuses a document that is not a mapping of apiVersion APIVersion and kind k.Name.
func (k Kind) checkKind(root *yaml.Node) error {
	if root.Kind != yaml.MappingNode {
		return &fault.FieldError{Field: documentField, Line: root.Line, Message: "must be a mapping with apiVersion, kind, metadata and spec"}
	}
	r := Report{}
	for _, want := range []struct{ key, value string }{{"apiVersion", APIVersion}, {"kind", k.Name}} {
		key, v := lookup(root, want.key)
		switch {
		case key == nil:
			r.FailAt(want.key, root.Line, "is required (must be %s)", want.value)
		case v.Kind != yaml.ScalarNode || v.Value != want.value:
			got := v.Value
			if v.Kind != yaml.ScalarNode {
				got = kindName(v)
			}
			r.FailAt(want.key, key.Line, "must be %s, not %q", want.value, got)
		}
	}
	return r.Err()
}

// lookup returns the first key and value node named key in a mapping.
func lookup(n *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Kind == yaml.ScalarNode && n.Content[i].Value == key {
			return n.Content[i], n.Content[i+1]
		}
	}
	return nil, nil
}

// decoder walks a node tree, recording the line of every field it reads and its errors.
type decoder struct {
	report Report
}

// Field is one key a mapping allows, with how its value is read. Build fields with String, Int, Bool,
// Duration, Labels, Selector, Object, List or, for a rule of the kind's own, Read.
type Field struct {
	name string
	read func(Value)
}

// Read is a field whose value fn reads: it takes v.Scalar, v.Int, v.Mapping or v.Each (after
// v.Shape, when the field takes more than one shape) and calls v.Fail for what it refuses.
func Read(name string, fn func(v Value)) Field { return Field{name: name, read: fn} }

// String is a field holding one string, or a string-typed enum (validation checks its value).
func String[T ~string](name string, dst *T) Field {
	return Read(name, func(v Value) {
		if s, ok := v.Scalar(); ok {
			*dst = T(s)
		}
	})
}

// Int is a field holding a whole number.
func Int(name string, dst *int) Field {
	return Read(name, func(v Value) { v.Int(dst) })
}

// Bool is a field holding true or false (a YAML boolean, not the text "true": a quoted value,
// yes/no or 1/0 are refused). *dst stays nil when the field is absent or null, so a kind can
// tell a field left out from one set to false.
func Bool(name string, dst **bool) Field {
	return Read(name, func(v Value) {
		s, ok := v.Scalar()
		if !ok {
			return
		}
		var b bool
		switch strings.ToLower(s) {
		case "true":
			b = true
		case "false":
		default:
			v.Fail("must be true or false, not %q", s)
			return
		}
		if v.node.ShortTag() != "!!bool" { // "true" in quotes is text
			v.Fail("must be true or false, not the text %q", s)
			return
		}
		*dst = &b
	})
}

// Duration is a field holding a duration as ParseDuration reads it.
func Duration(name string, dst *time.Duration) Field {
	return Read(name, func(v Value) {
		s, ok := v.Scalar()
		if !ok {
			return
		}
		d, err := ParseDuration(s)
		if err != nil {
			v.Fail("%v", err)
			return
		}
		*dst = d
	})
}

// Object is a field holding a mapping whose allowed keys are fields. Null is an empty mapping.
func Object(name string, fields ...Field) Field {
	return Read(name, func(v Value) { v.Mapping(fields...) })
}

// List is a field holding a list; item reads each element. Null is an empty list.
func List(name string, item func(v Value)) Field {
	return Read(name, func(v Value) { v.Each(item) })
}

// Labels is a field holding a mapping of label keys to values. A key set twice is an error; a
// null value is the empty string.
func Labels(name string, dst *map[string]string) Field {
	return Read(name, func(v Value) {
		if !v.usable() {
			return
		}
		n := v.node
		if n.Kind != yaml.MappingNode {
			v.Fail("must be a mapping of label keys to values, not a %s", kindName(n))
			return
		}
		out := make(map[string]string, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				v.d.report.FailAt(v.path, k.Line, "label keys must be plain strings, not a %s", kindName(k))
				continue
			}
			p := v.path + "[" + k.Value + "]"
			if _, dup := out[k.Value]; dup {
				v.d.report.FailAt(p, k.Line, "label %q is set twice", k.Value)
				continue
			}
			v.d.report.Lines[p] = k.Line
			s, _ := v.d.value(val, p).Scalar()
			out[k.Value] = s
		}
		*dst = out
	})
}

// Value is one YAML value being read, with the field path and line its errors (Fail) carry.
type Value struct {
	d    *decoder
	node *yaml.Node
	path string
}

func (d *decoder) value(n *yaml.Node, path string) Value { return Value{d: d, node: n, path: path} }

// Shape is what the value is: "mapping", "list", "value" (a scalar, null included) or "alias",
// for a field that takes more than one shape.
func (v Value) Shape() string { return kindName(v.node) }

// Fail records an error on the value's field and line.
func (v Value) Fail(format string, args ...any) {
	v.d.report.FailAt(v.path, v.node.Line, format, args...)
}

// usable reports whether v holds something to read: null is nothing, and aliases and unusual
// tags are refused.
func (v Value) usable() bool {
	n := v.node
	if n.Kind == yaml.AliasNode {
		v.Fail("aliases (*%s) are not supported: write the value out", n.Value)
		return false
	}
	switch n.ShortTag() {
	case "!!null":
		return false
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp", "!!map", "!!seq":
		return true
	}
	v.Fail("unsupported YAML tag %s", n.Tag)
	return false
}

// Scalar returns a single value's text; ok is false for null (nothing to set) and for errors.
func (v Value) Scalar() (s string, ok bool) {
	if !v.usable() {
		return "", false
	}
	if v.node.Kind != yaml.ScalarNode {
		v.Fail("must be a single value, not a %s", kindName(v.node))
		return "", false
	}
	return v.node.Value, true
}

// Int reads a whole number into dst; ok is false for null and for errors.
func (v Value) Int(dst *int) (ok bool) {
	s, ok := v.Scalar()
	if !ok {
		return false
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		v.Fail("must be a whole number, not %q", s)
		return false
	}
	*dst = n
	return true
}

// Mapping reads a mapping whose allowed keys are fields; null is an empty mapping. A key that
// is not a plain string, set twice, or not among fields is an error naming the allowed ones.
func (v Value) Mapping(fields ...Field) { v.d.mapping(v.node, v.path, fields) }

func (d *decoder) mapping(n *yaml.Node, path string, fields []Field) {
	v := d.value(n, path)
	if !v.usable() {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.report.FailAt(orDocument(path), n.Line, "must be a mapping, not a %s", kindName(n))
		return
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.report.FailAt(orDocument(path), k.Line, "keys must be plain strings, not a %s", kindName(k))
			continue
		}
		p := orDocument(joinPath(path, k.Value)) // an empty key at the top has no path of its own
		if seen[k.Value] {
			d.report.FailAt(p, k.Line, "field %q is set twice", k.Value)
			continue
		}
		seen[k.Value] = true
		var read func(Value)
		for _, f := range fields {
			if f.name == k.Value {
				read = f.read
			}
		}
		if read == nil {
			names := make([]string, len(fields))
			for i, f := range fields {
				names[i] = f.name
			}
			d.report.FailAt(p, k.Line, "unknown field %q (allowed here: %s)", k.Value, strings.Join(names, ", "))
			continue
		}
		d.report.Lines[p] = k.Line
		read(d.value(val, p))
	}
}

// Each calls item for every element of a list, whose path is the list's path and [index]. Null
// is an empty list.
func (v Value) Each(item func(v Value)) {
	if !v.usable() {
		return
	}
	if v.node.Kind != yaml.SequenceNode {
		v.Fail("must be a list, not a %s", kindName(v.node))
		return
	}
	for i, n := range v.node.Content {
		p := fmt.Sprintf("%s[%d]", v.path, i)
		v.d.report.Lines[p] = n.Line
		item(v.d.value(n, p))
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	default:
		return "value"
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orDocument(path string) string {
	if path == "" {
		return documentField
	}
	return path
}
