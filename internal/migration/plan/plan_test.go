package plan

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/wire"
)

// migration parses a spec whose rollout (and selector) is given as YAML lines under spec:.
func migration(t *testing.T, body string) *spec.Migration {
	t.Helper()
	m, err := spec.Parse([]byte(`apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: test}
spec:
  toVersion: "2"
  steps: [{name: a, run: "true"}]
` + body))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return m
}

// fleet returns agents named a, b, c… whose ids are id-<name>, with the given labels.
func fleet(n int, labels func(i int) map[string]string) []wire.Agent {
	out := make([]wire.Agent, n)
	for i := range out {
		name := string(rune('a' + i))
		out[i] = wire.Agent{ID: "id-" + name, Name: name, Status: wire.StatusOnline}
		if labels != nil {
			out[i].Labels = labels(i)
		}
	}
	return out
}

// names strips the id- prefix so expectations read like the brief: [[a] [b c] [d e]].
func names(batches [][]string) [][]string {
	out := make([][]string, len(batches))
	for i, b := range batches {
		out[i] = make([]string, len(b))
		for j, id := range b {
			out[i][j] = strings.TrimPrefix(id, "id-")
		}
	}
	return out
}

func TestBatches(t *testing.T) {
	tests := []struct {
		name    string
		rollout string
		agents  int
		want    string // fmt of names(batches)
	}{
		{"canary 1 + batchSize 2", "  rollout: {canary: 1, batchSize: 2}\n", 5, "[[a] [b c] [d e]]"},
		{"defaults: one batch of 100%", "", 5, "[[a b c d e]]"},
		{"count without canary", "  rollout: {batchSize: 2}\n", 5, "[[a b] [c d] [e]]"},
		{"count larger than fleet", "  rollout: {batchSize: 10}\n", 3, "[[a b c]]"},
		{"batch of 1", "  rollout: {batchSize: 1}\n", 3, "[[a] [b] [c]]"},
		{"25% of 10 rounds up to 3", "  rollout: {batchSize: 25%}\n", 10, "[[a b c] [d e f] [g h i] [j]]"},
		{"50% of 5 is 3", "  rollout: {batchSize: 50%}\n", 5, "[[a b c] [d e]]"},
		{"1% of 5 is at least 1", "  rollout: {batchSize: 1%}\n", 5, "[[a] [b] [c] [d] [e]]"},
		{"percent counts the canary in the total", "  rollout: {canary: 2, batchSize: 40%}\n", 10, "[[a b] [c d e f] [g h i j]]"},
		{"canary + 100%", "  rollout: {canary: 1}\n", 4, "[[a] [b c d]]"},
		{"canary equal to fleet", "  rollout: {canary: 3, batchSize: 1}\n", 3, "[[a b c]]"},
		{"canary bigger than fleet", "  rollout: {canary: 10, batchSize: 1}\n", 3, "[[a b c]]"},
		{"single agent", "  rollout: {canary: 1, batchSize: 25%}\n", 1, "[[a]]"},
		{"no agents", "  rollout: {canary: 1}\n", 0, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := migration(t, tt.rollout)
			p, err := Batches(m, fleet(tt.agents, nil))
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(names(p.Batches)); got != tt.want {
				t.Errorf("batches = %s, want %s", got, tt.want)
			}
			if p.Matched != tt.agents {
				t.Errorf("matched = %d, want %d", p.Matched, tt.agents)
			}
			total := 0
			for _, b := range p.Batches {
				if len(b) == 0 {
					t.Error("empty batch")
				}
				total += len(b)
			}
			if total != p.Matched {
				t.Errorf("batches hold %d agents, matched %d", total, p.Matched)
			}
		})
	}
}

func TestBatchesOrderIsDeterministic(t *testing.T) {
	m := migration(t, "  rollout: {canary: 1, batchSize: 2}\n")
	// Ids deliberately sort the other way round from names, and two agents share a name.
	agents := []wire.Agent{
		{ID: "5", Name: "a"}, {ID: "4", Name: "b"}, {ID: "3", Name: "c"}, {ID: "2", Name: "c"}, {ID: "1", Name: "d"},
	}
	want := [][]string{{"5"}, {"4", "2"}, {"3", "1"}}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		r.Shuffle(len(agents), func(i, j int) { agents[i], agents[j] = agents[j], agents[i] })
		p, err := Batches(m, agents)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(p.Batches, want) {
			t.Fatalf("batches = %v for input %v, want %v", p.Batches, agents, want)
		}
	}
}

func TestBatchesSelector(t *testing.T) {
	labels := func(i int) map[string]string {
		l := map[string]string{"role": []string{"db", "web"}[i%2], "site": []string{"a", "b", "c"}[i%3]}
		if i == 4 {
			l["legacy"] = "true"
		}
		return l
	}
	// i:    0     1     2     3     4        5     6     7
	// role: db    web   db    web   db       web   db    web
	// site: a     b     c     a     b        c     a     b
	tests := []struct {
		name     string
		selector string
		want     string
	}{
		{"empty selects all", "", "[[a b c d e f g h]]"},
		{"matchLabels", "  selector: {matchLabels: {role: db}}\n", "[[a c e g]]"},
		{"two labels", "  selector: {matchLabels: {role: db, site: a}}\n", "[[a g]]"},
		{"In", "  selector:\n    matchExpressions: [{key: site, operator: In, values: [a, c]}]\n", "[[a c d f g]]"},
		{"NotIn", "  selector:\n    matchExpressions: [{key: site, operator: NotIn, values: [a, c]}]\n", "[[b e h]]"},
		{"Exists", "  selector:\n    matchExpressions: [{key: legacy, operator: Exists}]\n", "[[e]]"},
		{"labels and DoesNotExist", "  selector:\n    matchLabels: {role: db}\n    matchExpressions: [{key: legacy, operator: DoesNotExist}]\n", "[[a c g]]"},
		{"In on a missing key", "  selector:\n    matchExpressions: [{key: zone, operator: In, values: [x]}]\n", "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Batches(migration(t, tt.selector), fleet(8, labels))
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(names(p.Batches)); got != tt.want {
				t.Errorf("batches = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestBatchesExcludesRevoked(t *testing.T) {
	agents := fleet(4, func(int) map[string]string { return map[string]string{"role": "db"} })
	revokedAt := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	agents[1].RevokedAt = &revokedAt
	agents[3].Labels = nil
	agents[3].RevokedAt = &revokedAt // revoked and not selected: not counted
	p, err := Batches(migration(t, "  selector: {matchLabels: {role: db}}\n"), agents)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(names(p.Batches)); got != "[[a c]]" || p.Matched != 2 {
		t.Errorf("batches = %s, matched %d; want [[a c]], 2", got, p.Matched)
	}
	if !reflect.DeepEqual(p.Warnings, []string{"1 revoked agent matches the selector and is left out"}) {
		t.Errorf("warnings = %q", p.Warnings)
	}
}

func TestBatchesWarnings(t *testing.T) {
	offline := fleet(3, nil)
	offline[2].Status = wire.StatusOffline
	twoOffTwoRevoked := fleet(4, nil)
	revokedAt := time.Now()
	for i := range twoOffTwoRevoked {
		if i < 2 {
			twoOffTwoRevoked[i].Status = wire.StatusOffline
		} else {
			twoOffTwoRevoked[i].RevokedAt = &revokedAt
		}
	}
	tests := []struct {
		name   string
		body   string
		agents []wire.Agent
		want   []string
	}{
		{"no match", "  selector: {matchLabels: {role: db}}\n", fleet(3, nil), []string{WarnNoMatch}},
		{"empty fleet", "", nil, []string{WarnNoMatch}},
		{"canary covers all", "  rollout: {canary: 5}\n", fleet(3, nil), []string{"canary (5) covers all 3 matched agents: the whole rollout is the canary batch"}},
		{"offline agents", "", offline, []string{"1 of 3 matched agents is offline: their assignments wait for them"}},
		{"offline and revoked, plural", "", twoOffTwoRevoked, []string{
			"2 of 2 matched agents are offline: their assignments wait for them",
			"2 revoked agents match the selector and are left out"}},
		{"nothing to say", "  rollout: {canary: 1}\n", fleet(3, nil), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Batches(migration(t, tt.body), tt.agents)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.Warnings, tt.want) {
				t.Errorf("warnings = %q, want %q", p.Warnings, tt.want)
			}
		})
	}
	p, _ := Batches(migration(t, "  selector: {matchLabels: {role: db}}\n"), fleet(3, nil))
	if p.Batches == nil || len(p.Batches) != 0 || p.Matched != 0 {
		t.Errorf("no-match plan = %+v, want empty non-nil batches", p)
	}
}

func TestBatchesErrors(t *testing.T) {
	good := migration(t, "")
	invalid := migration(t, "")
	invalid.Spec.Steps = nil
	tests := []struct {
		name   string
		m      *spec.Migration
		agents []wire.Agent
		msg    string
	}{
		{"nil migration", nil, fleet(1, nil), "no migration"},
		{"invalid spec", invalid, fleet(1, nil), "spec.steps"},
		{"agent without id", good, []wire.Agent{{Name: "x"}}, `agent "x" has no id`},
		{"duplicate id", good, []wire.Agent{{ID: "1", Name: "x"}, {ID: "1", Name: "y"}}, `agent id "1" listed twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Batches(tt.m, tt.agents)
			if !errors.Is(err, fault.ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %v, want invalid containing %q", err, tt.msg)
			}
		})
	}
}

// Batches share no backing array: appending to one cannot change the next.
func TestBatchesDoNotAlias(t *testing.T) {
	p, err := Batches(migration(t, "  rollout: {batchSize: 2}\n"), fleet(4, nil))
	if err != nil {
		t.Fatal(err)
	}
	_ = append(p.Batches[0], "intruder")
	if p.Batches[1][0] != "id-c" {
		t.Errorf("appending to batch 0 changed batch 1: %v", p.Batches)
	}
}

func TestFailureBudget(t *testing.T) {
	tests := []struct {
		name    string
		rollout string
		matched int
		want    int
	}{
		{"default is zero", "", 10, 0},
		{"maxFailures", "  rollout: {maxFailures: 2}\n", 10, 2},
		{"maxFailures above fleet", "  rollout: {maxFailures: 20}\n", 3, 20},
		{"90% of 10 tolerates 1", "  rollout: {successThreshold: 90%}\n", 10, 1},
		{"90% of 5 tolerates 0 (4.5 rounds up to 5)", "  rollout: {successThreshold: 90%}\n", 5, 0},
		{"90% of 20 tolerates 2", "  rollout: {successThreshold: 90%}\n", 20, 2},
		{"75% of 10 tolerates 2", "  rollout: {successThreshold: 75%}\n", 10, 2},
		{"50% of 3 tolerates 1", "  rollout: {successThreshold: 50%}\n", 3, 1},
		{"100% tolerates none", "  rollout: {successThreshold: 100%}\n", 10, 0},
		{"1% of 100 tolerates 99", "  rollout: {successThreshold: 1%}\n", 100, 99},
		{"threshold of nothing", "  rollout: {successThreshold: 90%}\n", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := migration(t, tt.rollout)
			p, err := Batches(m, fleet(tt.matched, nil))
			if err != nil {
				t.Fatal(err)
			}
			if got := p.FailureBudget(m); got != tt.want {
				t.Errorf("budget = %d, want %d", got, tt.want)
			}
			if p.Exceeded(m, tt.want) {
				t.Errorf("budget %d exceeded by %d failures", tt.want, tt.want)
			}
			if !p.Exceeded(m, tt.want+1) {
				t.Errorf("budget %d not exceeded by %d failures", tt.want, tt.want+1)
			}
		})
	}
}
