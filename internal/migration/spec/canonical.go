package spec

import (
	"strconv"

	"godwit.dev/godwit/internal/manifest"
)

// canonical is the normalized shape of a spec: every default written out, durations in Go
// notation, the selector in a fixed order. Field order is the serialization order.
type canonical struct {
	APIVersion string        `yaml:"apiVersion" json:"apiVersion"`
	Kind       string        `yaml:"kind" json:"kind"`
	Metadata   canonicalMeta `yaml:"metadata" json:"metadata"`
	Spec       canonicalSpec `yaml:"spec" json:"spec"`
}

type canonicalMeta struct {
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
}

type canonicalSpec struct {
	Selector       manifest.LabelSelector `yaml:"selector,omitempty" json:"selector"`
	FromVersion    string                 `yaml:"fromVersion,omitempty" json:"fromVersion,omitempty"`
	ToVersion      string                 `yaml:"toVersion" json:"toVersion"`
	Steps          []canonicalStep        `yaml:"steps" json:"steps"`
	Rollout        canonicalRollout       `yaml:"rollout" json:"rollout"`
	Timeouts       canonicalTimeouts      `yaml:"timeouts" json:"timeouts"`
	DeadlinePolicy DeadlinePolicy         `yaml:"deadlinePolicy" json:"deadlinePolicy"`
	OnTimeout      OnTimeout              `yaml:"onTimeout" json:"onTimeout"`
	Signature      string                 `yaml:"signature,omitempty" json:"signature,omitempty"`
}

type canonicalStep struct {
	Name     string `yaml:"name" json:"name"`
	Detect   string `yaml:"detect,omitempty" json:"detect,omitempty"`
	Run      string `yaml:"run" json:"run"`
	Verify   string `yaml:"verify,omitempty" json:"verify,omitempty"`
	Rollback string `yaml:"rollback,omitempty" json:"rollback,omitempty"`
	Timeout  string `yaml:"timeout" json:"timeout"`
}

type canonicalRollout struct {
	Canary           int            `yaml:"canary" json:"canary"`
	BatchSize        string         `yaml:"batchSize" json:"batchSize"`
	SuccessThreshold string         `yaml:"successThreshold,omitempty" json:"successThreshold,omitempty"`
	MaxFailures      *int           `yaml:"maxFailures,omitempty" json:"maxFailures,omitempty"`
	Approval         Approval       `yaml:"approval" json:"approval"`
	OnFailure        OnFailure      `yaml:"onFailure" json:"onFailure"`
	OnAgentFailure   OnAgentFailure `yaml:"onAgentFailure" json:"onAgentFailure"`
}

type canonicalTimeouts struct {
	Assignment string `yaml:"assignment" json:"assignment"`
	Migration  string `yaml:"migration" json:"migration"`
}

func (m *Migration) canonical() canonical {
	s := m.Spec
	c := canonical{
		APIVersion: m.APIVersion,
		Kind:       m.Kind,
		Metadata:   canonicalMeta{Name: m.Metadata.Name, Description: m.Metadata.Description},
		Spec: canonicalSpec{
			Selector:    s.Selector.Canonical(),
			FromVersion: s.FromVersion,
			ToVersion:   s.ToVersion,
			Steps:       make([]canonicalStep, len(s.Steps)),
			Rollout: canonicalRollout{
				Canary:         s.Rollout.Canary,
				BatchSize:      s.Rollout.BatchSize.String(),
				MaxFailures:    s.Rollout.MaxFailures,
				Approval:       s.Rollout.Approval,
				OnFailure:      s.Rollout.OnFailure,
				OnAgentFailure: s.Rollout.OnAgentFailure,
			},
			Timeouts: canonicalTimeouts{
				Assignment: manifest.FormatDuration(s.Timeouts.Assignment),
				Migration:  manifest.FormatDuration(s.Timeouts.Migration),
			},
			DeadlinePolicy: s.DeadlinePolicy,
			OnTimeout:      s.OnTimeout,
			Signature:      s.Signature,
		},
	}
	for i, st := range s.Steps {
		c.Spec.Steps[i] = canonicalStep{
			Name: st.Name, Detect: st.Detect, Run: st.Run, Verify: st.Verify, Rollback: st.Rollback,
			Timeout: manifest.FormatDuration(st.Timeout),
		}
	}
	if s.Rollout.SuccessThreshold != 0 {
		c.Spec.Rollout.SuccessThreshold = strconv.Itoa(s.Rollout.SuccessThreshold) + "%"
	}
	return c
}

// Canonical renders the spec as normalized YAML: defaults written out, fields in a fixed order,
// no comments, the selector sorted. Parsing it gives a spec with the same Hash. It is meant for
// storage and for `godwit get -o yaml`; an error is possible only for a spec that does not
// validate.
func (m *Migration) Canonical() ([]byte, error) { return manifest.Encode(m.canonical()) }

// Hash returns the hex SHA-256 of the canonical form (manifest.Hash), so applying the same spec
// twice can be recognised as a no-op and a changed spec as a change. It ignores YAML formatting,
// comments, key order, defaults written or omitted, and the order of selector expressions and
// values; it covers everything else, the description included.
func (m *Migration) Hash() string { return manifest.Hash(m.canonical()) }
