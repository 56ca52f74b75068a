package spec

import "slices"

// Selector picks agents by their labels, with Kubernetes semantics: every matchLabels pair and
// every expression must hold. An empty selector matches every agent.
type Selector struct {
	MatchLabels      map[string]string
	MatchExpressions []Requirement
}

// Requirement is one label expression.
type Requirement struct {
	Key      string
	Operator Operator
	// Values is non-empty for In and NotIn and empty for Exists and DoesNotExist.
	Values []string
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

// Empty reports whether the selector has no constraint at all, i.e. targets every agent. It is
// valid, but worth a warning.
func (s Selector) Empty() bool {
	return len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

// Matches reports whether an agent with these labels is selected. A nil map is an agent without
// labels. An unknown operator matches nothing (Validate refuses it anyway).
func (s Selector) Matches(labels map[string]string) bool {
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
