package sweep

import (
	"strings"
	"time"

	"godwit.dev/godwit/internal/manifest"
)

// Kind is the kind of a sweep document (apiVersion godwit.dev/v1).
const Kind = "Sweep"

// Spec values and limits.
const (
	MisfireSkip    = "skip"
	MisfireRunOnce = "run_once"
	// ResumeSkip (the default): firings that came due while the sweep was suspended are not run
	// when it is resumed; the schedule continues from the resume.
	ResumeSkip = "skip"
	// ResumeMisfire: on resume, the firings that came due while the sweep was suspended are
	// missed firings, and the misfire policy decides (skip: a missed record; run_once: one
	// catch-up run).
	ResumeMisfire = "misfire"
	OverlapSkip   = "skip"
	ActionReport  = "report"
	// ActionRemediate starts the named migration for the drifted agents of each run.
	ActionRemediate = "remediate"

	DefaultMaxSeconds = 300
	MaxMaxSeconds     = 24 * 60 * 60
	// MaxSpecBytes bounds a sweep document.
	MaxSpecBytes = 256 << 10
)

// kind is what the manifest decoder needs to know of a Sweep document.
var kind = manifest.Kind{Name: Kind, MaxBytes: MaxSpecBytes}

// Spec is a parsed sweep document.
//
//	apiVersion: godwit.dev/v1
//	kind: Sweep
//	metadata: {name: tls-drift, description: ...}
//	spec:
//	  schedule: "*/15 * * * *"   # cron; absent: only triggered by the API or the CLI
//	  timezone: Europe/Berlin    # IANA name (default UTC)
//	  misfire: skip              # skip | run_once: firings missed while no hub ran
//	  suspended: false           # true: no scheduled run fires (manual runs do); see docs/sweeps.md
//	  resumePolicy: skip         # skip | misfire: what resuming does with firings held back
//	  overlap: skip              # a firing while a run is in progress is recorded lock_skipped
//	  maxSeconds: 300            # the run's time budget (default 300)
//	  concurrency: 0             # agents checked at once; 0: all (default)
//	  selector: {matchLabels: {role: web}}
//	  check: {command: "...", timeout: 60s}  # exit 0 clean, 1 drifted, other error
//	  action: report             # report | remediate
//	  remediate: {migration: web-tls}        # with action: remediate
type Spec struct {
	APIVersion string
	Kind       string
	// Metadata gives the sweep its Name and Description.
	manifest.Metadata
	Schedule string
	Timezone string
	Misfire  string
	// Suspended is spec.suspended: nil when the document leaves it out (applying it then keeps
	// the sweep's stored state; see Service.Apply).
	Suspended    *bool
	ResumePolicy string
	Overlap      string
	MaxSeconds   int
	Concurrency  int
	Selector     manifest.LabelSelector
	Check        Check
	Action       string
	Remediate    Remediate

	lines manifest.Lines
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

// KindOf returns the kind of a YAML or JSON document, or "" if it has none: manifest.KindOf,
// which `godwit apply` uses to send a document to the right endpoint.
func KindOf(data []byte) string { return manifest.KindOf(data) }

// Parse reads one sweep document strictly (manifest.Kind.Decode: unknown fields, wrong shapes,
// aliases and a second document are errors naming the field and its line) and fills the
// defaults. Call Validate next.
func Parse(data []byte) (*Spec, error) {
	s := &Spec{Timezone: "UTC", Misfire: MisfireSkip, ResumePolicy: ResumeSkip, Overlap: OverlapSkip, MaxSeconds: DefaultMaxSeconds, Action: ActionReport}
	lines, err := kind.Decode(data, &s.Metadata,
		manifest.String("schedule", &s.Schedule),
		manifest.String("timezone", &s.Timezone),
		manifest.String("misfire", &s.Misfire),
		manifest.Bool("suspended", &s.Suspended),
		manifest.String("resumePolicy", &s.ResumePolicy),
		manifest.String("overlap", &s.Overlap),
		manifest.Int("maxSeconds", &s.MaxSeconds),
		manifest.Int("concurrency", &s.Concurrency),
		manifest.Selector("selector", &s.Selector),
		manifest.Object("check", manifest.String("command", &s.Check.Command), manifest.Duration("timeout", &s.Check.Timeout)),
		manifest.String("action", &s.Action),
		manifest.Object("remediate", manifest.String("migration", &s.Remediate.Migration)),
	)
	if err != nil {
		return nil, err
	}
	s.APIVersion, s.Kind, s.lines = manifest.APIVersion, Kind, lines
	return s, nil
}

// Validate checks the spec's semantics: name, cron expression, time zone, enums, budget,
// selector, check and action. It also resolves the time zone and schedule for Location and
// Cron. Whether a remediation's migration exists is for the caller to check (it needs the
// store).
func (s *Spec) Validate() error {
	r := manifest.Report{Lines: s.lines}
	r.Header(Kind, s.APIVersion, s.Kind, s.Metadata)
	s.loc = nil
	switch tz := s.Timezone; {
	case tz == "" || strings.EqualFold(tz, "local"):
		r.Fail("spec.timezone", "must name a time zone such as UTC or Europe/Berlin, not %q (the hub's local zone is not a stable choice)", tz)
	default:
		loc, err := time.LoadLocation(tz)
		if err != nil {
			r.Fail("spec.timezone", "unknown time zone %q (use an IANA name such as UTC or Europe/Berlin)", tz)
		} else {
			s.loc = loc
		}
	}
	s.cron = nil
	if s.Schedule != "" && s.loc != nil {
		c, err := ParseSchedule(s.Schedule, s.loc)
		if err != nil {
			r.Fail("spec.schedule", "invalid cron expression: %v", err)
		} else {
			s.cron = c
		}
	}
	manifest.Enum(&r, "spec.misfire", s.Misfire, MisfireSkip, MisfireRunOnce)
	manifest.Enum(&r, "spec.resumePolicy", s.ResumePolicy, ResumeSkip, ResumeMisfire)
	manifest.Enum(&r, "spec.overlap", s.Overlap, OverlapSkip)
	if s.MaxSeconds <= 0 || s.MaxSeconds > MaxMaxSeconds {
		r.Fail("spec.maxSeconds", "must be a positive number of seconds up to %d, not %d", MaxMaxSeconds, s.MaxSeconds)
	}
	if s.Concurrency < 0 {
		r.Fail("spec.concurrency", "must be 0 (every agent at once) or a positive number of agents, not %d", s.Concurrency)
	}
	r.Selector("spec.selector", s.Selector)
	if strings.TrimSpace(s.Check.Command) == "" {
		r.Fail("spec.check.command", "is required: the command each agent runs (exit 0 clean, 1 drifted, anything else an error)")
	} else {
		r.Command("spec.check.command", s.Check.Command)
	}
	if s.Check.Timeout != 0 && (s.Check.Timeout < time.Second || s.Check.Timeout > time.Duration(max(s.MaxSeconds, 1))*time.Second) {
		r.Fail("spec.check.timeout", "must be between 1s and the budget (maxSeconds: %d), not %s", s.MaxSeconds, manifest.FormatDuration(s.Check.Timeout))
	}
	manifest.Enum(&r, "spec.action", s.Action, ActionReport, ActionRemediate)
	switch {
	case s.Action == ActionRemediate:
		r.Name("spec.remediate.migration", s.Remediate.Migration)
	case s.Remediate.Migration != "":
		r.Fail("spec.remediate", "is only used with action: remediate (action is %q)", s.Action)
	}
	return r.Err()
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
		if s.ResumePolicy != ResumeSkip {
			out = append(out, "resumePolicy has no effect without a schedule")
		}
	}
	return out
}

// canonical is the spec with its defaults, in a fixed shape: what the hash covers and what a
// run's context snapshot records. Its JSON must not change (stored sweeps keep their hash): the
// selector's fields sit between concurrency and command.
type canonical struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Schedule    string `json:"schedule,omitempty"`
	Timezone    string `json:"timezone"`
	Misfire     string `json:"misfire"`
	Overlap     string `json:"overlap"`
	MaxSeconds  int    `json:"maxSeconds"`
	Concurrency int    `json:"concurrency"`
	manifest.LabelSelector
	Command   string `json:"command"`
	TimeoutMS int64  `json:"timeoutMS"`
	Action    string `json:"action"`
	Remediate string `json:"remediate,omitempty"`
	// ResumePolicy is left out when it is the default (skip), so that sweeps stored before it
	// existed keep their hash.
	ResumePolicy string `json:"resumePolicy,omitempty"`
}

func (s *Spec) canonical() canonical {
	resumePolicy := s.ResumePolicy
	if resumePolicy == ResumeSkip {
		resumePolicy = ""
	}
	sched := s.Schedule
	if s.cron != nil {
		sched = s.cron.String()
	}
	return canonical{Name: s.Name, Description: s.Description, Schedule: sched, Timezone: s.Timezone, Misfire: s.Misfire,
		Overlap: s.Overlap, MaxSeconds: s.MaxSeconds, Concurrency: s.Concurrency, LabelSelector: s.Selector.Canonical(),
		Command: s.Check.Command, TimeoutMS: s.Check.Timeout.Milliseconds(), Action: s.Action, Remediate: s.Remediate.Migration,
		ResumePolicy: resumePolicy}
}

// Hash is the hex SHA-256 of the canonical form (manifest.Hash): formatting, comments, key order
// and defaults written or left out do not change it. spec.suspended is not part of it: it is a
// state of the sweep (which `godwit sweep suspend|resume` change too), not a setting of its
// runs, and a firing's claim checks the hash.
func (s *Spec) Hash() string { return manifest.Hash(s.canonical()) }
