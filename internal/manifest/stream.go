package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
	"godwit.dev/godwit/internal/fault"
)

// Document is one document of a YAML stream, as it was written.
type Document struct {
	// Kind is the value of its kind field; "" when it has none or is not valid YAML.
	Kind string
	// Line is the line of the stream the document's text starts on: line n of Data is line
	// Line+n-1 of the stream.
	Line int
	// Data is the document's text, for its kind's Decode. For a stream of one document it is the
	// whole stream, comments and markers included, so its lines are the stream's.
	Data []byte

	kindLine int   // the stream line of the kind field, or of the document
	invalid  error // why the document is not YAML, with the stream's line
}

// KindOf returns the kind of the first document of data, or "" when it has none or is not
// valid YAML. It reads nothing else: the kind's Decode does.
func KindOf(data []byte) string {
	kind, _, _ := kindOf(data)
	return kind
}

// kindOf returns the kind and the line of its field; err says why data is not YAML.
func kindOf(data []byte) (kind string, line int, err error) {
	defer func() {
		if r := recover(); r != nil {
			kind, line, err = "", 0, &fault.FieldError{Field: documentField, Message: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return "", 0, nil
		}
		return "", 0, syntaxError(err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return "", doc.Line, nil
	}
	k, v := lookup(doc.Content[0], "kind")
	if k == nil || v.Kind != yaml.ScalarNode {
		return "", doc.Content[0].Line, nil
	}
	return v.Value, k.Line, nil
}

// Split cuts a YAML stream into its documents at the lines that start one (`---` at the start of
// a line, alone or followed by a space, a tab or content), which YAML forbids inside any value.
// A document with nothing but comments, markers and directives is left out; a stream of one
// document is returned whole.
func Split(data []byte) []Document {
	var docs []Document
	start, startLine := 0, 1
	cut := func(end int) {
		piece := data[start:end]
		if !blank(piece) {
			docs = append(docs, Document{Line: startLine, Data: piece})
		}
	}
	line := 1
	for i := 0; i < len(data); {
		end := bytes.IndexByte(data[i:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += i + 1
		}
		if i > start && isMarker(data[i:end]) {
			cut(i)
			start, startLine = i, line
		}
		i = end
		line++
	}
	cut(len(data))
	if len(docs) == 1 {
		docs[0].Line, docs[0].Data = 1, data
	}
	for i := range docs {
		d := &docs[i]
		var err error
		d.Kind, d.kindLine, err = kindOf(d.Data)
		d.kindLine = max(d.kindLine, 1) + d.Line - 1
		var fe *fault.FieldError
		if errors.As(err, &fe) {
			if fe.Line > 0 {
				fe.Line += d.Line - 1
			}
			d.invalid = fe
		}
	}
	return docs
}

// isMarker reports whether a line starts a document: `---` followed by nothing, a space, a tab
// or a line break.
func isMarker(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, []byte("---"))
	return ok && (len(rest) == 0 || strings.ContainsRune(" \t\r\n", rune(rest[0])))
}

// blank reports whether a piece of a stream holds no document content: only blank lines,
// comments, `---` and `...` markers and `%` directives.
func blank(piece []byte) bool {
	for l := range bytes.Lines(piece) {
		if isMarker(l) {
			l = l[3:]
		}
		l = bytes.TrimSpace(l)
		if len(l) > 0 && l[0] != '#' && l[0] != '%' && !bytes.Equal(l, []byte("...")) {
			return false
		}
	}
	return true
}

// Handler takes one document of its kind: typically the kind's Parse and Validate, then what
// the caller does with it (apply, dry-run, print).
type Handler func(doc Document) error

// Dispatch hands each document of a YAML stream (one or several) to the handler of its kind, in
// the order written, and stops at the first error. Before any handler runs it checks that every
// document is YAML and names a kind that has a handler, so a typo in the third document does
// not leave the first two applied; a caller that wants all or nothing of the handlers' own
// checks runs Dispatch twice, first with handlers that only validate.
//
// Errors are the handler's; in a stream of several documents they are wrapped with the
// document's number and first line ("document 2 (line 31): spec.steps[0].run (line 9): ..."),
// the inner line counting from that document's first line. A caller that takes a body of any
// kind (`godwit apply`, an endpoint) hands it here rather than looking at kind itself.
func Dispatch(data []byte, handlers map[string]Handler) error {
	known := strings.Join(slices.Sorted(maps.Keys(handlers)), ", ")
	docs := Split(data)
	if len(docs) == 0 {
		return &fault.FieldError{Field: documentField, Message: "empty document: expected one of " + known}
	}
	var r Report
	for _, d := range docs {
		switch {
		case d.invalid != nil:
			r.add(d.invalid)
		case d.Kind == "":
			r.FailAt("kind", d.kindLine, "is required (one of %s)", known)
		case handlers[d.Kind] == nil:
			r.FailAt("kind", d.kindLine, "unknown kind %q (one of %s)", d.Kind, known)
		}
	}
	if err := r.Err(); err != nil {
		return err
	}
	for i, d := range docs {
		if err := handlers[d.Kind](d); err != nil {
			if len(docs) > 1 {
				return fmt.Errorf("document %d (line %d): %w", i+1, d.Line, err)
			}
			return err
		}
	}
	return nil
}
