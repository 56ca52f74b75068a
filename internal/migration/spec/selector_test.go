package spec

import (
	"testing"

	"godwit.dev/godwit/internal/manifest"
)

func TestSelectorEmpty(t *testing.T) {
	tests := []struct {
		sel  manifest.LabelSelector
		want bool
	}{
		{manifest.LabelSelector{}, true},
		{manifest.LabelSelector{MatchLabels: map[string]string{}}, true},
		{manifest.LabelSelector{MatchLabels: map[string]string{"a": "b"}}, false},
		{manifest.LabelSelector{MatchExpressions: []manifest.Requirement{{Key: "a", Operator: manifest.OpExists}}}, false},
	}
	for _, tt := range tests {
		if got := tt.sel.Empty(); got != tt.want {
			t.Errorf("%+v.Empty() = %v, want %v", tt.sel, got, tt.want)
		}
	}
	if !mustParse(t, doc("  selector: {matchLabels: {}, matchExpressions: []}\n  steps: [{name: a, run: x}]\n")).Spec.Selector.Empty() {
		t.Error("parsed empty selector is not Empty")
	}
}

func TestBatchSizeOf(t *testing.T) {
	tests := []struct {
		b     BatchSize
		total int
		want  int
	}{
		{BatchSize{Count: 10}, 3, 10},
		{BatchSize{Percent: 25}, 10, 3}, // 2.5 rounds up
		{BatchSize{Percent: 25}, 8, 2},
		{BatchSize{Percent: 1}, 5, 1},
		{BatchSize{Percent: 100}, 7, 7},
		{BatchSize{Percent: 50}, 0, 1}, // at least 1
		{BatchSize{}, 5, 1},
	}
	for _, tt := range tests {
		if got := tt.b.Of(tt.total); got != tt.want {
			t.Errorf("%v.Of(%d) = %d, want %d", tt.b, tt.total, got, tt.want)
		}
	}
}
