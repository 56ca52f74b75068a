package spec

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

// documentField is the Field of errors about the document as a whole (syntax, several documents,
// not a mapping).
const documentField = "document"

// maxErrors bounds how many errors one Parse or Validate reports, so a garbage input does not
// produce a garbage-sized message.
const maxErrors = 20

// Parse reads exactly one YAML (or JSON) document holding a Migration. It is strict: unknown and
// repeated fields, values of the wrong shape, bad durations and percentages, aliases, a second
// document and a kind or apiVersion other than Migration / godwit.dev/v1 are errors. Absent
// fields take their defaults. Parse does not run Validate; call it next.
//
// Errors are *fault.FieldError values (joined when there are several) naming the field path and
// its line; an input over MaxSpecBytes wraps fault.ErrTooLarge.
func Parse(data []byte) (*Migration, error) {
	if len(data) > MaxSpecBytes {
		return nil, fmt.Errorf("migration spec is %d bytes, the limit is %d: %w", len(data), MaxSpecBytes, fault.ErrTooLarge)
	}
	root, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	if err := checkKind(root); err != nil {
		return nil, err
	}
	d := &decoder{lines: map[string]int{}}
	m := withDefaults()
	d.migration(root, m)
	if err := joinErrors(d.errs); err != nil {
		return nil, err
	}
	if m.Spec.Rollout.SuccessThreshold == 0 && m.Spec.Rollout.MaxFailures == nil {
		zero := 0
		m.Spec.Rollout.MaxFailures = &zero
	}
	m.lines = d.lines
	return m, nil
}

// withDefaults returns a Migration holding every default; decoding overwrites what the document
// sets.
func withDefaults() *Migration {
	return &Migration{Spec: Spec{
		Rollout: Rollout{
			BatchSize:      BatchSize{Percent: 100},
			Approval:       ApprovalAuto,
			OnFailure:      OnFailurePause,
			OnAgentFailure: OnAgentFailureRollback,
		},
		Timeouts:       Timeouts{Assignment: DefaultAssignmentTimeout, Migration: DefaultMigrationTimeout},
		DeadlinePolicy: DeadlineActive,
		OnTimeout:      OnTimeoutPause,
	}}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseDocument returns the root node of the only document in data.
func parseDocument(data []byte) (root *yaml.Node, err error) {
	// The YAML library has panicked on hostile input in the past; a spec comes from the API, so
	// a panic here must be an invalid spec, not a dead hub.
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, &fault.FieldError{Field: documentField, Message: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &fault.FieldError{Field: documentField, Message: "empty document: expected a Migration"}
		}
		return nil, syntaxError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(err)
	default:
		return nil, &fault.FieldError{Field: documentField, Line: extra.Line, Message: "more than one YAML document: a spec is exactly one Migration"}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, &fault.FieldError{Field: documentField, Line: doc.Line, Message: "empty document: expected a Migration"}
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

// checkKind refuses a document that is not a godwit.dev/v1 Migration before looking at anything
// else, so that a wrong file gives one clear error instead of a list of unknown fields.
func checkKind(root *yaml.Node) error {
	if root.Kind != yaml.MappingNode {
		return &fault.FieldError{Field: documentField, Line: root.Line, Message: "must be a mapping with apiVersion, kind, metadata and spec"}
	}
	var errs []error
	for _, want := range []struct{ key, value string }{{"apiVersion", APIVersion}, {"kind", Kind}} {
		k, v := lookup(root, want.key)
		switch {
		case k == nil:
			errs = append(errs, &fault.FieldError{Field: want.key, Line: root.Line, Message: fmt.Sprintf("is required (must be %s)", want.value)})
		case v.Kind != yaml.ScalarNode || v.Value != want.value:
			got := v.Value
			if v.Kind != yaml.ScalarNode {
				got = kindName(v)
			}
			errs = append(errs, &fault.FieldError{Field: want.key, Line: k.Line, Message: fmt.Sprintf("must be %s, not %q", want.value, got)})
		}
	}
	return joinErrors(errs)
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

// decoder walks the node tree into a Migration, recording the line of every field it reads.
type decoder struct {
	lines map[string]int
	errs  []error
}

// decodeFunc decodes one field's value node, whose path is path.
type decodeFunc func(n *yaml.Node, path string)

type field struct {
	name   string
	decode decodeFunc
}

func (d *decoder) fail(path string, line int, format string, args ...any) {
	if len(d.errs) < maxErrors {
		d.errs = append(d.errs, &fault.FieldError{Field: path, Line: line, Message: fmt.Sprintf(format, args...)})
	}
}

func (d *decoder) migration(root *yaml.Node, m *Migration) {
	d.mapping(root, "", []field{
		{"apiVersion", text(d, &m.APIVersion)},
		{"kind", text(d, &m.Kind)},
		{"metadata", func(n *yaml.Node, p string) {
			d.mapping(n, p, []field{
				{"name", text(d, &m.Metadata.Name)},
				{"description", text(d, &m.Metadata.Description)},
			})
		}},
		{"spec", func(n *yaml.Node, p string) { d.spec(n, p, &m.Spec) }},
	})
}

func (d *decoder) spec(n *yaml.Node, path string, s *Spec) {
	d.mapping(n, path, []field{
		{"selector", func(n *yaml.Node, p string) { d.selector(n, p, &s.Selector) }},
		{"fromVersion", text(d, &s.FromVersion)},
		{"toVersion", text(d, &s.ToVersion)},
		{"steps", func(n *yaml.Node, p string) {
			d.sequence(n, p, func(item *yaml.Node, ip string) {
				st := Step{Timeout: DefaultStepTimeout}
				d.mapping(item, ip, []field{
					{"name", text(d, &st.Name)},
					{"detect", text(d, &st.Detect)},
					{"run", text(d, &st.Run)},
					{"verify", text(d, &st.Verify)},
					{"rollback", text(d, &st.Rollback)},
					{"timeout", d.duration(&st.Timeout)},
				})
				s.Steps = append(s.Steps, st)
			})
		}},
		{"rollout", func(n *yaml.Node, p string) { d.rollout(n, p, &s.Rollout) }},
		{"timeouts", func(n *yaml.Node, p string) {
			d.mapping(n, p, []field{
				{"assignment", d.duration(&s.Timeouts.Assignment)},
				{"migration", d.duration(&s.Timeouts.Migration)},
			})
		}},
		{"deadlinePolicy", text(d, &s.DeadlinePolicy)},
		{"onTimeout", text(d, &s.OnTimeout)},
	})
}

func (d *decoder) selector(n *yaml.Node, path string, sel *Selector) {
	d.mapping(n, path, []field{
		{"matchLabels", func(n *yaml.Node, p string) { d.labels(n, p, &sel.MatchLabels) }},
		{"matchExpressions", func(n *yaml.Node, p string) {
			d.sequence(n, p, func(item *yaml.Node, ip string) {
				var r Requirement
				d.mapping(item, ip, []field{
					{"key", text(d, &r.Key)},
					{"operator", text(d, &r.Operator)},
					{"values", func(n *yaml.Node, p string) {
						r.Values = []string{}
						d.sequence(n, p, func(v *yaml.Node, vp string) {
							s, _ := d.scalar(v, vp)
							r.Values = append(r.Values, s)
						})
					}},
				})
				sel.MatchExpressions = append(sel.MatchExpressions, r)
			})
		}},
	})
}

func (d *decoder) rollout(n *yaml.Node, path string, r *Rollout) {
	d.mapping(n, path, []field{
		{"canary", func(n *yaml.Node, p string) { d.integer(n, p, &r.Canary) }},
		{"batchSize", func(n *yaml.Node, p string) {
			s, ok := d.scalar(n, p)
			if !ok {
				return
			}
			if strings.HasSuffix(s, "%") {
				if pct, ok := d.percent(n, p, s); ok {
					r.BatchSize = BatchSize{Percent: pct}
				}
				return
			}
			c, err := strconv.Atoi(s)
			if err != nil {
				d.fail(p, n.Line, "must be a number of agents (10) or a percentage of the matched agents (25%%), not %q", s)
				return
			}
			r.BatchSize = BatchSize{Count: c}
		}},
		{"successThreshold", func(n *yaml.Node, p string) {
			s, ok := d.scalar(n, p)
			if !ok {
				return
			}
			if !strings.HasSuffix(s, "%") {
				d.fail(p, n.Line, "must be a percentage of the matched agents such as 90%%, not %q (for a count of failures use maxFailures)", s)
				return
			}
			if pct, ok := d.percent(n, p, s); ok {
				r.SuccessThreshold = pct
			}
		}},
		{"maxFailures", func(n *yaml.Node, p string) {
			var v int
			if d.integer(n, p, &v) {
				r.MaxFailures = &v
			}
		}},
		{"approval", text(d, &r.Approval)},
		{"onFailure", text(d, &r.OnFailure)},
		{"onAgentFailure", text(d, &r.OnAgentFailure)},
	})
}

// usable reports whether n can be decoded at all: aliases and unusual tags are refused.
func (d *decoder) usable(n *yaml.Node, path string) bool {
	if n.Kind == yaml.AliasNode {
		d.fail(path, n.Line, "aliases (*%s) are not supported: write the value out", n.Value)
		return false
	}
	switch n.ShortTag() {
	case "!!str", "!!int", "!!float", "!!bool", "!!null", "!!timestamp", "!!map", "!!seq":
		return true
	}
	d.fail(path, n.Line, "unsupported YAML tag %s", n.Tag)
	return false
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

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

// mapping decodes a mapping whose allowed keys are fields. Null is an empty mapping.
func (d *decoder) mapping(n *yaml.Node, path string, fields []field) {
	if !d.usable(n, path) || isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(orDocument(path), n.Line, "must be a mapping, not a %s", kindName(n))
		return
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.fail(orDocument(path), k.Line, "keys must be plain strings, not a %s", kindName(k))
			continue
		}
		p := joinPath(path, k.Value)
		if seen[k.Value] {
			d.fail(p, k.Line, "field %q is set twice", k.Value)
			continue
		}
		seen[k.Value] = true
		var decode decodeFunc
		for _, f := range fields {
			if f.name == k.Value {
				decode = f.decode
			}
		}
		if decode == nil {
			names := make([]string, len(fields))
			for i, f := range fields {
				names[i] = f.name
			}
			d.fail(p, k.Line, "unknown field %q (allowed here: %s)", k.Value, strings.Join(names, ", "))
			continue
		}
		d.lines[p] = k.Line
		decode(v, p)
	}
}

// sequence calls item for each element of a list. Null is an empty list.
func (d *decoder) sequence(n *yaml.Node, path string, item decodeFunc) {
	if !d.usable(n, path) || isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n.Line, "must be a list, not a %s", kindName(n))
		return
	}
	for i, v := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.lines[p] = v.Line
		item(v, p)
	}
}

// labels decodes a map of label key → value.
func (d *decoder) labels(n *yaml.Node, path string, dst *map[string]string) {
	if !d.usable(n, path) || isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(path, n.Line, "must be a mapping of label keys to values, not a %s", kindName(n))
		return
	}
	out := make(map[string]string, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.fail(path, k.Line, "label keys must be plain strings, not a %s", kindName(k))
			continue
		}
		p := path + "[" + k.Value + "]"
		if _, dup := out[k.Value]; dup {
			d.fail(p, k.Line, "label %q is set twice", k.Value)
			continue
		}
		d.lines[p] = k.Line
		s, _ := d.scalar(v, p)
		out[k.Value] = s
	}
	*dst = out
}

// scalar returns a scalar's text; ok is false for null (nothing to set) and for errors.
func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if !d.usable(n, path) || isNull(n) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		d.fail(path, n.Line, "must be a single value, not a %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

// text decodes a string field (or a string-typed enum; Validate checks its value).
func text[T ~string](d *decoder, dst *T) decodeFunc {
	return func(n *yaml.Node, path string) {
		if s, ok := d.scalar(n, path); ok {
			*dst = T(s)
		}
	}
}

func (d *decoder) integer(n *yaml.Node, path string, dst *int) bool {
	s, ok := d.scalar(n, path)
	if !ok {
		return false
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		d.fail(path, n.Line, "must be a whole number, not %q", s)
		return false
	}
	*dst = v
	return true
}

// percent parses "N%" with N in 1..100. The range is checked here because 0% would otherwise be
// indistinguishable from an absent value.
func (d *decoder) percent(n *yaml.Node, path, s string) (int, bool) {
	v, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	if err != nil {
		d.fail(path, n.Line, "%q is not a percentage (write e.g. 25%%)", s)
		return 0, false
	}
	if v < 1 || v > 100 {
		d.fail(path, n.Line, "percentage must be between 1%% and 100%%, not %s", s)
		return 0, false
	}
	return v, true
}

func (d *decoder) duration(dst *time.Duration) decodeFunc {
	return func(n *yaml.Node, path string) {
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		v, err := ParseDuration(s)
		if err != nil {
			d.fail(path, n.Line, "%v", err)
			return
		}
		*dst = v
	}
}

// maxDays keeps "Nd" within time.Duration's range (about 292 years).
const maxDays = 100_000

// ParseDuration reads a Go duration (90s, 5m, 1h30m) or a whole number of days (7d).
func ParseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok && days != "" && strings.Trim(days, "0123456789") == "" {
		n, err := strconv.Atoi(days)
		if err != nil || n > maxDays {
			return 0, fmt.Errorf("%q is too long a duration", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write e.g. 30s, 5m, 4h or 7d)", s)
	}
	return v, nil
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

// joinErrors returns nil, the only error, or all of them joined.
func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	default:
		return errors.Join(errs...)
	}
}
