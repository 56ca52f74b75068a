package manifest

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
)

// LabelSelector picks agents by their labels, with Kubernetes semantics: every matchLabels pair
// and every expression must hold. An empty selector matches every agent. The tags are those of
// the canonical form (see Canonical).
type LabelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels,omitempty" json:"matchLabels,omitempty"`
	MatchExpressions []Requirement     `yaml:"matchExpressions,omitempty" json:"matchExpressions,omitempty"`
}

// Requirement is one label expression.
type Requirement struct {
	Key      string   `yaml:"key" json:"key"`
	Operator Operator `yaml:"operator" json:"operator"`
	// Values is non-empty for In and NotIn and empty for Exists and DoesNotExist.
	Values []string `yaml:"values,omitempty,flow" json:"values,omitempty"`
}

// Operator is a Requirement's operator.
type Operator string

// Operator values.
const (
	OpIn           Operator = "In"
	OpNotIn        Operator = "NotIn"
	OpExists       Operator = "Exists"
	OpDoesNotExist Operator = "DoesNotExist"
)

// operators lists the operators in the order error messages name them.
var operators = []Operator{OpIn, OpNotIn, OpExists, OpDoesNotExist}

// Empty reports whether the selector has no constraint at all, i.e. targets every agent. It is
// valid, but worth a warning.
func (s LabelSelector) Empty() bool {
	return len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

// Matches reports whether an agent with these labels is selected. A nil map is an agent without
// labels. An unknown operator matches nothing (validation refuses it anyway).
func (s LabelSelector) Matches(labels map[string]string) bool {
	for k, want := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != want {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		if !r.Matches(labels) {
			return false
		}
	}
	return true
}

// Matches reports whether the requirement holds for labels. As in Kubernetes, NotIn holds when the
// key is absent.
func (r Requirement) Matches(labels map[string]string) bool {
	v, ok := labels[r.Key]
	switch r.Operator {
	case OpIn:
		return ok && slices.Contains(r.Values, v)
	case OpNotIn:
		return !ok || !slices.Contains(r.Values, v)
	case OpExists:
		return ok
	case OpDoesNotExist:
		return !ok
	default:
		return false
	}
}

// Canonical returns the selector in a fixed form that selects the same agents: expressions
// sorted and without repeats (they are ANDed, so their order means nothing), each one's values
// sorted and without repeats, nil for what is empty. It is what a kind's canonical form holds.
func (s LabelSelector) Canonical() LabelSelector {
	var c LabelSelector
	if len(s.MatchLabels) > 0 {
		c.MatchLabels = maps.Clone(s.MatchLabels)
	}
	for _, r := range s.MatchExpressions {
		values := slices.Compact(slices.Sorted(slices.Values(r.Values)))
		if len(values) == 0 {
			values = nil
		}
		c.MatchExpressions = append(c.MatchExpressions, Requirement{Key: r.Key, Operator: r.Operator, Values: values})
	}
	slices.SortFunc(c.MatchExpressions, func(a, b Requirement) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Operator, b.Operator), slices.Compare(a.Values, b.Values))
	})
	c.MatchExpressions = slices.CompactFunc(c.MatchExpressions, func(a, b Requirement) bool {
		return a.Key == b.Key && a.Operator == b.Operator && slices.Equal(a.Values, b.Values)
	})
	return c
}

// Selector is a field holding a label selector: matchLabels and matchExpressions (key, operator,
// values).
func Selector(name string, dst *LabelSelector) Field {
	return Object(name,
		Labels("matchLabels", &dst.MatchLabels),
		List("matchExpressions", func(item Value) {
			var r Requirement
			item.Mapping(
				String("key", &r.Key),
				String("operator", &r.Operator),
				Read("values", func(v Value) {
					r.Values = []string{}
					v.Each(func(e Value) {
						s, _ := e.Scalar()
						r.Values = append(r.Values, s)
					})
				}),
			)
			dst.MatchExpressions = append(dst.MatchExpressions, r)
		}),
	)
}

// Selector checks a label selector at path: label keys present, text valid, operators known, and
// values given exactly to the operators that take them.
func (r *Report) Selector(path string, s LabelSelector) {
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		p := path + ".matchLabels[" + k + "]"
		if k == "" {
			r.Fail(p, "label key must not be empty")
		}
		r.Text(p, k)
		r.Text(p, s.MatchLabels[k])
	}
	for i, req := range s.MatchExpressions {
		p := fmt.Sprintf("%s.matchExpressions[%d]", path, i)
		if req.Key == "" {
			r.Fail(p+".key", "is required")
		}
		r.Text(p+".key", req.Key)
		for j, val := range req.Values {
			r.Text(fmt.Sprintf("%s.values[%d]", p, j), val)
		}
		switch req.Operator {
		case OpIn, OpNotIn:
			if len(req.Values) == 0 {
				r.Fail(p+".values", "operator %s needs at least one value", req.Operator)
			}
		case OpExists, OpDoesNotExist:
			if len(req.Values) > 0 {
				r.Fail(p+".values", "operator %s takes no values (remove values, or use In / NotIn)", req.Operator)
			}
		default:
			Enum(r, p+".operator", req.Operator, operators...)
		}
	}
}
