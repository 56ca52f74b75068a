package spec

import "testing"

func TestSelectorMatches(t *testing.T) {
	dbA := map[string]string{"role": "db", "site": "a"}
	dbC := map[string]string{"role": "db", "site": "c"}
	web := map[string]string{"role": "web", "site": "a", "legacy": "true"}
	bare := map[string]string{"role": "db"}
	emptyValue := map[string]string{"role": "db", "site": ""}
	tests := []struct {
		name string
		sel  Selector
		in   []map[string]string // selected
		out  []map[string]string // not selected
	}{
		{"empty selects all", Selector{}, []map[string]string{dbA, web, bare, nil}, nil},
		{"empty maps select all", Selector{MatchLabels: map[string]string{}, MatchExpressions: []Requirement{}}, []map[string]string{nil, dbA}, nil},
		{"matchLabels", Selector{MatchLabels: map[string]string{"role": "db"}}, []map[string]string{dbA, dbC, bare}, []map[string]string{web, nil}},
		{"matchLabels all must hold", Selector{MatchLabels: map[string]string{"role": "db", "site": "a"}}, []map[string]string{dbA}, []map[string]string{dbC, bare, web}},
		{"matchLabels empty value needs the key", Selector{MatchLabels: map[string]string{"site": ""}}, []map[string]string{emptyValue}, []map[string]string{bare, nil}},
		{"In", Selector{MatchExpressions: []Requirement{{Key: "site", Operator: OpIn, Values: []string{"a", "b"}}}}, []map[string]string{dbA, web}, []map[string]string{dbC, bare, nil}},
		{"NotIn holds when absent", Selector{MatchExpressions: []Requirement{{Key: "site", Operator: OpNotIn, Values: []string{"a"}}}}, []map[string]string{dbC, bare, nil, emptyValue}, []map[string]string{dbA, web}},
		{"Exists", Selector{MatchExpressions: []Requirement{{Key: "legacy", Operator: OpExists}}}, []map[string]string{web}, []map[string]string{dbA, nil}},
		{"Exists with empty value", Selector{MatchExpressions: []Requirement{{Key: "site", Operator: OpExists}}}, []map[string]string{emptyValue, dbA}, []map[string]string{bare}},
		{"DoesNotExist", Selector{MatchExpressions: []Requirement{{Key: "legacy", Operator: OpDoesNotExist}}}, []map[string]string{dbA, bare, nil}, []map[string]string{web}},
		{"labels and expressions together", Selector{
			MatchLabels:      map[string]string{"role": "db"},
			MatchExpressions: []Requirement{{Key: "site", Operator: OpIn, Values: []string{"a", "c"}}, {Key: "legacy", Operator: OpDoesNotExist}},
		}, []map[string]string{dbA, dbC}, []map[string]string{web, bare, nil}},
		{"unknown operator matches nothing", Selector{MatchExpressions: []Requirement{{Key: "site", Operator: "Equals", Values: []string{"a"}}}}, nil, []map[string]string{dbA, nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, l := range tt.in {
				if !tt.sel.Matches(l) {
					t.Errorf("%v not selected", l)
				}
			}
			for _, l := range tt.out {
				if tt.sel.Matches(l) {
					t.Errorf("%v selected", l)
				}
			}
		})
	}
}

func TestSelectorEmpty(t *testing.T) {
	tests := []struct {
		sel  Selector
		want bool
	}{
		{Selector{}, true},
		{Selector{MatchLabels: map[string]string{}}, true},
		{Selector{MatchLabels: map[string]string{"a": "b"}}, false},
		{Selector{MatchExpressions: []Requirement{{Key: "a", Operator: OpExists}}}, false},
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
