package runner

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/policy"
	"godwit.dev/godwit/internal/syncbuf"
	"godwit.dev/godwit/internal/wire"
)

// sinks records what the runner hands to the outbox and to the observed-state bucket. Its
// function fields, when set, decide whether a call fails.
type sinks struct {
	failEvent    func(e wire.Event) error
	failObserved func() error

	mu       sync.Mutex
	events   []wire.Event
	observed []wire.ObservedState
}

var (
	_ EventSink    = (*sinks)(nil).appendEvent
	_ ObservedSink = (*sinks)(nil).putObserved
)

func (s *sinks) appendEvent(_ context.Context, e wire.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failEvent != nil {
		if err := s.failEvent(e); err != nil {
			return err
		}
	}
	s.events = append(s.events, e)
	return nil
}

func (s *sinks) putObserved(_ context.Context, st wire.ObservedState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failObserved != nil {
		if err := s.failObserved(); err != nil {
			return err
		}
	}
	s.observed = append(s.observed, st)
	return nil
}

func (s *sinks) setFailEvent(f func(wire.Event) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failEvent = f
}

func (s *sinks) setFailObserved(f func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failObserved = f
}

// eventsFor returns the events about migration, in the order received.
func (s *sinks) eventsFor(migration string) []wire.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []wire.Event
	for _, e := range s.events {
		if e.Data.Migration == migration {
			out = append(out, e)
		}
	}
	return out
}

func (s *sinks) lastObserved() (wire.ObservedState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.observed) == 0 {
		return wire.ObservedState{}, false
	}
	return s.observed[len(s.observed)-1], true
}

func types(events []wire.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}

// waitEvent polls until the outbox has an event of type typ about migration. Events reach the
// outbox just after the journal commit that records them, so a test that has seen the state in
// the journal waits for its event.
func (b *bundle) waitEvent(migration, typ string) wire.Event {
	b.t.Helper()
	var found wire.Event
	waitFor(b.t, typ+" event for "+migration, func() bool {
		for _, e := range b.sinks.eventsFor(migration) {
			if e.Type == typ {
				found = e
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("events: %v", types(b.sinks.eventsFor(migration))) })
	return found
}

// said reports whether the outbox has an event of type typ about migration whose message
// contains substr.
func (b *bundle) said(migration, typ, substr string) bool {
	return slices.ContainsFunc(b.sinks.eventsFor(migration), func(e wire.Event) bool {
		return e.Type == typ && strings.Contains(e.Data.Message, substr)
	})
}

// cancelRollback asks for migration attempt 1's rollback at generation gen, waits until its
// command has created marker, and cancels it at gen+1: the assignment ends rollback_failed with
// that command stopped before its result was recorded.
func (b *bundle) cancelRollback(migration string, gen int, marker string, steps ...wire.StepSpec) {
	b.t.Helper()
	b.r.Desired(desired(1, assignment(migration, 1, gen, wire.ActionRollback, steps...)))
	waitFor(b.t, "the rollback to create "+marker, func() bool { return b.exists(marker) }, nil)
	b.r.Desired(desired(1, assignment(migration, 1, gen+1, wire.ActionCancel, steps...)))
	b.waitState(migration, 1, stateRollbackFailed)
}

// bundle is one runner under test with its journal, work directory and fakes.
type bundle struct {
	t        *testing.T
	dir      string // the commands' working directory: marker and counter files live here
	path     string // the journal
	sinks    *sinks
	logs     *syncbuf.Buffer
	canStart atomic.Bool
	system   wire.SystemInfo
	policy   *policy.Policy // set, then restart: the agent policy

	r      *Runner
	cancel context.CancelFunc
	done   chan error
}

// setup opens a runner on a fresh journal and starts Run.
func setup(t *testing.T) *bundle {
	t.Helper()
	return setupIn(t, "")
}

// setupIn is setup with the journal in journalDir ("": the work directory).
func setupIn(t *testing.T, journalDir string) *bundle {
	t.Helper()
	dir := t.TempDir()
	if journalDir == "" {
		journalDir = dir
	}
	b := &bundle{t: t, dir: dir, path: filepath.Join(journalDir, "runner.db"), sinks: &sinks{}, logs: &syncbuf.Buffer{},
		system: wire.SystemInfo{OS: "linux", Hostname: "node-1", AgentVersion: "test"}}
	b.canStart.Store(true)
	t.Cleanup(func() {
		b.stop()
		if b.r != nil {
			_ = b.r.Close()
		}
		if t.Failed() {
			t.Logf("runner log:\n%s", b.logs.String())
		}
	})
	b.open()
	b.start()
	return b
}

func (b *bundle) config() Config {
	return Config{
		AgentID: "agent-1", JournalPath: b.path, WorkDir: b.dir, Grace: time.Second,
		Logger:   slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Events:   b.sinks.appendEvent,
		Observed: b.sinks.putObserved,
		System:   func() wire.SystemInfo { return b.system },
		CanStart: b.canStart.Load,
		Policy:   b.policy,
	}
}

func (b *bundle) open() {
	b.t.Helper()
	r, err := Open(b.config())
	if err != nil {
		b.t.Fatalf("open: %v", err)
	}
	b.r = r
}

func (b *bundle) start() {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.done = cancel, make(chan error, 1)
	go func() { b.done <- b.r.Run(ctx) }()
}

// stop cancels Run, as the agent does when it shuts down, and waits for it to return.
func (b *bundle) stop() {
	b.t.Helper()
	if b.cancel == nil {
		return
	}
	b.cancel()
	select {
	case err := <-b.done:
		if err != nil {
			b.t.Errorf("Run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		b.t.Fatal("Run did not return after its context ended")
	}
	b.cancel = nil
}

// restart is an agent restart: stop, close the journal, open it again, run.
func (b *bundle) restart() {
	b.t.Helper()
	b.stop()
	if err := b.r.Close(); err != nil {
		b.t.Fatal(err)
	}
	b.open()
	b.start()
}

func (b *bundle) file(name string) string { return filepath.Join(b.dir, name) }

func (b *bundle) read(name string) string {
	raw, err := os.ReadFile(b.file(name))
	if err != nil && !os.IsNotExist(err) {
		b.t.Fatal(err)
	}
	return string(raw)
}

func (b *bundle) exists(name string) bool {
	_, err := os.Stat(b.file(name))
	return err == nil
}

func (b *bundle) touch(name string) {
	if err := os.WriteFile(b.file(name), nil, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// observedOf returns the runner's observed assignment for migration.
func (b *bundle) observedOf(migration string) (wire.ObservedAssignment, bool) {
	for _, a := range b.r.Observed().Assignments {
		if a.Migration == migration {
			return a, true
		}
	}
	return wire.ObservedAssignment{}, false
}

// waitState polls until migration's latest attempt reaches state.
func (b *bundle) waitState(migration string, attempt int, state string) wire.ObservedAssignment {
	b.t.Helper()
	var got wire.ObservedAssignment
	waitFor(b.t, fmt.Sprintf("%s attempt %d to be %s", migration, attempt, state), func() bool {
		var ok bool
		got, ok = b.observedOf(migration)
		return ok && got.Attempt == attempt && got.State == state
	}, func() string { return fmt.Sprintf("last: %+v", got) })
	return got
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool, last func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			if last != nil {
				msg = last()
			}
			t.Fatalf("timed out waiting for %s; %s", what, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (b *bundle) waitLog(substr string) {
	b.t.Helper()
	waitFor(b.t, "log line "+substr, func() bool { return strings.Contains(b.logs.String(), substr) }, nil)
}

func step(name, run string) wire.StepSpec {
	return wire.StepSpec{Name: name, Run: run, TimeoutMS: 30_000}
}

func assignment(migration string, attempt, generation int, action string, steps ...wire.StepSpec) wire.DesiredAssignment {
	return wire.DesiredAssignment{Migration: migration, Attempt: attempt, Generation: generation, Action: action,
		FromVersion: "1.0", ToVersion: "2.0", Steps: steps}
}

func desired(epoch int64, as ...wire.DesiredAssignment) wire.DesiredState {
	return wire.DesiredState{AgentID: "agent-1", Epoch: epoch, Assignments: as}
}
