package lease

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/lease/leasetest"
)

// interval is one term as its holder saw it, on the shared clock: from the acquisition to the
// cancellation of its context (end), or to its watchdog deadline if that came first (valid).
// Past the deadline Term.Check reports the term over whether or not the context has been
// cancelled yet: a cancellation after the deadline means the process was not scheduled in
// time, which only the store's fencing makes harmless (docs/ha.md).
type interval struct {
	who        string
	epoch      uint64
	start, end time.Time
	deadline   time.Time // the watchdog deadline in force when it ended
	open       bool      // still leading when the history was taken
	reason     Reason
}

// valid is when the term stopped being valid by its own clock.
func (iv interval) valid() time.Time {
	if !iv.deadline.IsZero() && iv.deadline.Before(iv.end) {
		return iv.deadline
	}
	return iv.end
}

// intervals rebuilds the terms from the transitions.
func intervals(rec *recorder) ([]interval, error) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	open := map[string]*interval{}
	var out []interval
	for i, tr := range rec.trs {
		who := rec.who[i]
		switch tr.Reason {
		case ReasonAcquired:
			if iv := open[who]; iv != nil {
				return nil, fmt.Errorf("%s acquired epoch %d while leading under epoch %d", who, tr.Epoch, iv.epoch)
			}
			open[who] = &interval{who: who, epoch: tr.Epoch, start: tr.At, open: true}
		case ReasonReplaced, ReasonWatchdog, ReasonReleased, ReasonLost:
			iv := open[who]
			if iv == nil || iv.epoch != tr.Epoch {
				return nil, fmt.Errorf("%s ended epoch %d (%s) without leading under it", who, tr.Epoch, tr.Reason)
			}
			iv.end, iv.open, iv.reason, iv.deadline = tr.At, false, tr.Reason, tr.Deadline
			out = append(out, *iv)
			delete(open, who)
		}
	}
	for _, iv := range open {
		out = append(out, *iv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start.Before(out[j].start) })
	return out, nil
}

// verify checks a history: no two terms overlap while valid, and epochs strictly increase
// from term to term.
func verify(rec *recorder) ([]interval, error) {
	ivs, err := intervals(rec)
	if err != nil {
		return nil, err
	}
	for i := 1; i < len(ivs); i++ {
		prev, cur := ivs[i-1], ivs[i]
		if cur.epoch <= prev.epoch {
			return ivs, fmt.Errorf("epoch %d (%s) follows epoch %d (%s)", cur.epoch, cur.who, prev.epoch, prev.who)
		}
		for _, earlier := range ivs[:i] {
			if earlier.open || cur.start.Before(earlier.valid()) {
				return ivs, fmt.Errorf("%s led under epoch %d from %s while %s still led under epoch %d (until %s)",
					cur.who, cur.epoch, cur.start.Format("15:04:05.000000"), earlier.who, earlier.epoch, earlier.valid().Format("15:04:05.000000"))
			}
		}
	}
	return ivs, nil
}

// lateOverlaps counts the terms that began before an earlier term's context was cancelled:
// each of them also began after that term's deadline (verify checked), so the cancellation
// came late because the process was not scheduled.
func lateOverlaps(ivs []interval) int {
	n := 0
	for i := 1; i < len(ivs); i++ {
		for _, earlier := range ivs[:i] {
			if !earlier.open && ivs[i].start.Before(earlier.end) {
				n++
				break
			}
		}
	}
	return n
}

// stallMeter measures how late this process's goroutines get to run: the largest overshoot of
// a 5 ms sleep.
type stallMeter struct {
	stop chan struct{}
	done chan struct{}
	max  time.Duration
}

func startStallMeter() *stallMeter {
	m := &stallMeter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			select {
			case <-m.stop:
				return
			default:
			}
			t0 := time.Now()
			time.Sleep(5 * time.Millisecond)
			m.max = max(m.max, time.Since(t0)-5*time.Millisecond)
		}
	}()
	return m
}

func (m *stallMeter) Stop() time.Duration {
	close(m.stop)
	<-m.done
	return m.max
}

func checkHistory(t testing.TB, rec *recorder) []interval {
	t.Helper()
	ivs, err := verify(rec)
	if err != nil {
		t.Fatalf("history: %v:%s", err, rec)
	}
	return ivs
}

// The checker itself must catch what it is there to catch.
func TestCheckerCatchesOverlapsAndOldEpochs(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	build := func(evs ...any) *recorder {
		r := &recorder{}
		for i := 0; i < len(evs); i += 4 {
			r.on(evs[i].(string))(Transition{Reason: evs[i+1].(Reason), Epoch: uint64(evs[i+2].(int)), At: at(evs[i+3].(int))})
		}
		return r
	}
	ok := build("a", ReasonAcquired, 1, 0, "a", ReasonWatchdog, 1, 100, "b", ReasonAcquired, 5, 150, "b", ReasonReleased, 5, 300,
		"a", ReasonAcquired, 7, 300)
	if ivs, err := verify(ok); err != nil || lateOverlaps(ivs) != 0 {
		t.Fatalf("a valid history refused: %v", err)
	}
	// A context cancelled after its deadline: the term was valid until the deadline only.
	late := &recorder{}
	late.on("a")(Transition{Reason: ReasonAcquired, Epoch: 1, At: at(0)})
	late.on("a")(Transition{Reason: ReasonWatchdog, Epoch: 1, At: at(400), Deadline: at(100)})
	late.on("b")(Transition{Reason: ReasonAcquired, Epoch: 2, At: at(300)})
	if ivs, err := verify(late); err != nil || lateOverlaps(ivs) != 1 {
		t.Fatalf("late cancellation: %v, %d late overlaps", err, lateOverlaps(ivs))
	}
	late.on("a")(Transition{Reason: ReasonAcquired, Epoch: 3, At: at(350)})
	if _, err := verify(late); err == nil {
		t.Fatal("a term beginning inside another's validity accepted")
	}
	bad := map[string]*recorder{
		"overlap":     build("a", ReasonAcquired, 1, 0, "b", ReasonAcquired, 2, 50, "a", ReasonWatchdog, 1, 100),
		"open":        build("a", ReasonAcquired, 1, 0, "b", ReasonAcquired, 2, 500),
		"old epoch":   build("a", ReasonAcquired, 3, 0, "a", ReasonWatchdog, 3, 100, "b", ReasonAcquired, 2, 200),
		"same epoch":  build("a", ReasonAcquired, 3, 0, "a", ReasonWatchdog, 3, 100, "b", ReasonAcquired, 3, 200),
		"double term": build("a", ReasonAcquired, 1, 0, "a", ReasonAcquired, 2, 50),
		"stray end":   build("a", ReasonWatchdog, 1, 0),
	}
	for name, r := range bad {
		if _, err := verify(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// randomTiming is short, to fit many trials, with a margin (350 ms) far above the scheduling
// delays of a loaded machine: the margin is what the checker's verdict rests on.
var randomTiming = Timing{TTL: 800 * time.Millisecond, RenewInterval: 150 * time.Millisecond,
	CallTimeout: 120 * time.Millisecond, Margin: 350 * time.Millisecond, RecoverAfter: 2}

// trialStats are the figures of one or more trials.
type trialStats struct {
	trials, terms int
	ends          map[Reason]int
	faults        map[string]int
	minGap        time.Duration   // between a term's end and the next one's start
	minGapDog     time.Duration   // the same after a watchdog end, the next term another process's
	late          []time.Duration // how long after its deadline each term ended by the watchdog was cancelled
	lateOverlaps  int             // terms begun before an earlier term's late cancellation
}

// lateness returns the median and the largest delay of watchdog cancellations.
func (s trialStats) lateness() (p50, top time.Duration) {
	if len(s.late) == 0 {
		return 0, 0
	}
	l := append([]time.Duration(nil), s.late...)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l[len(l)/2], l[len(l)-1]
}

func (s *trialStats) add(o trialStats) {
	s.trials += o.trials
	s.terms += o.terms
	for k, v := range o.ends {
		s.ends[k] += v
	}
	for k, v := range o.faults {
		s.faults[k] += v
	}
	if o.minGap >= 0 && (s.minGap < 0 || o.minGap < s.minGap) {
		s.minGap = o.minGap
	}
	if o.minGapDog >= 0 && (s.minGapDog < 0 || o.minGapDog < s.minGapDog) {
		s.minGapDog = o.minGapDog
	}
	s.late = append(s.late, o.late...)
	s.lateOverlaps += o.lateOverlaps
}

func newStats() trialStats {
	return trialStats{ends: map[Reason]int{}, faults: map[string]int{}, minGap: -1, minGapDog: -1}
}

func (s trialStats) String() string {
	var ends, faults []string
	for _, r := range allReasons[:5] {
		ends = append(ends, fmt.Sprintf("%s=%d", r, s.ends[r]))
	}
	for _, k := range []string{"pause", "partition", "latency", "kill", "restart", "lag"} {
		faults = append(faults, fmt.Sprintf("%s=%d", k, s.faults[k]))
	}
	p50, top := s.lateness()
	return fmt.Sprintf("trials=%d terms=%d ends[%s] faults[%s] min gap between terms=%s, after a watchdog end=%s; watchdog cancellation after the deadline: median %s, max %s; terms begun before an earlier term's context was cancelled (after its deadline)=%d",
		s.trials, s.terms, strings.Join(ends, " "), strings.Join(faults, " "), s.minGap.Round(time.Microsecond), s.minGapDog.Round(time.Microsecond),
		p50.Round(time.Microsecond), top.Round(time.Microsecond), s.lateOverlaps)
}

// Contenders in one process on one real bucket, each behind its own fault injector, under
// random kills (stop renewing for good), pauses (the loop frozen, before or after its call
// reaches the store), partitions (calls hang or are refused) and latency (requests and answers
// late, past the call deadline), reads half of which a lagging replica answers with an older
// revision, and graceful restarts. A checker over the history: no two
// terms overlap on the shared clock, epochs strictly increase; and once the faults stop, a
// living contender leads. GODWIT_LEASE_TRIALS sets the number of trials (20 by default),
// GODWIT_LEASE_SEED the first seed.
func TestRandomizedFaultsNeverOverlap(t *testing.T) {
	trials := envInt(t, "GODWIT_LEASE_TRIALS", 20)
	seed := uint64(envInt(t, "GODWIT_LEASE_SEED", int(time.Now().UnixNano()%1_000_000)))
	ns := startNATS(t)
	kv, _ := ns.bucket(t)

	start := time.Now()
	stalls := startStallMeter()
	total := newStats()
	var mu sync.Mutex
	var failures []string
	sem := make(chan struct{}, 3)
	var wg sync.WaitGroup
	for i := range trials {
		s := seed + uint64(i)
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			st, err := runTrial(kv, s, randomTiming)
			mu.Lock()
			defer mu.Unlock()
			total.add(st)
			if err != nil {
				failures = append(failures, fmt.Sprintf("seed %d: %v", s, err))
			}
		})
	}
	wg.Wait()
	t.Logf("%s; %s; longest stall of this process %s; wall %s", randomTiming, total,
		stalls.Stop().Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	for _, f := range failures {
		t.Error(f)
	}
	if total.terms < trials {
		t.Errorf("only %d terms in %d trials: the trials did not exercise the lease", total.terms, trials)
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a number", name, v)
	}
	return n
}

type member struct {
	name   string
	f      *leasetest.FaultKV
	lag    *laggingKV
	l      *Lease
	killed bool
	busy   time.Time // a fault is in force until then
}

// runTrial runs one trial on its own key and returns its figures, or what went wrong.
func runTrial(kv jetstream.KeyValue, seed uint64, tm Timing) (trialStats, error) {
	st := newStats()
	st.trials = 1
	rng := rand.New(rand.NewPCG(seed, 0x1ea5e))
	key := fmt.Sprintf("trial-%d", seed)
	rec := &recorder{}
	gen := map[int]int{}
	start := func(i int) (*member, error) {
		gen[i]++
		name := fmt.Sprintf("c%d.%d", i, gen[i])
		lag := &laggingKV{KeyValue: kv, watches: true}
		f := leasetest.NewFaultKV(lag, RealClock{})
		l, err := New(Config{Name: key, Holder: fmt.Sprintf("c%d", i), KV: f, Timing: tm,
			Lead: func(t Term) { <-t.Context().Done() }, OnTransition: rec.on(name)})
		if err != nil {
			return nil, err
		}
		if err := l.Start(context.Background()); err != nil {
			return nil, err
		}
		return &member{name: name, f: f, lag: lag, l: l}, nil
	}
	stop := func(m *member) error {
		if m.killed {
			m.f.Close() // a killed loop is stuck in a call until then
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := m.l.Stop(ctx)
		m.f.Close()
		return err
	}
	var ms []*member
	var stopped []*member
	defer func() {
		for _, m := range append(ms, stopped...) {
			m.f.Close()
		}
	}()
	for i := range 3 {
		m, err := start(i)
		if err != nil {
			return st, err
		}
		ms = append(ms, m)
	}
	rnd := func(max time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(max))) }

	end := time.Now().Add(3 * tm.TTL)
	for time.Now().Before(end) {
		time.Sleep(50*time.Millisecond + rnd(200*time.Millisecond)) // the pace of the faults
		i := rng.IntN(len(ms))
		m := ms[i]
		if m.killed || time.Now().Before(m.busy) {
			continue
		}
		d := rnd(2 * tm.TTL)
		switch k := rng.IntN(12); {
		case k < 2:
			st.faults["pause"]++
			m.f.Freeze(rng.IntN(2) == 0)
			time.AfterFunc(d, m.f.Thaw)
		case k < 4:
			st.faults["partition"]++
			m.f.SetPartition([]leasetest.Partition{leasetest.Hang, leasetest.Refuse}[rng.IntN(2)])
			time.AfterFunc(d, func() { m.f.SetPartition(leasetest.Connected) })
		case k < 7:
			st.faults["latency"]++
			m.f.SetLatency(rnd(2*tm.CallTimeout), rnd(2*tm.CallTimeout))
			time.AfterFunc(d, func() { m.f.SetLatency(0, 0) })
		case k < 8:
			alive := 0
			for _, o := range ms {
				if !o.killed {
					alive++
				}
			}
			if alive < 2 {
				continue
			}
			st.faults["kill"]++
			m.f.Kill()
			m.killed = true
			d = 0
		case k < 9:
			st.faults["restart"]++
			if err := stop(m); err != nil {
				return st, fmt.Errorf("graceful stop of %s: %w", m.name, err)
			}
			stopped = append(stopped, m)
			n, err := start(i)
			if err != nil {
				return st, err
			}
			ms[i] = n
			continue
		case k < 10:
			// Every other read answered by a replica that stays at the key's present revision
			// while the key moves on (a NATS server restarted, or without its stream leader).
			e, err := kv.Get(context.Background(), key)
			if err != nil {
				continue
			}
			st.faults["lag"]++
			m.lag.stale.Store(e.Revision())
			time.AfterFunc(d, func() { m.lag.stale.Store(0) })
		default:
			continue // a quiet spell
		}
		m.busy = time.Now().Add(d)
	}
	// Heal, and a living contender must lead.
	for _, m := range ms {
		if !m.killed {
			m.f.Thaw()
			m.f.SetPartition(leasetest.Connected)
			m.f.SetLatency(0, 0)
			m.lag.stale.Store(0)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		for _, m := range ms {
			if !m.killed && m.l.Status().Leader {
				n++
			}
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("no leader 30 s after the faults stopped:%s", rec)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, m := range ms {
		if err := stop(m); err != nil {
			return st, fmt.Errorf("stop %s: %w", m.name, err)
		}
	}

	ivs, err := verify(rec)
	if err != nil {
		return st, fmt.Errorf("%w:%s", err, rec)
	}
	st.terms = len(ivs)
	st.lateOverlaps = lateOverlaps(ivs)
	for i, iv := range ivs {
		if iv.open {
			return st, fmt.Errorf("%s still leads after Stop:%s", iv.who, rec)
		}
		st.ends[iv.reason]++
		if iv.reason == ReasonWatchdog {
			st.late = append(st.late, iv.end.Sub(iv.deadline))
		}
		if i > 0 {
			prev := ivs[i-1]
			gap := iv.start.Sub(prev.valid())
			if st.minGap < 0 || gap < st.minGap {
				st.minGap = gap
			}
			if prev.reason == ReasonWatchdog && prev.who != iv.who && (st.minGapDog < 0 || gap < st.minGapDog) {
				st.minGapDog = gap
			}
		}
	}
	return st, nil
}
