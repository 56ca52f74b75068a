package drill

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// HookLine is one line of the hook log: a hook's start or end on a member under an epoch.
type HookLine struct {
	At     time.Time
	Phase  string // start | end
	Hook   string
	Member string
	Epoch  uint64
}

// ReadLog parses the hook log.
func ReadLog(path string) ([]HookLine, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []HookLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 5 {
			return nil, fmt.Errorf("hook log: bad line %q", sc.Text())
		}
		ns, err1 := strconv.ParseInt(fs[0], 10, 64)
		ep, err2 := strconv.ParseUint(fs[4], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("hook log: bad line %q", sc.Text())
		}
		out = append(out, HookLine{At: time.Unix(0, ns), Phase: fs[1], Hook: fs[2], Member: fs[3], Epoch: ep})
	}
	return out, sc.Err()
}

// Report is what Check found.
type Report struct {
	Promotions int
	Zombies    int // members found paused holding a term when another was promoted
	Violations []string
}

// Check holds a run's hook log and faults to the model of the package comment:
//
//  1. one member per epoch: no two onPromote starts under the same epoch by different members;
//  2. epochs grow: each promotion's epoch is above every earlier one's;
//  3. no two primaries: when a member's onPromote starts, every other member's term has ended
//     (onFence end, onDemote start, or its death) — unless that member is a zombie: paused
//     (SIGSTOP) then, or resumed less than window (the failover timeout) before, so that its
//     watchdog could not run through the window the timing rule relies on; a member cut off
//     from NATS or slowed (cut, heal, delay, undelay) runs on, so it is held to this rule as
//     it stands;
//  4. a zombie fences first: once resumed, the first hook it starts is onFence (a zombie whose
//     onFence had already started when the other was promoted has fenced first).
func Check(lines []HookLine, faults []Fault, window time.Duration) Report {
	type ev struct {
		at    time.Time
		line  *HookLine
		fault *Fault
	}
	var evs []ev
	for i := range lines {
		evs = append(evs, ev{at: lines[i].At, line: &lines[i]})
	}
	for i := range faults {
		evs = append(evs, ev{at: faults[i].At, fault: &faults[i]})
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
	var r Report
	open := map[string]uint64{} // member → epoch of its open term
	paused := map[string]bool{}
	resumed := map[string]time.Time{}
	zombie := map[string]bool{}
	fencing := map[string]bool{} // onFence started, not yet ended
	owner := map[uint64]string{}
	var maxEpoch uint64
	for _, e := range evs {
		if f := e.fault; f != nil {
			switch f.What {
			case "kill":
				delete(open, f.Member)
				delete(zombie, f.Member)
				paused[f.Member] = false
			case "stop":
				paused[f.Member] = true
			case "cont":
				paused[f.Member] = false
				resumed[f.Member] = f.At
			}
			continue
		}
		l := e.line
		if zombie[l.Member] && l.Phase == "start" {
			if l.Hook != "onFence" {
				r.Violations = append(r.Violations, fmt.Sprintf("%s: zombie %s started %s before onFence", l.At.Format(time.RFC3339Nano), l.Member, l.Hook))
			}
			delete(zombie, l.Member)
		}
		switch {
		case l.Hook == "onPromote" && l.Phase == "start":
			r.Promotions++
			if o, ok := owner[l.Epoch]; ok && o != l.Member {
				r.Violations = append(r.Violations, fmt.Sprintf("epoch %d promoted on %s and on %s", l.Epoch, o, l.Member))
			}
			if _, again := owner[l.Epoch]; !again {
				if l.Epoch <= maxEpoch {
					r.Violations = append(r.Violations, fmt.Sprintf("%s promoted at epoch %d after epoch %d", l.Member, l.Epoch, maxEpoch))
				}
				maxEpoch = max(maxEpoch, l.Epoch)
			}
			owner[l.Epoch] = l.Member
			for m, ep := range open {
				if m == l.Member {
					continue
				}
				if paused[m] || (!resumed[m].IsZero() && l.At.Sub(resumed[m]) < window) {
					if !zombie[m] {
						r.Zombies++
					}
					// One already running onFence has fenced first: its next hook may be any.
					zombie[m] = !fencing[m]
					continue
				}
				r.Violations = append(r.Violations, fmt.Sprintf("%s: %s promoted at epoch %d while %s was primary at epoch %d",
					l.At.Format(time.RFC3339Nano), l.Member, l.Epoch, m, ep))
			}
			open[l.Member] = l.Epoch
		case l.Hook == "onFence" && l.Phase == "start":
			fencing[l.Member] = true
		case l.Hook == "onFence" && l.Phase == "end", l.Hook == "onDemote" && l.Phase == "start":
			delete(open, l.Member)
			delete(fencing, l.Member)
		}
	}
	return r
}
