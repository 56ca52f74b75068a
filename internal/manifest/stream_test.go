package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/fault"
)

func TestKindOf(t *testing.T) {
	for src, want := range map[string]string{
		"apiVersion: godwit.dev/v1\nkind: Sweep\n":       "Sweep",
		`{"kind": "Migration", "spec": {}}`:              "Migration",
		"kind: Sweep\n---\nkind: Migration\n":            "Sweep",
		"# only a comment\n":                             "",
		"":                                               "",
		"kind: [Sweep]\n":                                "",
		"- kind: Sweep\n":                                "",
		"kind: Sweep\n  bad: indentation\n":              "",
		"metadata: {name: x}\n":                          "",
		"kind: Sweep\nspec: {selector: *undefined}\n":    "",
		"kind: Sweep\nspec: {check: {command: \"x\"}}\n": "Sweep",
	} {
		if got := KindOf([]byte(src)); got != want {
			t.Errorf("KindOf(%q) = %q, want %q", src, got, want)
		}
	}
}

func TestSplit(t *testing.T) {
	one := "# the fleet's web tier\napiVersion: godwit.dev/v1\nkind: Sweep\n"
	if docs := Split([]byte(one)); len(docs) != 1 || string(docs[0].Data) != one || docs[0].Line != 1 || docs[0].Kind != "Sweep" {
		t.Fatalf("one document: %+v", docs)
	}
	// A single document after a comment and a marker is still the whole input: its lines are
	// the input's.
	lead := "# header\n---\nkind: Migration\n...\n"
	if docs := Split([]byte(lead)); len(docs) != 1 || string(docs[0].Data) != lead || docs[0].Line != 1 {
		t.Fatalf("leading marker: %+v", docs)
	}
	stream := "# a stream\n" + // 1
		"---\n" + // 2
		"kind: Migration\n" + // 3
		"spec: {run: \"--- not a marker\"}\n" + // 4
		"--- # the second\n" + // 5
		"kind: Sweep\n" + // 6
		"---\n" + // 7
		"# nothing but a comment\n" + // 8
		"---\n" + // 9
		"--- {kind: Migration}\n" + // 10
		"---\tkind: Sweep\n" + // 11
		"---x: 1\n" + // 12: not a marker
		"---\n" // 13
	docs := Split([]byte(stream))
	want := []struct {
		line int
		kind string
		data string
	}{
		{2, "Migration", "---\nkind: Migration\nspec: {run: \"--- not a marker\"}\n"},
		{5, "Sweep", "--- # the second\nkind: Sweep\n"},
		{10, "Migration", "--- {kind: Migration}\n"},
		{11, "", "---\tkind: Sweep\n---x: 1\n"},
	}
	if len(docs) != len(want) {
		t.Fatalf("got %d documents, want %d: %+v", len(docs), len(want), docs)
	}
	for i, w := range want {
		d := docs[i]
		if d.Line != w.line || d.Kind != w.kind || string(d.Data) != w.data {
			t.Errorf("document %d = {line %d, kind %q, %q}, want {line %d, kind %q, %q}", i, d.Line, d.Kind, d.Data, w.line, w.kind, w.data)
		}
	}
	if docs := Split([]byte("---\n# empty\n---\n...\n")); len(docs) != 0 {
		t.Fatalf("blank stream: %+v", docs)
	}
}

func TestDispatch(t *testing.T) {
	var got []string
	record := func(kind string) Handler {
		return func(d Document) error {
			got = append(got, fmt.Sprintf("%s@%d", kind, d.Line))
			if strings.Contains(string(d.Data), "fail") {
				return &fault.FieldError{Field: "spec.x", Line: 2, Message: "refused"}
			}
			return nil
		}
	}
	handlers := map[string]Handler{"Migration": record("Migration"), "Sweep": record("Sweep")}
	run := func(src string) error {
		got = nil
		return Dispatch([]byte(src), handlers)
	}

	if err := run("kind: Sweep\nspec: {}\n"); err != nil || strings.Join(got, " ") != "Sweep@1" {
		t.Fatalf("one document: %v, handled %v", err, got)
	}
	if err := run("kind: Migration\n---\nkind: Sweep\n---\nkind: Migration\n"); err != nil || strings.Join(got, " ") != "Migration@1 Sweep@2 Migration@4" {
		t.Fatalf("three documents: %v, handled %v", err, got)
	}

	// A single document's errors are the handler's, unchanged.
	err := run("kind: Sweep\nspec: fail\n")
	var fe *fault.FieldError
	if !errors.As(err, &fe) || err.Error() != "spec.x (line 2): refused" {
		t.Fatalf("single document error = %v", err)
	}
	// In a stream they name the document and where it starts; the first error stops the rest.
	err = run("kind: Sweep\n---\nkind: Migration\nspec: fail\n---\nkind: Sweep\n")
	if !errors.Is(err, fault.ErrInvalid) || err.Error() != "document 2 (line 2): spec.x (line 2): refused" || strings.Join(got, " ") != "Sweep@1 Migration@2" {
		t.Fatalf("stream error = %v, handled %v", err, got)
	}

	// Documents no handler takes are refused before any handler runs, with the stream's lines.
	for _, tc := range []struct{ src, want string }{
		{"kind: Sweep\n---\nkind: Widget\n", `kind (line 3): unknown kind "Widget" (one of Migration, Sweep)`},
		{"kind: Sweep\n---\nmetadata: {name: x}\n", "kind (line 3): is required (one of Migration, Sweep)"},
		{"kind: Sweep\n---\nkind: Sweep\n  bad: indentation\n", "document (line 4): invalid YAML"},
		{"# nothing\n", "document: empty document: expected one of Migration, Sweep"},
	} {
		err := run(tc.src)
		if !errors.Is(err, fault.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || len(got) != 0 {
			t.Errorf("Dispatch(%q) = %v, handled %v; want %q and nothing handled", tc.src, err, got, tc.want)
		}
	}
}

// FuzzSplit checks that Split never panics and cuts a stream into documents that are the
// stream's own lines, at the line each says, of the kind KindOf finds; and that Dispatch refuses
// only with invalid-input errors.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{
		"kind: Sweep\n", "# c\n---\nkind: Migration\n---\nkind: Sweep\n", "--- {kind: Sweep}\n---\tkind: x\n",
		"---\n...\n---\n", "a: \"\n--- x\n\"\n", "kind: Sweep\n---x\n--- \n", "\r\n---\r\nkind: Sweep\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs := Split(data)
		lines := bytes.SplitAfter(data, []byte("\n"))
		if len(docs) == 1 && !bytes.Equal(docs[0].Data, data) {
			t.Fatalf("a single document is not the whole input: %q", docs[0].Data)
		}
		next := 1
		for _, d := range docs {
			if d.Line < next {
				t.Fatalf("document at line %d overlaps the previous one (ends before line %d)", d.Line, next)
			}
			own := bytes.SplitAfter(d.Data, []byte("\n"))
			if len(d.Data) == 0 || d.Line-1+len(own) > len(lines) {
				t.Fatalf("document at line %d (%q) is not within the input", d.Line, d.Data)
			}
			for i, l := range own {
				if i == len(own)-1 && len(l) == 0 {
					break
				}
				if !bytes.Equal(l, lines[d.Line-1+i]) {
					t.Fatalf("line %d of the document at line %d is %q, the input's is %q", i+1, d.Line, l, lines[d.Line-1+i])
				}
			}
			next = d.Line + len(own) - 1
			if d.Kind != KindOf(d.Data) {
				t.Fatalf("document at line %d: kind %q, KindOf says %q", d.Line, d.Kind, KindOf(d.Data))
			}
		}
		err := Dispatch(data, map[string]Handler{"Sweep": func(Document) error { return nil }})
		if err != nil && !errors.Is(err, fault.ErrInvalid) {
			t.Fatalf("Dispatch error %v is not invalid", err)
		}
	})
}
