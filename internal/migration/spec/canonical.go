package spec

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"
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
	Selector       canonicalSelector `yaml:"selector,omitempty" json:"selector"`
	FromVersion    string            `yaml:"fromVersion,omitempty" json:"fromVersion,omitempty"`
	ToVersion      string            `yaml:"toVersion" json:"toVersion"`
	Steps          []canonicalStep   `yaml:"steps" json:"steps"`
	Rollout        canonicalRollout  `yaml:"rollout" json:"rollout"`
	Timeouts       canonicalTimeouts `yaml:"timeouts" json:"timeouts"`
	DeadlinePolicy DeadlinePolicy    `yaml:"deadlinePolicy" json:"deadlinePolicy"`
	OnTimeout      OnTimeout         `yaml:"onTimeout" json:"onTimeout"`
}

type canonicalSelector struct {
	MatchLabels      map[string]string      `yaml:"matchLabels,omitempty" json:"matchLabels,omitempty"`
	MatchExpressions []canonicalRequirement `yaml:"matchExpressions,omitempty" json:"matchExpressions,omitempty"`
}

type canonicalRequirement struct {
	Key      string   `yaml:"key" json:"key"`
	Operator Operator `yaml:"operator" json:"operator"`
	Values   []string `yaml:"values,omitempty,flow" json:"values,omitempty"`
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
				Assignment: fmtDuration(s.Timeouts.Assignment),
				Migration:  fmtDuration(s.Timeouts.Migration),
			},
			DeadlinePolicy: s.DeadlinePolicy,
			OnTimeout:      s.OnTimeout,
		},
	}
	if len(s.Selector.MatchLabels) > 0 {
		c.Spec.Selector.MatchLabels = maps.Clone(s.Selector.MatchLabels)
	}
	for _, r := range s.Selector.MatchExpressions {
		values := slices.Compact(slices.Sorted(slices.Values(r.Values)))
		if len(values) == 0 {
			values = nil
		}
		c.Spec.Selector.MatchExpressions = append(c.Spec.Selector.MatchExpressions, canonicalRequirement{Key: r.Key, Operator: r.Operator, Values: values})
	}
	// Expressions are ANDed: their order means nothing, so it must not change the hash.
	slices.SortFunc(c.Spec.Selector.MatchExpressions, func(a, b canonicalRequirement) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Operator, b.Operator), slices.Compare(a.Values, b.Values))
	})
	c.Spec.Selector.MatchExpressions = slices.CompactFunc(c.Spec.Selector.MatchExpressions, func(a, b canonicalRequirement) bool {
		return a.Key == b.Key && a.Operator == b.Operator && slices.Equal(a.Values, b.Values)
	})
	for i, st := range s.Steps {
		c.Spec.Steps[i] = canonicalStep{
			Name: st.Name, Detect: st.Detect, Run: st.Run, Verify: st.Verify, Rollback: st.Rollback,
			Timeout: fmtDuration(st.Timeout),
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
func (m *Migration) Canonical() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(m.canonical()); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Hash returns the hex SHA-256 of the canonical form, so applying the same spec twice can be
// recognised as a no-op and a changed spec as a change. It ignores YAML formatting, comments, key
// order, defaults written or omitted, and the order of selector expressions and values; it
// covers everything else, the description included.
//
// The hashed bytes are the canonical form as JSON (encoding/json, sorted map keys), not YAML, so
// the hash does not move if the YAML library changes how it formats.
func (m *Migration) Hash() string {
	b, err := json.Marshal(m.canonical())
	if err != nil {
		// Only strings, ints and maps of strings: Marshal cannot fail.
		panic("spec: canonical form does not marshal: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
