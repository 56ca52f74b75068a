package manifest

import "testing"

func TestSelectorMatches(t *testing.T) {
	dbA := map[string]string{"role": "db", "site": "a"}
	dbC := map[string]string{"role": "db", "site": "c"}
	web := map[string]string{"role": "web", "site": "a", "legacy": "true"}
	bare := map[string]string{"role": "db"}
	emptyValue := map[string]string{"role": "db", "site": ""}
	tests := []struct {
		name string
		sel  LabelSelector
		in   []map[string]string // selected
		out  []map[string]string // not selected
	}{
		{"empty selects all", LabelSelector{}, []map[string]string{dbA, web, bare, nil}, nil},
		{"empty maps select all", LabelSelector{MatchLabels: map[string]string{}, MatchExpressions: []Requirement{}}, []map[string]string{nil, dbA}, nil},
		{"matchLabels", LabelSelector{MatchLabels: map[string]string{"role": "db"}}, []map[string]string{dbA, dbC, bare}, []map[string]string{web, nil}},
		{"matchLabels all must hold", LabelSelector{MatchLabels: map[string]string{"role": "db", "site": "a"}}, []map[string]string{dbA}, []map[string]string{dbC, bare, web}},
		{"matchLabels empty value needs the key", LabelSelector{MatchLabels: map[string]string{"site": ""}}, []map[string]string{emptyValue}, []map[string]string{bare, nil}},
		{"In", LabelSelector{MatchExpressions: []Requirement{{Key: "site", Operator: OpIn, Values: []string{"a", "b"}}}}, []map[string]string{dbA, web}, []map[string]string{dbC, bare, nil}},
		{"NotIn holds when absent", LabelSelector{MatchExpressions: []Requirement{{Key: "site", Operator: OpNotIn, Values: []string{"a"}}}}, []map[string]string{dbC, bare, nil, emptyValue}, []map[string]string{dbA, web}},
		{"Exists", LabelSelector{MatchExpressions: []Requirement{{Key: "legacy", Operator: OpExists}}}, []map[string]string{web}, []map[string]string{dbA, nil}},
		{"Exists with empty value", LabelSelector{MatchExpressions: []Requirement{{Key: "site", Operator: OpExists}}}, []map[string]string{emptyValue, dbA}, []map[string]string{bare}},
		{"DoesNotExist", LabelSelector{MatchExpressions: []Requirement{{Key: "legacy", Operator: OpDoesNotExist}}}, []map[string]string{dbA, bare, nil}, []map[string]string{web}},
		{"labels and expressions together", LabelSelector{
			MatchLabels:      map[string]string{"role": "db"},
			MatchExpressions: []Requirement{{Key: "site", Operator: OpIn, Values: []string{"a", "c"}}, {Key: "legacy", Operator: OpDoesNotExist}},
		}, []map[string]string{dbA, dbC}, []map[string]string{web, bare, nil}},
		{"unknown operator matches nothing", LabelSelector{MatchExpressions: []Requirement{{Key: "site", Operator: "Equals", Values: []string{"a"}}}}, nil, []map[string]string{dbA, nil}},
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
