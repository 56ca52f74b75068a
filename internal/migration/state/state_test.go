package state

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/fault"
)

// The expected edges are written out here independently of the tables in state.go, so a change
// to a table has to be made twice, on purpose.
var wantMigrationEdges = map[MigrationState][]MigrationState{
	MigrationPending:            {MigrationRunning, MigrationCancelled, MigrationFailed},
	MigrationRunning:            {MigrationPaused, MigrationSucceeded, MigrationPartiallySucceeded, MigrationFailed, MigrationRollingBack, MigrationCancelled},
	MigrationPaused:             {MigrationRunning, MigrationRollingBack, MigrationFailed, MigrationCancelled},
	MigrationRollingBack:        {MigrationRolledBack, MigrationFailed, MigrationCancelled},
	MigrationSucceeded:          {MigrationRollingBack},
	MigrationPartiallySucceeded: {MigrationRunning, MigrationRollingBack},
	MigrationFailed:             {MigrationRunning, MigrationRollingBack},
	MigrationRolledBack:         nil,
	MigrationCancelled:          {MigrationRollingBack},
}

var (
	inFlight = []AssignmentState{AssignmentPending, AssignmentDetecting, AssignmentApplying, AssignmentVerifying}
	// outcomes every in-flight state may reach (the hub owns timed_out, rolling_back, superseded,
	// agent_unreachable; the agent the rest).
	common = []AssignmentState{AssignmentSucceeded, AssignmentFailed, AssignmentTimedOut, AssignmentRollingBack, AssignmentSuperseded, AssignmentAgentUnreachable}
)

var wantAssignmentEdges = map[AssignmentState][]AssignmentState{
	AssignmentPending:   append([]AssignmentState{AssignmentDetecting, AssignmentApplying, AssignmentVerifying, AssignmentNotNeeded}, common...),
	AssignmentDetecting: append([]AssignmentState{AssignmentApplying, AssignmentVerifying, AssignmentNotNeeded}, common...),
	AssignmentApplying:  append([]AssignmentState{AssignmentDetecting, AssignmentVerifying}, common...),
	AssignmentVerifying: append([]AssignmentState{AssignmentDetecting, AssignmentApplying}, common...),
	AssignmentNotNeeded: nil,
	AssignmentSucceeded: {AssignmentRollingBack},
	AssignmentFailed:    {AssignmentRollingBack},
	AssignmentTimedOut:  {AssignmentRollingBack},
	AssignmentRollingBack: {AssignmentRolledBack, AssignmentRollbackFailed, AssignmentSuperseded,
		AssignmentAgentUnreachable},
	AssignmentRolledBack:     nil,
	AssignmentRollbackFailed: {AssignmentRollingBack},
	AssignmentSuperseded:     nil,
	AssignmentAgentUnreachable: {AssignmentPending, AssignmentDetecting, AssignmentApplying, AssignmentVerifying,
		AssignmentRollingBack, AssignmentNotNeeded, AssignmentSucceeded, AssignmentFailed, AssignmentRolledBack,
		AssignmentRollbackFailed, AssignmentTimedOut, AssignmentSuperseded},
}

func edgeSet[S ~string](m map[S][]S) map[[2]S]bool {
	out := map[[2]S]bool{}
	for from, tos := range m {
		for _, to := range tos {
			out[[2]S{from, to}] = true
		}
	}
	return out
}

// checkMachine asserts that the table is exactly want, that every edge passes, that every other
// pair of distinct states is refused with a conflict naming both, and that staying put passes.
func checkMachine[S ~string](t *testing.T, machine string, states []S, table []Transition[S], want map[S][]S, check func(from, to S) error) {
	t.Helper()
	wantSet := edgeSet(want)
	if len(want) != len(states) {
		t.Errorf("expected table covers %d states, the machine has %d", len(want), len(states))
	}
	got := map[[2]S]bool{}
	for _, tr := range table {
		e := [2]S{tr.From, tr.To}
		if got[e] {
			t.Errorf("edge %s → %s listed twice", tr.From, tr.To)
		}
		got[e] = true
		if !wantSet[e] {
			t.Errorf("table has unexpected edge %s → %s", tr.From, tr.To)
		}
		if strings.TrimSpace(tr.Trigger) == "" {
			t.Errorf("edge %s → %s has no trigger", tr.From, tr.To)
		}
		if tr.From == tr.To {
			t.Errorf("self edge %s listed: staying put is implicit", tr.From)
		}
	}
	for e := range wantSet {
		if !got[e] {
			t.Errorf("table is missing edge %s → %s", e[0], e[1])
		}
	}

	// Every legal edge, one subtest each.
	for _, tr := range table {
		t.Run(string(tr.From)+"→"+string(tr.To), func(t *testing.T) {
			if err := check(tr.From, tr.To); err != nil {
				t.Errorf("legal edge refused: %v", err)
			}
		})
	}

	// Exhaustively: every pair that is not an edge.
	refused := 0
	for _, from := range states {
		for _, to := range states {
			err := check(from, to)
			switch {
			case from == to:
				if err != nil {
					t.Errorf("staying in %s refused: %v", from, err)
				}
			case wantSet[[2]S{from, to}]:
				// covered above
			default:
				refused++
				if err == nil {
					t.Errorf("illegal %s → %s accepted", from, to)
					continue
				}
				if !errors.Is(err, fault.ErrConflict) {
					t.Errorf("%s → %s: %v does not wrap fault.ErrConflict", from, to, err)
				}
				wantMsg := "illegal " + machine + " transition " + string(from) + " → " + string(to)
				if !strings.HasPrefix(err.Error(), wantMsg) {
					t.Errorf("message %q does not start with %q", err, wantMsg)
				}
				var te *TransitionError
				if !errors.As(err, &te) || te.From != string(from) || te.To != string(to) || te.Machine != machine {
					t.Errorf("%s → %s: not a matching *TransitionError: %#v", from, to, err)
				}
			}
		}
	}
	n := len(states)
	if wantRefused := n*n - n - len(wantSet); refused != wantRefused {
		t.Errorf("refused %d pairs, want %d", refused, wantRefused)
	}
	t.Logf("%s: %d states, %d legal edges, %d illegal pairs refused", machine, n, len(table), refused)
}

func TestMigrationTransitions(t *testing.T) {
	checkMachine(t, "migration", MigrationStates(), MigrationTransitions(), wantMigrationEdges, CheckMigration)
}

func TestAssignmentTransitions(t *testing.T) {
	checkMachine(t, "assignment", AssignmentStates(), AssignmentTransitions(), wantAssignmentEdges, CheckAssignment)
}

// A few refusals spelled out, as an operator would meet them.
func TestRefusalMessages(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{CheckAssignment(AssignmentSucceeded, AssignmentApplying), "illegal assignment transition succeeded → applying (from succeeded: rolling_back)"},
		{CheckAssignment(AssignmentRolledBack, AssignmentRollingBack), "illegal assignment transition rolled_back → rolling_back (rolled_back is final)"},
		{CheckAssignment(AssignmentApplying, AssignmentNotNeeded), "illegal assignment transition applying → not_needed"},
		{CheckAssignment(AssignmentApplying, AssignmentPending), "illegal assignment transition applying → pending"},
		{CheckAssignment(AssignmentRollingBack, AssignmentTimedOut), "illegal assignment transition rolling_back → timed_out"},
		{CheckAssignment(AssignmentNotNeeded, AssignmentRollingBack), "illegal assignment transition not_needed → rolling_back (not_needed is final)"},
		{CheckAssignment(AssignmentFailed, AssignmentSuperseded), "illegal assignment transition failed → superseded"},
		{CheckAssignment(AssignmentTimedOut, AssignmentSucceeded), "illegal assignment transition timed_out → succeeded"},
		{CheckAssignment(AssignmentSuperseded, AssignmentPending), "illegal assignment transition superseded → pending (superseded is final)"},
		{CheckMigration(MigrationSucceeded, MigrationRunning), "illegal migration transition succeeded → running (from succeeded: rolling_back)"},
		{CheckMigration(MigrationRolledBack, MigrationRunning), "illegal migration transition rolled_back → running (rolled_back is final)"},
		{CheckMigration(MigrationPending, MigrationPaused), "illegal migration transition pending → paused (from pending: running, cancelled, failed)"},
		{CheckMigration(MigrationPaused, MigrationSucceeded), "illegal migration transition paused → succeeded"},
		{CheckMigration(MigrationRunning, MigrationRolledBack), "illegal migration transition running → rolled_back"},
		{CheckMigration(MigrationRollingBack, MigrationPaused), "illegal migration transition rolling_back → paused"},
		{CheckMigration(MigrationCancelled, MigrationRunning), "illegal migration transition cancelled → running (from cancelled: rolling_back)"},
	}
	for _, tt := range tests {
		if tt.err == nil || !strings.HasPrefix(tt.err.Error(), tt.want) {
			t.Errorf("got %v, want %q", tt.err, tt.want)
		}
		if !errors.Is(tt.err, fault.ErrConflict) {
			t.Errorf("%v is not a conflict", tt.err)
		}
	}
}

func TestUnknownStates(t *testing.T) {
	for _, err := range []error{
		CheckMigration("", MigrationRunning),
		CheckMigration(MigrationRunning, "done"),
		CheckMigration("done", "done"),
		CheckAssignment("applied", AssignmentSucceeded),
		CheckAssignment(AssignmentPending, "Pending"),
	} {
		if !errors.Is(err, fault.ErrInvalid) || errors.Is(err, fault.ErrConflict) {
			t.Errorf("%v: want an invalid-state error, not a conflict", err)
		}
		if !strings.Contains(err.Error(), "unknown") {
			t.Errorf("%v does not say the state is unknown", err)
		}
	}
}

func TestFinal(t *testing.T) {
	wantMigration := []MigrationState{MigrationSucceeded, MigrationPartiallySucceeded, MigrationFailed, MigrationRolledBack, MigrationCancelled}
	for _, s := range MigrationStates() {
		if got, want := s.Final(), slices.Contains(wantMigration, s); got != want {
			t.Errorf("%s.Final() = %v, want %v", s, got, want)
		}
	}
	wantAssignment := []AssignmentState{AssignmentNotNeeded, AssignmentSucceeded, AssignmentFailed, AssignmentTimedOut,
		AssignmentRolledBack, AssignmentRollbackFailed, AssignmentSuperseded}
	for _, s := range AssignmentStates() {
		if got, want := s.Final(), slices.Contains(wantAssignment, s); got != want {
			t.Errorf("%s.Final() = %v, want %v", s, got, want)
		}
	}
	if MigrationState("nope").Final() || AssignmentState("nope").Final() {
		t.Error("unknown state is final")
	}
}

// The rules of DESIGN.md and the brief, checked as properties of the tables rather than edge by
// edge.
func TestMigrationRules(t *testing.T) {
	for _, s := range MigrationStates() {
		next := s.Next()
		if !s.Final() && !slices.Contains(next, MigrationCancelled) {
			t.Errorf("non-final %s cannot be aborted", s)
		}
		if s.Final() {
			// Out of a result only by operator rollback or retry.
			for _, n := range next {
				if n != MigrationRollingBack && n != MigrationRunning {
					t.Errorf("final %s leads to %s", s, n)
				}
			}
		}
		if len(next) == 0 && !s.Final() {
			t.Errorf("non-final %s is a dead end", s)
		}
		if s != MigrationRolledBack && s != MigrationPending && !slices.Contains(next, MigrationRollingBack) && s != MigrationRollingBack {
			t.Errorf("%s cannot roll back", s)
		}
		if !reachesFinal(s, MigrationState.Next, MigrationState.Final) {
			t.Errorf("%s cannot reach a final state", s)
		}
	}
	for _, tr := range MigrationTransitions() {
		if tr.To == MigrationPending {
			t.Errorf("edge back into pending: %s → pending", tr.From)
		}
		if tr.To == MigrationRolledBack && tr.From != MigrationRollingBack {
			t.Errorf("rolled_back reached without rolling_back, from %s", tr.From)
		}
	}
}

func TestAssignmentRules(t *testing.T) {
	for _, s := range AssignmentStates() {
		next := s.Next()
		if !s.Final() && !slices.Contains(next, AssignmentSuperseded) {
			t.Errorf("non-final %s cannot be superseded by a new attempt", s)
		}
		if !s.Final() && s != AssignmentAgentUnreachable && !slices.Contains(next, AssignmentAgentUnreachable) {
			t.Errorf("non-final %s cannot become agent_unreachable", s)
		}
		if s.Final() && slices.Contains(next, AssignmentAgentUnreachable) {
			t.Errorf("final %s can become agent_unreachable", s)
		}
		if s.Final() {
			for _, n := range next {
				if n != AssignmentRollingBack {
					t.Errorf("final %s leads to %s; only a rollback may leave a final state", s, n)
				}
			}
		}
		if !reachesFinal(s, AssignmentState.Next, AssignmentState.Final) {
			t.Errorf("%s cannot reach a final state", s)
		}
	}
	// agent_unreachable returns to any state it can be entered from.
	for _, tr := range AssignmentTransitions() {
		if tr.To == AssignmentAgentUnreachable && CheckAssignment(AssignmentAgentUnreachable, tr.From) != nil {
			t.Errorf("agent_unreachable cannot return to %s", tr.From)
		}
		if tr.To == AssignmentRolledBack || tr.To == AssignmentRollbackFailed {
			if tr.From != AssignmentRollingBack && tr.From != AssignmentAgentUnreachable {
				t.Errorf("%s reached from %s without rolling back", tr.To, tr.From)
			}
		}
		if tr.To == AssignmentNotNeeded && (tr.From == AssignmentApplying || tr.From == AssignmentVerifying) {
			t.Errorf("not_needed after something was applied (%s)", tr.From)
		}
	}
	// Rollback can always resume.
	for _, s := range []AssignmentState{AssignmentRollbackFailed, AssignmentSucceeded, AssignmentFailed, AssignmentTimedOut} {
		if err := CheckAssignment(s, AssignmentRollingBack); err != nil {
			t.Errorf("%s cannot roll back: %v", s, err)
		}
	}
}

func reachesFinal[S comparable](s S, next func(S) []S, final func(S) bool) bool {
	seen := map[S]bool{}
	queue := []S{s}
	for len(queue) > 0 {
		x := queue[0]
		queue = queue[1:]
		if final(x) {
			return true
		}
		for _, n := range next(x) {
			if !seen[n] {
				seen[n] = true
				queue = append(queue, n)
			}
		}
	}
	return false
}

func TestValid(t *testing.T) {
	for _, s := range MigrationStates() {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	for _, s := range AssignmentStates() {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	if MigrationState("").Valid() || AssignmentState("done").Valid() {
		t.Error("unknown state valid")
	}
	if len(MigrationStates()) != 9 || len(AssignmentStates()) != 13 {
		t.Errorf("got %d migration and %d assignment states, want 9 and 13", len(MigrationStates()), len(AssignmentStates()))
	}
}

// The returned tables are copies: a caller cannot change the machine.
func TestTablesAreCopies(t *testing.T) {
	tr := MigrationTransitions()
	tr[0].To = MigrationSucceeded
	states := AssignmentStates()
	states[0] = "hacked"
	if CheckMigration(MigrationPending, MigrationSucceeded) == nil {
		t.Error("mutating the returned table changed the machine")
	}
	if AssignmentStates()[0] != AssignmentPending {
		t.Error("mutating the returned states changed the machine")
	}
}

func TestMarkdownTables(t *testing.T) {
	md := MarkdownTables()
	for _, want := range []string{"## Migration states", "## Migration transitions", "## Assignment states", "## Assignment transitions",
		"| `rolled_back` | yes | — |", "| `paused` | no | `running`, `rolling_back`, `failed`, `cancelled` |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	for _, tr := range MigrationTransitions() {
		if !strings.Contains(md, "| `"+string(tr.From)+"` | `"+string(tr.To)+"` | ") {
			t.Errorf("markdown lacks migration edge %s → %s", tr.From, tr.To)
		}
	}
	for _, tr := range AssignmentTransitions() {
		if !strings.Contains(md, "| `"+string(tr.From)+"` | `"+string(tr.To)+"` | ") {
			t.Errorf("markdown lacks assignment edge %s → %s", tr.From, tr.To)
		}
	}
	rows := strings.Count(md, "\n| `")
	if want := 9 + len(MigrationTransitions()) + 13 + len(AssignmentTransitions()); rows != want {
		t.Errorf("markdown has %d rows, want %d", rows, want)
	}
}
