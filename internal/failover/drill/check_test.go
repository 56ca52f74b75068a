package drill

import (
	"strings"
	"testing"
	"time"
)

// The checker's model on hand-written histories: a paused primary that resumes and fences is a
// zombie fenced first, also when its onFence had already started when the other was promoted;
// one that resumes and demotes without fencing, or a promotion beside a live primary, is a
// violation. A member cut off from NATS, or slowed, runs on: it is no zombie, and its term
// must have ended before another's promotion.
func TestCheck(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	hook := func(ms int, phase, hook, member string, epoch uint64) HookLine {
		return HookLine{At: at(ms), Phase: phase, Hook: hook, Member: member, Epoch: epoch}
	}
	window := time.Second
	primaryA := []HookLine{hook(0, "start", "onPromote", "a", 2), hook(10, "end", "onPromote", "a", 2)}
	for _, tc := range []struct {
		name    string
		lines   []HookLine
		faults  []Fault
		zombies int
		want    string // a part of the one violation, or "" for none
	}{
		{"fencing already when the other is promoted",
			append(primaryA, hook(1535, "start", "onFence", "a", 2), hook(1562, "start", "onPromote", "b", 3),
				hook(1572, "end", "onFence", "a", 2), hook(1625, "start", "onDemote", "a", 2), hook(1630, "end", "onDemote", "a", 2)),
			[]Fault{{At: at(100), Member: "a", What: "stop"}, {At: at(1500), Member: "a", What: "cont"}}, 1, ""},
		{"paused, then fences first",
			append(primaryA, hook(1200, "start", "onPromote", "b", 3), hook(1600, "start", "onFence", "a", 2),
				hook(1610, "end", "onFence", "a", 2), hook(1620, "start", "onDemote", "a", 2)),
			[]Fault{{At: at(100), Member: "a", What: "stop"}, {At: at(1500), Member: "a", What: "cont"}}, 1, ""},
		{"paused, then demotes without fencing",
			append(primaryA, hook(1200, "start", "onPromote", "b", 3), hook(1600, "start", "onDemote", "a", 2)),
			[]Fault{{At: at(100), Member: "a", What: "stop"}, {At: at(1500), Member: "a", What: "cont"}}, 1,
			"zombie a started onDemote before onFence"},
		{"cut off, fences before the other is promoted",
			append(primaryA, hook(900, "start", "onFence", "a", 2), hook(910, "end", "onFence", "a", 2),
				hook(1300, "start", "onPromote", "b", 3)),
			[]Fault{{At: at(100), Member: "a", What: "cut"}, {At: at(2000), Member: "a", What: "heal"}}, 0, ""},
		{"cut off, still primary when the other is promoted",
			append(primaryA, hook(1300, "start", "onPromote", "b", 3), hook(1400, "start", "onFence", "a", 2)),
			[]Fault{{At: at(100), Member: "a", What: "cut"}, {At: at(2000), Member: "a", What: "heal"}}, 0,
			"b promoted at epoch 3 while a was primary at epoch 2"},
		{"latency blip, still primary when the other is promoted",
			append(primaryA, hook(1300, "start", "onPromote", "b", 3)),
			[]Fault{{At: at(100), Member: "a", What: "delay"}, {At: at(1200), Member: "a", What: "undelay"}}, 0,
			"b promoted at epoch 3 while a was primary at epoch 2"},
		{"promoted beside a live primary",
			append(primaryA, hook(1200, "start", "onPromote", "b", 3)), nil, 0,
			"b promoted at epoch 3 while a was primary at epoch 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Check(tc.lines, tc.faults, window)
			if r.Zombies != tc.zombies {
				t.Errorf("zombies = %d, want %d", r.Zombies, tc.zombies)
			}
			switch {
			case tc.want == "" && len(r.Violations) > 0:
				t.Errorf("violations %q, want none", r.Violations)
			case tc.want != "" && (len(r.Violations) != 1 || !strings.Contains(r.Violations[0], tc.want)):
				t.Errorf("violations %q, want one naming %q", r.Violations, tc.want)
			}
		})
	}
}
