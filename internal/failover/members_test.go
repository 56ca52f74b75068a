package failover

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/fault"
)

const agentC = "2f0e0d0c-0b0a-4908-8706-050403020100"

// membersYAML is a valid group whose members are the given entries.
func membersYAML(entries ...string) string {
	s := "apiVersion: godwit.dev/v1\nkind: FailoverGroup\nmetadata: {name: pg}\nspec:\n  members:\n"
	for _, e := range entries {
		s += "    - " + e + "\n"
	}
	return s + "  hooks:\n    onPromote: {command: promote, timeout: 30s}\n    onFence: {command: fence, timeout: 2s}\n"
}

var cands = []Candidate{
	{ID: agentA, Labels: map[string]string{"site": "a", "role": "db"}},
	{ID: agentB, Labels: map[string]string{"site": "b", "role": "db"}},
	{ID: agentC, Labels: map[string]string{"site": "b", "role": "db", "disk": "slow"}},
}

// A member takes its priority and noFailover from the one entry that took it in, whether that
// entry names it by id or selects it.
func TestResolveSettingsOfTheEntry(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []string
		want    []Settings
	}{
		{"by id", []string{"{agent: " + agentA + ", priority: 10}", "{agent: " + agentB + ", noFailover: true}"},
			[]Settings{{agentA, 10, false, 0}, {agentB, 0, true, 1}}},
		{"one selector", []string{"{selector: {matchLabels: {site: b}}, priority: 50, noFailover: true}"},
			[]Settings{{agentB, 50, true, 0}, {agentC, 50, true, 0}}},
		{"id and disjoint selectors", []string{
			"{agent: " + agentA + ", priority: 10}",
			"{selector: {matchLabels: {disk: slow}}, priority: 100, noFailover: true}",
			"{selector: {matchExpressions: [{key: disk, operator: DoesNotExist}], matchLabels: {site: b}}, priority: 50}"},
			[]Settings{{agentA, 10, false, 0}, {agentC, 100, true, 1}, {agentB, 50, false, 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseValid(t, membersYAML(tc.entries...)).Resolve(cands, nil)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("Resolve = %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}

// An agent taken in by two entries is refused naming both: its settings are never merged, so a
// second entry cannot outvote the first one's noFailover.
func TestResolveRefusesOverlapsNamingTheFields(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []string
		owner   func(string) string
		want    []string
	}{
		{"overlapping selectors", []string{"{selector: {matchLabels: {site: b}}, noFailover: true}", "{selector: {matchLabels: {disk: slow}}, priority: 100}"}, nil,
			[]string{"spec.members[1].selector (line 7): agent " + agentC + " is already a member through spec.members[0].selector"}},
		{"selector overlapping an id", []string{"{agent: " + agentB + "}", "{selector: {matchLabels: {role: db}}, noFailover: true}"}, nil,
			[]string{"spec.members[1].selector (line 7): agent " + agentB + " is already a member through spec.members[0].agent"}},
		{"unknown id", []string{"{agent: 3f0e0d0c-0b0a-4908-8706-050403020100}"}, nil, []string{"spec.members[0].agent (line 6): unknown agent"}},
		{"selector matching none", []string{"{agent: " + agentA + "}", "{selector: {matchLabels: {site: z}}}"}, nil,
			[]string{"spec.members[1].selector (line 7): matches no enrolled agent"}},
		{"agent of another group", []string{"{selector: {matchLabels: {site: b}}}"}, func(id string) string {
			if id == agentC {
				return "other"
			}
			return ""
		}, []string{"spec.members[0].selector (line 6): agent " + agentC + " is already a member of failover group other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseValid(t, membersYAML(tc.entries...)).Resolve(cands, tc.owner)
			if err == nil || !errors.Is(err, fault.ErrInvalid) {
				t.Fatalf("Resolve error %v, want an invalid spec", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("Resolve error %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

// SettingsOf and MemberSettings read the hub's resolution, which survives the stored JSON;
// without it (a document run by `godwit failover member`, a group stored before resolutions) an
// agent not named by id takes the most cautious selector entry.
func TestSettingsOf(t *testing.T) {
	sp := parseValid(t, membersYAML(
		"{agent: "+agentA+", priority: 10}",
		"{selector: {matchLabels: {disk: slow}}, priority: 100, noFailover: true}",
		"{selector: {matchExpressions: [{key: disk, operator: DoesNotExist}], matchLabels: {site: b}}, priority: 50}"))
	res, err := sp.Resolve(cands, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := sp.Canonical()
	c.Resolved = res
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var stored Canonical
	if err := json.Unmarshal(b, &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Hash() != c.Hash() || c.Hash() == sp.Hash() {
		t.Fatal("the hash must cover the resolution and survive the stored JSON")
	}
	for _, tc := range []struct {
		id   string
		want Settings
		ok   bool
	}{
		{agentA, Settings{agentA, 10, false, 0}, true},
		{agentB, Settings{agentB, 50, false, 2}, true},
		{agentC, Settings{agentC, 100, true, 1}, true},
		{"4f0e0d0c-0b0a-4908-8706-050403020100", Settings{}, false},
	} {
		if got, ok := stored.SettingsOf(tc.id); ok != tc.ok || got != tc.want {
			t.Errorf("resolved SettingsOf(%s) = %+v, %v; want %+v, %v", tc.id, got, ok, tc.want, tc.ok)
		}
	}
	if got := stored.MemberSettings(); !slices.Equal(got, res) {
		t.Errorf("MemberSettings = %+v, want %+v", got, res)
	}

	doc := sp.Canonical() // no resolution
	if got := doc.MemberSettings(); !slices.Equal(got, []Settings{{agentA, 10, false, 0}}) {
		t.Errorf("unresolved MemberSettings = %+v: only the id entries are known", got)
	}
	if got, ok := doc.SettingsOf(agentA); !ok || got != (Settings{agentA, 10, false, 0}) {
		t.Errorf("unresolved SettingsOf(id entry) = %+v, %v", got, ok)
	}
	if got, ok := doc.SettingsOf(agentB); !ok || got != (Settings{agentB, 50, true, -1}) {
		t.Errorf("unresolved SettingsOf(selected agent) = %+v, %v; want noFailover (some selector says so), the lowest priority", got, ok)
	}
	byID := parseValid(t, membersYAML("{agent: "+agentA+"}", "{agent: "+agentB+"}")).Canonical()
	if _, ok := byID.SettingsOf(agentC); ok {
		t.Error("an agent neither named nor selectable is a member")
	}
}
