package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/health"
	"godwit.dev/godwit/internal/wire"
)

func TestAppendThenRunDeliversInOrder(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	o := open(t, journalPath(t), Limits{}, clock)
	sk := newSink()
	// The durability the package comment promises: WAL, with an fsync at every commit.
	var mode string
	var sync int
	if err := o.db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	if err := o.db.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Errorf("synchronous = %d, %v; want 2 (FULL)", sync, err)
	}

	want := appendN(t, o, wire.SeverityInfo, 0, 100)
	if n, err := o.Len(); err != nil || n != 100 {
		t.Fatalf("Len = %d, %v; want 100", n, err)
	}
	run(t, o, sk.publish)
	waitLen(t, o, 0, 10*time.Second)

	// While Run is idle, an Append wakes it at once: the fake clock never moves in this test.
	want = append(want, appendN(t, o, wire.SeverityError, 100, 100)...)
	waitLen(t, o, 0, 10*time.Second)
	sk.check(t, want, len(want))

	var e wire.Event
	if err := json.Unmarshal(sk.payload[want[150]], &e); err != nil {
		t.Fatal(err)
	}
	if e.ID != want[150] || e.Data.Message != "event 150" || e.Severity != wire.SeverityError {
		t.Errorf("delivered %+v, want event 150", e)
	}
	if err := e.Validate(testAgent); err != nil {
		t.Errorf("delivered event does not validate: %v", err)
	}
}

func TestConcurrentAppendDuringRun(t *testing.T) {
	t.Parallel()
	o := open(t, journalPath(t), Limits{}, newFakeClock())
	sk := newSink()
	run(t, o, sk.publish)

	const writers, each = 4, 250
	ids := make([][]string, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := newEvent(wire.SeverityWarning, w*each+i)
				if err := o.Append(context.Background(), e); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				ids[w] = append(ids[w], e.ID)
			}
		})
	}
	wg.Wait()
	waitLen(t, o, 0, 30*time.Second)

	order, raw, _ := sk.snapshot()
	if raw != writers*each || len(order) != writers*each {
		t.Fatalf("%d deliveries of %d distinct events, want %d of each", raw, len(order), writers*each)
	}
	// Each writer's events arrive in the order it appended them.
	pos := make(map[string]int, len(order))
	for i, id := range order {
		pos[id] = i
	}
	for w := range writers {
		for i := 1; i < len(ids[w]); i++ {
			if pos[ids[w][i]] < pos[ids[w][i-1]] {
				t.Fatalf("writer %d: event %d delivered before event %d", w, i, i-1)
			}
		}
	}
}

// TestFourHourOutage is the acceptance test: an agent cut off from the hub for four hours
// (on the fake clock), restarted half-way through, delivers its whole backlog in order with
// nothing lost and nothing duplicated, and retries at the capped pace meanwhile.
func TestFourHourOutage(t *testing.T) {
	t.Parallel()
	const (
		total   = 10_000
		outage  = 4 * time.Hour
		step    = backoffMax // one back-off cycle at the cap
		cycles  = int(outage / step)
		restart = cycles / 2
	)
	path := journalPath(t)
	clock := newFakeClock()
	sk := newSink()
	sk.setFailing(true)

	o, err := Open(path, Limits{}, testLogger(t), clock)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, o, sk.publish)
	var want []string
	for c := range cycles {
		n := (total - len(want)) / (cycles - c)
		want = append(want, appendN(t, o, severityOf(len(want)), len(want), n)...)
		waitBackoff(t, clock)
		if c == restart {
			// The agent restarts in the middle of the outage: everything is in the journal.
			stop()
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			clock.dropTimers() // the stopped Run's back-off
			if o, err = Open(path, Limits{}, testLogger(t), clock); err != nil {
				t.Fatalf("reopen: %v", err)
			}
			if n, err := o.Len(); err != nil || n != len(want) {
				t.Fatalf("after restart the journal holds %d events (%v), want %d", n, err, len(want))
			}
			stop = run(t, o, sk.publish)
			waitBackoff(t, clock)
		}
		clock.Advance(step)
	}
	t.Cleanup(func() { _ = o.Close() })
	waitBackoff(t, clock) // the attempt after the last cycle failed too
	if len(want) != total {
		t.Fatalf("appended %d events, want %d", len(want), total)
	}
	_, raw, failures := sk.snapshot()
	if raw != 0 {
		t.Fatalf("%d events delivered during the outage", raw)
	}
	// One attempt per back-off cycle, plus the first one and the immediate one after the
	// restart: the events appended during the outage did not cut the back-off short.
	if failures != cycles+2 {
		t.Errorf("%d failed attempts over %d back-off cycles", failures, cycles)
	}

	sk.setFailing(false)
	clock.Advance(step)
	waitLen(t, o, 0, 2*time.Minute)
	sk.check(t, want, total)
	// The failed attempts were recorded on the first event, and survived the restart.
	sk.mu.Lock()
	first := sk.attempts[want[0]]
	sk.mu.Unlock()
	if first != failures {
		t.Errorf("first event reached the hub with %d recorded attempts, want %d", first, failures)
	}
	if o.Full() {
		t.Error("Full after the backlog drained")
	}
}

func severityOf(i int) string {
	return []string{wire.SeverityInfo, wire.SeverityWarning, wire.SeverityError}[i%3]
}

// TestCrashBetweenAckAndDelete kills a real process after the broker acknowledged a batch and
// before the outbox deleted its events. The restarted outbox sends the same ids again, which the
// de-duplicating hub ignores.
func TestCrashBetweenAckAndDelete(t *testing.T) {
	if path := os.Getenv("GODWIT_OUTBOX_CRASH_CHILD"); path != "" {
		crashChild(path)
		return
	}
	t.Parallel()
	path := journalPath(t)
	o, err := Open(path, Limits{}, testLogger(t), newFakeClock())
	if err != nil {
		t.Fatal(err)
	}
	want := appendN(t, o, wire.SeverityError, 0, 3)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}

	acked := path + ".acked"
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashBetweenAckAndDelete$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GODWIT_OUTBOX_CRASH_CHILD="+path)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 7 {
		t.Fatalf("child: %v, want exit status 7\n%s", err, out)
	}
	got, err := os.ReadFile(acked)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != strings.Join(want, ",") {
		t.Fatalf("child acknowledged %q, want the three events in one batch %v", got, want)
	}

	// The hub stored the batch before the crash.
	sk := newSink()
	var entries []Entry
	for _, id := range want {
		entries = append(entries, Entry{ID: id})
	}
	if err := sk.publish(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
	o = open(t, path, Limits{}, newFakeClock())
	if n, err := o.Len(); err != nil || n != 3 {
		t.Fatalf("after the crash the journal holds %d events (%v), want 3", n, err)
	}
	run(t, o, sk.publish)
	waitLen(t, o, 0, 10*time.Second)
	sk.check(t, want, 6)
	sk.mu.Lock()
	resent := sk.seen[want[0]]
	sk.mu.Unlock()
	if resent != 2 {
		t.Errorf("first event delivered %d times, want 2 (sent again with the same id)", resent)
	}
}

// crashChild runs in a child process: it publishes the first batch, records the acknowledgement
// durably, and dies before Run can delete its events.
func crashChild(path string) {
	o, err := Open(path, Limits{}, nil, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	_ = o.Run(context.Background(), func(_ context.Context, entries []Entry) error {
		var ids []string
		for _, e := range entries {
			ids = append(ids, e.ID)
		}
		f, err := os.Create(path + ".acked")
		if err == nil {
			_, err = f.WriteString(strings.Join(ids, ","))
		}
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(3)
		}
		os.Exit(7) // the broker has acknowledged; the process dies before the delete
		return nil
	})
	os.Exit(4)
}

func TestLimits(t *testing.T) {
	t.Parallel()
	t.Run("soft limit on events", func(t *testing.T) {
		t.Parallel()
		o := open(t, journalPath(t), Limits{SoftMaxEvents: 5}, newFakeClock())
		appendN(t, o, wire.SeverityInfo, 0, 4)
		if o.Full() {
			t.Fatal("Full at 4 of 5 events")
		}
		appendN(t, o, wire.SeverityInfo, 4, 1)
		if !o.Full() {
			t.Fatal("not Full at 5 of 5 events")
		}
		// Past the soft limit everything is still written: only new work stops.
		appendN(t, o, wire.SeverityInfo, 5, 3)
		appendN(t, o, wire.SeverityError, 8, 3)
		if n, _ := o.Len(); n != 11 {
			t.Fatalf("Len = %d, want 11", n)
		}
		sk := newSink()
		run(t, o, sk.publish)
		waitLen(t, o, 0, 10*time.Second)
		if o.Full() {
			t.Error("still Full once drained")
		}
	})

	t.Run("hard limit on bytes", func(t *testing.T) {
		t.Parallel()
		const hard = 4 * wire.MaxEventBytes
		path := journalPath(t)
		o := open(t, path, Limits{HardMaxBytes: hard}, newFakeClock())
		big := func(severity string) wire.Event {
			e := newEvent(severity, 0)
			e.Data.OutputTail = strings.Repeat("x", 16<<10)
			return e
		}
		infos := 0
		for {
			err := o.Append(t.Context(), big(wire.SeverityInfo))
			if errors.Is(err, ErrOutboxFull) {
				if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not recorded") {
					t.Errorf("unclear refusal: %v", err)
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			infos++
			if infos > 100 {
				t.Fatal("info events accepted without limit")
			}
		}
		if !o.Full() {
			t.Error("not Full when refusing info events")
		}
		if o.bytes > hard {
			t.Errorf("info events took the journal to %d bytes, over the hard limit %d", o.bytes, hard)
		}
		// Warning and error events are never refused.
		for i := range 10 {
			sev := []string{wire.SeverityWarning, wire.SeverityError}[i%2]
			if err := o.Append(t.Context(), big(sev)); err != nil {
				t.Fatalf("%s event past the hard limit: %v", sev, err)
			}
		}
		if n, _ := o.Len(); n != infos+10 {
			t.Errorf("Len = %d, want %d", n, infos+10)
		}
		if o.bytes <= hard {
			t.Errorf("journal at %d bytes, expected past the hard limit %d", o.bytes, hard)
		}

		// The counters are the journal's, not memory's: a restart finds the same state.
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
		o2 := open(t, path, Limits{HardMaxBytes: hard}, newFakeClock())
		if !o2.Full() {
			t.Error("not Full after a restart")
		}
		if err := o2.Append(t.Context(), big(wire.SeverityInfo)); !errors.Is(err, ErrOutboxFull) {
			t.Errorf("info event after restart: err = %v, want ErrOutboxFull", err)
		}
		sk := newSink()
		run(t, o2, sk.publish)
		waitLen(t, o2, 0, 10*time.Second)
		if o2.Full() {
			t.Error("still Full once drained")
		}
		if err := o2.Append(t.Context(), big(wire.SeverityInfo)); err != nil {
			t.Errorf("info event once drained: %v", err)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		t.Parallel()
		for _, lim := range []Limits{{SoftMaxEvents: -1}, {HardMaxBytes: -1}, {HardMaxBytes: 1000}} {
			if _, err := Open(journalPath(t), lim, nil, nil); err == nil {
				t.Errorf("Open with %+v succeeded", lim)
			}
		}
	})
}

func TestAppendRejects(t *testing.T) {
	t.Parallel()
	o := open(t, journalPath(t), Limits{}, newFakeClock())
	noID := newEvent(wire.SeverityError, 0)
	noID.ID = ""
	badSev := newEvent("fatal", 0)
	for name, e := range map[string]wire.Event{"no id": noID, "unknown severity": badSev} {
		if err := o.Append(t.Context(), e); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The same event twice (a caller retrying an Append) is queued once.
	e := newEvent(wire.SeverityError, 1)
	for range 2 {
		if err := o.Append(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := o.Len(); n != 1 {
		t.Errorf("Len = %d after appending one event twice, want 1", n)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Append(t.Context(), newEvent(wire.SeverityError, 2)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if err := o.Run(t.Context(), newSink().publish); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
}

func TestOversizedEventTruncated(t *testing.T) {
	t.Parallel()
	huge := func(prefix string, n int) string {
		return prefix + strings.Repeat("é", n/2) + "<END>"
	}
	cases := []struct {
		name  string
		mod   func(*wire.EventData)
		check func(t *testing.T, orig, got wire.EventData)
	}{
		{"output tail keeps its newest part", func(d *wire.EventData) {
			d.OutputTail = huge("oldest line\n", 200<<10)
			d.Error = "exit status 3"
		}, func(t *testing.T, orig, got wire.EventData) {
			if !strings.HasSuffix(got.OutputTail, "<END>") || !strings.Contains(got.OutputTail, "truncated by the agent outbox") {
				t.Errorf("output tail %q… lost its end or has no marker", got.OutputTail[:80])
			}
			if got.Error != orig.Error {
				t.Errorf("error %q changed, want %q", got.Error, orig.Error)
			}
		}},
		{"error text keeps its start", func(d *wire.EventData) {
			d.Error = huge("first cause: ", 300<<10)
		}, func(t *testing.T, orig, got wire.EventData) {
			if !strings.HasPrefix(got.Error, "first cause: ") || !strings.Contains(got.Error, "truncated by the agent outbox") {
				t.Errorf("error %q… lost its start or has no marker", got.Error[:80])
			}
		}},
		{"extra goes whole, said in the message", func(d *wire.EventData) {
			d.Extra = json.RawMessage(`{"blob":"` + strings.Repeat("a", 100<<10) + `"}`)
			d.Error = "check failed"
		}, func(t *testing.T, orig, got wire.EventData) {
			if got.Extra != nil || !strings.Contains(got.Message, "extra data of") || got.Error != orig.Error {
				t.Errorf("extra %d bytes, message %q, error %q", len(got.Extra), got.Message, got.Error)
			}
		}},
		{"everything at once", func(d *wire.EventData) {
			d.OutputTail = huge("", 100<<10)
			d.Error = huge("E", 100<<10)
			d.Message = huge("M", 100<<10)
			d.Extra = json.RawMessage(`[` + strings.Repeat("1,", 50<<10) + `1]`)
		}, func(t *testing.T, orig, got wire.EventData) {
			if !strings.HasPrefix(got.Error, "E") || len(got.Error) < keepText/2 {
				t.Errorf("error cut to %d bytes, want at least its first KiBs", len(got.Error))
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := open(t, journalPath(t), Limits{}, newFakeClock())
			e := newEvent(wire.SeverityError, 0)
			tc.mod(&e.Data)
			if err := o.Append(t.Context(), e); err != nil {
				t.Fatalf("Append: %v", err)
			}
			sk := newSink()
			run(t, o, sk.publish)
			waitLen(t, o, 0, 10*time.Second)
			sk.check(t, []string{e.ID}, 1)
			p := sk.payload[e.ID]
			if len(p) > wire.MaxEventBytes {
				t.Fatalf("payload is %d bytes, over %d", len(p), wire.MaxEventBytes)
			}
			var got wire.Event
			if err := json.Unmarshal(p, &got); err != nil {
				t.Fatal(err)
			}
			if err := got.Validate(testAgent); err != nil {
				t.Errorf("truncated event does not validate: %v", err)
			}
			if got.ID != e.ID || got.Type != e.Type || got.Severity != e.Severity || got.Data.Migration != "m1" {
				t.Errorf("envelope changed: %+v", got)
			}
			tc.check(t, e.Data, got.Data)
		})
	}
}

func TestDamagedJournalRefused(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		make func(t *testing.T, path string)
		want string
	}{
		{"not a database", func(t *testing.T, path string) {
			writeFile(t, path, []byte("events I must not lose\n"))
		}, "not a SQLite database"},
		{"damaged pages", func(t *testing.T, path string) {
			o, err := Open(path, Limits{}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 200 {
				e := newEvent(wire.SeverityError, i)
				e.Data.OutputTail = strings.Repeat("o", 1000)
				if err := o.Append(t.Context(), e); err != nil {
					t.Fatal(err)
				}
			}
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) < 8*4096 {
				t.Fatalf("journal is only %d bytes", len(raw))
			}
			for i := 2 * 4096; i < 6*4096; i++ {
				raw[i] = 0xa5
			}
			writeFile(t, path, raw)
		}, "damaged"},
		{"another application's database", func(t *testing.T, path string) {
			sqliteExec(t, path, "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
		}, "not a Godwit outbox"},
		{"newer schema", func(t *testing.T, path string) {
			o, err := Open(path, Limits{}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			sqliteExec(t, path, "PRAGMA user_version = 99")
		}, "newer than this agent"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := journalPath(t)
			tc.make(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			o, err := Open(path, Limits{}, nil, nil)
			if err == nil {
				_ = o.Close()
				t.Fatal("Open accepted the file")
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s and say %q", err, path, tc.want)
			}
			if !errors.Is(err, health.ErrNeedsOperator) {
				t.Errorf("error %q is not marked as needing an operator", err)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(after) != string(before) {
				t.Error("the refused file was modified")
			}
		})
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func sqliteExec(t *testing.T, path, stmt string) {
	t.Helper()
	db, err := sqlOpen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		t.Fatal(err)
	}
}

func TestCloseStopsRun(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	o, err := Open(filepath.Join(t.TempDir(), "outbox.db"), Limits{}, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	sk := newSink()
	sk.setFailing(true)
	done := make(chan error, 1)
	go func() { done <- o.Run(context.Background(), sk.publish) }()
	appendN(t, o, wire.SeverityError, 0, 1)
	waitBackoff(t, clock) // Run is waiting out a back-off
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running after Close")
	}
	if err := o.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Queued events go in one call of the Publisher, and are deleted only once it has returned nil:
// a failed call leaves them all queued, each with an attempt counted.
func TestQueuedEventsGoInOneBatch(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	o := open(t, journalPath(t), Limits{}, clock)
	want := appendN(t, o, wire.SeverityInfo, 0, batchSize+10)
	sk := newSink()
	var mu sync.Mutex
	var queuedDuring []int
	fail := true
	pub := func(ctx context.Context, entries []Entry) error {
		n, err := o.Len()
		if err != nil {
			return err
		}
		mu.Lock()
		queuedDuring = append(queuedDuring, n)
		failNow := fail
		fail = false
		mu.Unlock()
		if failNow {
			return errors.New("hub unreachable")
		}
		return sk.publish(ctx, entries)
	}
	run(t, o, pub)
	waitBackoff(t, clock)
	var attempts []int
	rows, err := o.db.Query("SELECT attempts FROM outbox ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a int
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		attempts = append(attempts, a)
	}
	rows.Close()
	for n, a := range attempts {
		if want := min(1, max(0, batchSize-n)); a != want {
			t.Fatalf("entry %d has %d attempts after the first batch failed, want %d", n, a, want)
		}
	}
	clock.Advance(backoffMax)
	waitLen(t, o, 0, 10*time.Second)
	sk.check(t, want, len(want))
	sk.mu.Lock()
	calls := sk.calls
	sk.mu.Unlock()
	if len(calls) != 2 || calls[0] != batchSize || calls[1] != 10 {
		t.Errorf("entries per publish %v, want [%d 10]", calls, batchSize)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(queuedDuring) != fmt.Sprint([]int{batchSize + 10, batchSize + 10, 10}) {
		t.Errorf("events queued during each publish %v: none may be deleted before its batch is acknowledged", queuedDuring)
	}
}

// A batch is bounded by wire.MaxBatchBytes too, and an event holding a newline (never written by
// encoding/json, but the journal's bytes are not trusted) goes alone.
func TestBatchBounds(t *testing.T) {
	t.Parallel()
	o := open(t, journalPath(t), Limits{}, newFakeClock())
	big := newEvent(wire.SeverityInfo, 0)
	big.Data.OutputTail = strings.Repeat("x", wire.MaxEventBytes-1024)
	var want []string
	for n := range 3 {
		e := big
		e.ID = newEvent(wire.SeverityInfo, n).ID
		if err := o.Append(t.Context(), e); err != nil {
			t.Fatal(err)
		}
		want = append(want, e.ID)
	}
	want = append(want, appendN(t, o, wire.SeverityInfo, 3, 3)...)
	// Make the fifth event hold a newline, as a damaged or foreign journal might.
	if _, err := o.db.Exec("UPDATE outbox SET payload = CAST(replace(CAST(payload AS TEXT), '\"type\"', char(10) || '\"type\"') AS BLOB) WHERE id = ?", want[4]); err != nil {
		t.Fatal(err)
	}
	sk := newSink()
	run(t, o, sk.publish)
	waitLen(t, o, 0, 10*time.Second)
	sk.check(t, want, len(want))
	sk.mu.Lock()
	defer sk.mu.Unlock()
	// Two large events fill a batch; the third goes with the small fourth; the fifth alone.
	if fmt.Sprint(sk.calls) != "[2 2 1 1]" {
		t.Errorf("entries per publish %v, want [2 2 1 1]", sk.calls)
	}
	if !strings.Contains(string(sk.payload[want[4]]), "\n") {
		t.Errorf("the fifth event holds no newline: %q", sk.payload[want[4]])
	}
}
