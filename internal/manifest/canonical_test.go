package manifest

import (
	"reflect"
	"testing"
)

func TestSelectorCanonical(t *testing.T) {
	s := LabelSelector{
		MatchLabels: map[string]string{},
		MatchExpressions: []Requirement{
			{Key: "site", Operator: OpIn, Values: []string{"b", "a", "b"}},
			{Key: "legacy", Operator: OpDoesNotExist, Values: []string{}},
			{Key: "site", Operator: OpIn, Values: []string{"a", "b"}},
			{Key: "env", Operator: OpNotIn, Values: []string{"dev"}},
		},
	}
	want := LabelSelector{MatchExpressions: []Requirement{
		{Key: "env", Operator: OpNotIn, Values: []string{"dev"}},
		{Key: "legacy", Operator: OpDoesNotExist},
		{Key: "site", Operator: OpIn, Values: []string{"a", "b"}},
	}}
	c := s.Canonical()
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Canonical = %+v\nwant        %+v", c, want)
	}
	if s.MatchExpressions[0].Values[0] != "b" {
		t.Fatal("Canonical changed the selector it was called on")
	}
	if Hash(c) != Hash(want.Canonical()) {
		t.Fatal("Canonical is not a fixed point")
	}
	labels := map[string]string{"site": "a"}
	if c.Matches(labels) != s.Matches(labels) {
		t.Fatal("the canonical selector selects differently")
	}
}

// The hashed form is the JSON of the canonical value: a stored hash moves only if that JSON does.
func TestHashGolden(t *testing.T) {
	v := struct {
		Name     string        `json:"name"`
		Selector LabelSelector `json:"selector"`
	}{"w", LabelSelector{MatchLabels: map[string]string{"b": "2", "a": "1"}, MatchExpressions: []Requirement{{Key: "k", Operator: OpExists}}}}
	// sha256 of {"name":"w","selector":{"matchLabels":{"a":"1","b":"2"},"matchExpressions":[{"key":"k","operator":"Exists"}]}}
	const want = "b47d8732ddb565e56c32b714ce55775019877159e4e86a42ebb1c17cd05e7554"
	if got := Hash(v); got != want {
		t.Errorf("Hash = %s, want %s", got, want)
	}
}

func TestEncode(t *testing.T) {
	b, err := Encode(struct {
		Name     string        `yaml:"name"`
		Selector LabelSelector `yaml:"selector,omitempty"`
	}{"w", LabelSelector{MatchExpressions: []Requirement{{Key: "k", Operator: OpIn, Values: []string{"x", "y"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := "name: w\nselector:\n  matchExpressions:\n    - key: k\n      operator: In\n      values: [x, \"y\"]\n" // "y" is a boolean to YAML 1.1 readers
	if string(b) != want {
		t.Errorf("Encode =\n%s\nwant\n%s", b, want)
	}
}
