package sweep

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/spec"
)

// Kind is the kind of a sweep document (apiVersion godwit.dev/v1).
const Kind = "Sweep"

// Spec values and limits.
const (
	MisfireSkip    = "skip"
	MisfireRunOnce = "run_once"
	OverlapSkip    = "skip"
	ActionReport   = "report"
	// ActionRemediate starts the named migration for the drifted agents of each run.
	ActionRemediate = "remediate"

	DefaultMaxSeconds = 300
	MaxMaxSeconds     = 24 * 60 * 60
	// MaxSpecBytes bounds a sweep document.
	MaxSpecBytes = 256 << 10
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// Spec is a parsed sweep document.
//
//	apiVersion: godwit.dev/v1
//	kind: Sweep
//	metadata: {name: tls-drift, description: ...}
//	spec:
//	  schedule: "*/15 * * * *"   # cron; absent: only triggered by the API or the CLI
//	  timezone: Europe/Berlin    # IANA name (default UTC)
//	  misfire: skip              # skip | run_once: firings missed while no hub ran
//	  overlap: skip              # a firing while a run is in progress is recorded lock_skipped
//	  maxSeconds: 300            # the run's time budget (default 300)
//	  concurrency: 0             # agents checked at once; 0: all (default)
//	  selector: {matchLabels: {role: web}}
//	  check: {command: "...", timeout: 60s}  # exit 0 clean, 1 drifted, other error
//	  action: report             # report | remediate
//	  remediate: {migration: web-tls}        # with action: remediate
type Spec struct {
	APIVersion  string
	Kind        string
	Name        string
	Description string
	Schedule    string
	Timezone    string
	Misfire     string
	Overlap     string
	MaxSeconds  int
	Concurrency int
	Selector    spec.Selector
	Check       Check
	Action      string
	Remediate   Remediate

	lines map[string]int
	loc   *time.Location
	cron  *Schedule
}

// Check is the command each selected agent runs.
type Check struct {
	Command string
	// Timeout bounds the command on each agent (default: the budget); never more than what is
	// left of the run's budget when the check is sent.
	Timeout time.Duration
}

// Remediate names the migration a remediating sweep starts for its drifted agents.
type Remediate struct {
	Migration string
}

// KindOf returns the kind of a YAML or JSON document, or "" if it has none. `godwit apply`
// uses it to send a document to the right endpoint.
func KindOf(data []byte) string {
	var doc struct {
		Kind string `yaml:"kind"`
	}
	if yaml.Unmarshal(data, &doc) != nil {
		return ""
	}
	return doc.Kind
}

// Parse reads one sweep document strictly (unknown fields, wrong shapes, aliases and a second
// document are errors naming the field and its line) and fills the defaults. Call Validate
// next.
func Parse(data []byte) (*Spec, error) {
	if len(data) > MaxSpecBytes {
		return nil, fmt.Errorf("sweep spec is %d bytes, the limit is %d: %w", len(data), MaxSpecBytes, fault.ErrTooLarge)
	}
	root, err := document(data)
	if err != nil {
		return nil, err
	}
	// A document of another kind gets one clear error, not a list of unknown fields.
	for _, want := range []struct{ key, value string }{{"apiVersion", spec.APIVersion}, {"kind", Kind}} {
		for i := 0; i+1 < len(root.Content); i += 2 {
			if k, v := root.Content[i], root.Content[i+1]; k.Value == want.key && v.Value != want.value {
				return nil, &fault.FieldError{Field: want.key, Line: k.Line, Message: fmt.Sprintf("must be %s, not %q", want.value, v.Value)}
			}
		}
	}
	s := &Spec{Timezone: "UTC", Misfire: MisfireSkip, Overlap: OverlapSkip, MaxSeconds: DefaultMaxSeconds, Action: ActionReport}
	d := &decoder{lines: map[string]int{}}
	d.mapping(root, "", []field{
		{"apiVersion", d.text(&s.APIVersion)},
		{"kind", d.text(&s.Kind)},
		{"metadata", func(n *yaml.Node, p string) {
			d.mapping(n, p, []field{{"name", d.text(&s.Name)}, {"description", d.text(&s.Description)}})
		}},
		{"spec", func(n *yaml.Node, p string) {
			d.mapping(n, p, []field{
				{"schedule", d.text(&s.Schedule)},
				{"timezone", d.text(&s.Timezone)},
				{"misfire", d.text(&s.Misfire)},
				{"overlap", d.text(&s.Overlap)},
				{"maxSeconds", d.integer(&s.MaxSeconds)},
				{"concurrency", d.integer(&s.Concurrency)},
				{"selector", func(n *yaml.Node, p string) { d.selector(n, p, &s.Selector) }},
				{"check", func(n *yaml.Node, p string) {
					d.mapping(n, p, []field{{"command", d.text(&s.Check.Command)}, {"timeout", d.duration(&s.Check.Timeout)}})
				}},
				{"action", d.text(&s.Action)},
				{"remediate", func(n *yaml.Node, p string) {
					d.mapping(n, p, []field{{"migration", d.text(&s.Remediate.Migration)}})
				}},
			})
		}},
	})
	if err := errors.Join(d.errs...); err != nil {
		return nil, err
	}
	s.lines = d.lines
	return s, nil
}

func document(data []byte) (root *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, &fault.FieldError{Field: "document", Message: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &fault.FieldError{Field: "document", Message: "empty document: expected a Sweep"}
		}
		return nil, &fault.FieldError{Field: "document", Message: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &fault.FieldError{Field: "document", Line: extra.Line, Message: "more than one YAML document: a spec is exactly one Sweep"}
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, &fault.FieldError{Field: "document", Line: doc.Line, Message: "must be a mapping with apiVersion, kind, metadata and spec"}
	}
	return doc.Content[0], nil
}

// decoder walks a YAML node tree, recording each field's line.
type decoder struct {
	lines map[string]int
	errs  []error
}

type field struct {
	name   string
	decode func(n *yaml.Node, path string)
}

func (d *decoder) fail(path string, line int, format string, args ...any) {
	if len(d.errs) < 20 {
		d.errs = append(d.errs, &fault.FieldError{Field: path, Line: line, Message: fmt.Sprintf(format, args...)})
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *decoder) usable(n *yaml.Node, path string) bool {
	if n.Kind == yaml.AliasNode {
		d.fail(path, n.Line, "aliases (*%s) are not supported: write the value out", n.Value)
		return false
	}
	return !(n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func (d *decoder) mapping(n *yaml.Node, path string, fields []field) {
	if !d.usable(n, path) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(path, n.Line, "must be a mapping")
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if seen[k.Value] {
			d.fail(p, k.Line, "field %q is set twice", k.Value)
			continue
		}
		seen[k.Value] = true
		i := slices.IndexFunc(fields, func(f field) bool { return f.name == k.Value })
		if k.Kind != yaml.ScalarNode || i < 0 {
			names := make([]string, len(fields))
			for j, f := range fields {
				names[j] = f.name
			}
			d.fail(p, k.Line, "unknown field %q (allowed here: %s)", k.Value, strings.Join(names, ", "))
			continue
		}
		d.lines[p] = k.Line
		fields[i].decode(v, p)
	}
}

func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if !d.usable(n, path) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		d.fail(path, n.Line, "must be a single value")
		return "", false
	}
	return n.Value, true
}

func (d *decoder) text(dst *string) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		if s, ok := d.scalar(n, p); ok {
			*dst = s
		}
	}
}

func (d *decoder) integer(dst *int) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		s, ok := d.scalar(n, p)
		if !ok {
			return
		}
		v, err := strconv.Atoi(s)
		if err != nil {
			d.fail(p, n.Line, "must be a whole number, not %q", s)
			return
		}
		*dst = v
	}
}

func (d *decoder) duration(dst *time.Duration) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		s, ok := d.scalar(n, p)
		if !ok {
			return
		}
		v, err := spec.ParseDuration(s)
		if err != nil {
			d.fail(p, n.Line, "%v", err)
			return
		}
		*dst = v
	}
}

func (d *decoder) selector(n *yaml.Node, path string, sel *spec.Selector) {
	d.mapping(n, path, []field{
		{"matchLabels", func(n *yaml.Node, p string) {
			if !d.usable(n, p) {
				return
			}
			if n.Kind != yaml.MappingNode {
				d.fail(p, n.Line, "must be a mapping of label keys to values")
				return
			}
			sel.MatchLabels = map[string]string{}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if v, ok := d.scalar(n.Content[i+1], p+"["+k+"]"); ok {
					sel.MatchLabels[k] = v
				}
			}
		}},
		{"matchExpressions", func(n *yaml.Node, p string) {
			d.sequence(n, p, func(item *yaml.Node, ip string) {
				var r spec.Requirement
				var op string
				d.mapping(item, ip, []field{
					{"key", d.text(&r.Key)},
					{"operator", d.text(&op)},
					{"values", func(n *yaml.Node, vp string) {
						d.sequence(n, vp, func(v *yaml.Node, ep string) {
							if s, ok := d.scalar(v, ep); ok {
								r.Values = append(r.Values, s)
							}
						})
					}},
				})
				r.Operator = spec.Operator(op)
				sel.MatchExpressions = append(sel.MatchExpressions, r)
			})
		}},
	})
}

func (d *decoder) sequence(n *yaml.Node, path string, item func(*yaml.Node, string)) {
	if !d.usable(n, path) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n.Line, "must be a list")
		return
	}
	for i, v := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.lines[p] = v.Line
		item(v, p)
	}
}

// lineOf returns the line of path or of its closest recorded parent.
func (s *Spec) lineOf(path string) int {
	for path != "" {
		if l, ok := s.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// Validate checks the spec's semantics: name, cron expression, time zone, enums, budget,
// selector, check and action. It also resolves the time zone and schedule for Location and
// Cron. Whether a remediation's migration exists is for the caller to check (it needs the
// store).
func (s *Spec) Validate() error {
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, &fault.FieldError{Field: path, Line: s.lineOf(path), Message: fmt.Sprintf(format, args...)})
	}
	if s.APIVersion != spec.APIVersion {
		fail("apiVersion", "must be %s, not %q", spec.APIVersion, s.APIVersion)
	}
	if s.Kind != Kind {
		fail("kind", "must be %s, not %q", Kind, s.Kind)
	}
	checkName := func(path, v string) {
		switch {
		case v == "":
			fail(path, "is required")
		case len(v) > spec.MaxNameLength || !nameRE.MatchString(v):
			fail(path, "%q is not a valid name: use up to %d lowercase letters, digits and '-', starting and ending with a letter or digit", v, spec.MaxNameLength)
		}
	}
	checkName("metadata.name", s.Name)
	if !utf8.ValidString(s.Description) {
		fail("metadata.description", "must be valid UTF-8")
	}
	s.loc = nil
	switch tz := s.Timezone; {
	case tz == "" || strings.EqualFold(tz, "local"):
		fail("spec.timezone", "must name a time zone such as UTC or Europe/Berlin, not %q (the hub's local zone is not a stable choice)", tz)
	default:
		loc, err := time.LoadLocation(tz)
		if err != nil {
			fail("spec.timezone", "unknown time zone %q (use an IANA name such as UTC or Europe/Berlin)", tz)
		} else {
			s.loc = loc
		}
	}
	s.cron = nil
	if s.Schedule != "" && s.loc != nil {
		c, err := ParseSchedule(s.Schedule, s.loc)
		if err != nil {
			fail("spec.schedule", "invalid cron expression: %v", err)
		} else {
			s.cron = c
		}
	}
	enum := func(path, v string, allowed ...string) {
		if !slices.Contains(allowed, v) {
			fail(path, "must be one of %s, not %q", strings.Join(allowed, ", "), v)
		}
	}
	enum("spec.misfire", s.Misfire, MisfireSkip, MisfireRunOnce)
	enum("spec.overlap", s.Overlap, OverlapSkip)
	if s.MaxSeconds <= 0 || s.MaxSeconds > MaxMaxSeconds {
		fail("spec.maxSeconds", "must be a positive number of seconds up to %d, not %d", MaxMaxSeconds, s.MaxSeconds)
	}
	if s.Concurrency < 0 {
		fail("spec.concurrency", "must be 0 (every agent at once) or a positive number of agents, not %d", s.Concurrency)
	}
	for i, r := range s.Selector.MatchExpressions {
		p := fmt.Sprintf("spec.selector.matchExpressions[%d]", i)
		if r.Key == "" {
			fail(p+".key", "is required")
		}
		switch r.Operator {
		case spec.OpIn, spec.OpNotIn:
			if len(r.Values) == 0 {
				fail(p+".values", "operator %s needs at least one value", r.Operator)
			}
		case spec.OpExists, spec.OpDoesNotExist:
			if len(r.Values) > 0 {
				fail(p+".values", "operator %s takes no values", r.Operator)
			}
		default:
			fail(p+".operator", "must be one of In, NotIn, Exists, DoesNotExist, not %q", r.Operator)
		}
	}
	switch {
	case strings.TrimSpace(s.Check.Command) == "":
		fail("spec.check.command", "is required: the command each agent runs (exit 0 clean, 1 drifted, anything else an error)")
	case strings.ContainsRune(s.Check.Command, 0) || !utf8.ValidString(s.Check.Command):
		fail("spec.check.command", "must be valid UTF-8 without NUL bytes")
	}
	if s.Check.Timeout != 0 && (s.Check.Timeout < time.Second || s.Check.Timeout > time.Duration(max(s.MaxSeconds, 1))*time.Second) {
		fail("spec.check.timeout", "must be between 1s and the budget (maxSeconds: %d), not %s", s.MaxSeconds, s.Check.Timeout)
	}
	enum("spec.action", s.Action, ActionReport, ActionRemediate)
	switch {
	case s.Action == ActionRemediate:
		checkName("spec.remediate.migration", s.Remediate.Migration)
	case s.Remediate.Migration != "":
		fail("spec.remediate", "is only used with action: remediate (action is %q)", s.Action)
	}
	return errors.Join(errs...)
}

// Location is the validated time zone.
func (s *Spec) Location() *time.Location { return s.loc }

// Cron is the validated schedule, nil for a sweep without one.
func (s *Spec) Cron() *Schedule { return s.cron }

// CheckTimeout is the per-agent timeout: check.timeout, or the whole budget.
func (s *Spec) CheckTimeout() time.Duration {
	if s.Check.Timeout > 0 {
		return s.Check.Timeout
	}
	return time.Duration(s.MaxSeconds) * time.Second
}

// Warnings are worth showing when the spec is applied.
func (s *Spec) Warnings() []string {
	var out []string
	if s.Selector.Empty() {
		out = append(out, "selector is empty: the sweep checks every agent")
	}
	if s.Schedule == "" {
		out = append(out, "no schedule: the sweep runs only when triggered (POST /api/v1/sweeps/"+s.Name+"/runs or godwit sweep run)")
	}
	return out
}

// canonical is the spec with its defaults, in a fixed shape: what the hash covers and what a
// run's context snapshot records.
type canonical struct {
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Schedule    string            `json:"schedule,omitempty"`
	Timezone    string            `json:"timezone"`
	Misfire     string            `json:"misfire"`
	Overlap     string            `json:"overlap"`
	MaxSeconds  int               `json:"maxSeconds"`
	Concurrency int               `json:"concurrency"`
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
	Expressions []requirement     `json:"matchExpressions,omitempty"`
	Command     string            `json:"command"`
	TimeoutMS   int64             `json:"timeoutMS"`
	Action      string            `json:"action"`
	Remediate   string            `json:"remediate,omitempty"`
}

type requirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

func (s *Spec) canonical() canonical {
	var exprs []requirement
	for _, r := range s.Selector.MatchExpressions {
		exprs = append(exprs, requirement{Key: r.Key, Operator: string(r.Operator), Values: slices.Compact(slices.Sorted(slices.Values(r.Values)))})
	}
	slices.SortFunc(exprs, func(a, b requirement) int {
		if c := strings.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		if c := strings.Compare(a.Operator, b.Operator); c != 0 {
			return c
		}
		return slices.Compare(a.Values, b.Values)
	})
	sched := s.Schedule
	if s.cron != nil {
		sched = s.cron.String()
	}
	return canonical{Name: s.Name, Description: s.Description, Schedule: sched, Timezone: s.Timezone, Misfire: s.Misfire,
		Overlap: s.Overlap, MaxSeconds: s.MaxSeconds, Concurrency: s.Concurrency, MatchLabels: s.Selector.MatchLabels,
		Expressions: exprs, Command: s.Check.Command, TimeoutMS: s.Check.Timeout.Milliseconds(), Action: s.Action,
		Remediate: s.Remediate.Migration}
}

// Hash is the hex SHA-256 of the canonical form: formatting, comments, key order and defaults
// written or left out do not change it.
func (s *Spec) Hash() string {
	b, _ := json.Marshal(s.canonical())
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
