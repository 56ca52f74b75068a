package bus

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// TestSweepBucketsAreAgentPrivate extends the boundary of TestAgentCannotActAsAnother to the sweep
// buckets: an agent reads and watches only its own check requests, writes only its own results,
// and cannot write requests at all (only the hub asks for checks).
func TestSweepBucketsAreAgentPrivate(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	idA, pwA := bd.agents.enroll(t)
	idB, pwB := bd.agents.enroll(t)
	if _, err := bd.b.Sweep.Put(ctx, idA, []byte("checks for A")); err != nil {
		t.Fatal(err)
	}
	if _, err := bd.b.Sweep.Put(ctx, idB, []byte("secret checks for B")); err != nil {
		t.Fatal(err)
	}
	a := bd.connectAgent(t, idA, pwA)
	b := bd.connectAgent(t, idB, pwB)

	t.Run("own requests are readable and watchable", func(t *testing.T) {
		got := make(chan []byte, 4)
		sub, err := WatchSweepRequests(a.Conn, idA, func(v []byte, _ uint64) { got <- v })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		if err := a.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, err := bd.b.Sweep.Put(ctx, idA, []byte("new checks for A")); err != nil {
			t.Fatal(err)
		}
		select {
		case v := <-got:
			if string(v) != "new checks for A" {
				t.Fatalf("watch delivered %q", v)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no watch message for A's own key")
		}
		v, rev, err := GetSweepRequests(ctx, a.Conn, idA)
		if err != nil || string(v) != "new checks for A" || rev == 0 {
			t.Fatalf("A's GetSweepRequests = %q, %d, %v", v, rev, err)
		}
	})

	t.Run("B's requests are not readable by A", func(t *testing.T) {
		v, _, err := GetSweepRequests(shortCtx(t), a.Conn, idB)
		if err == nil || bytes.Contains(v, []byte("secret")) {
			t.Fatalf("GetSweepRequests(B) on A's connection = %q, %v; want an error", v, err)
		}
		waitPermissionViolation(t, a, wire.KVDirectGetSubject(wire.BucketSweep, idB))
		sub, err := a.SubscribeSync(wire.KVSubject(wire.BucketSweep, idB))
		if err != nil {
			t.Fatal(err)
		}
		waitPermissionViolation(t, a, wire.KVSubject(wire.BucketSweep, idB))
		_ = sub.Unsubscribe()
	})

	t.Run("an agent cannot write check requests, not even its own", func(t *testing.T) {
		if _, err := putOwnKey(shortCtx(t), a.Conn, wire.BucketSweep, idA, []byte("forged checks")); err == nil {
			t.Fatal("A wrote its own sweep-request key")
		}
		waitPermissionViolation(t, a, wire.KVSubject(wire.BucketSweep, idA))
		e, err := bd.b.Sweep.Get(ctx, idA)
		if err != nil || string(e.Value()) != "new checks for A" {
			t.Fatalf("A's request entry = %v, %v; want the hub's value", e, err)
		}
	})

	t.Run("B's results are not writable by A", func(t *testing.T) {
		if _, err := PutSweepResults(ctx, b.Conn, idB, []byte(`{"by":"B"}`)); err != nil {
			t.Fatalf("B's own results: %v", err)
		}
		if _, err := PutSweepResults(shortCtx(t), a.Conn, idB, []byte(`{"by":"A"}`)); err == nil {
			t.Fatal("PutSweepResults as B on A's connection succeeded")
		}
		waitPermissionViolation(t, a, wire.KVSubject(wire.BucketSweepResults, idB))
		if _, err := PutSweepResults(ctx, a.Conn, idA, []byte(`{"by":"A"}`)); err != nil {
			t.Fatalf("A's own results: %v", err)
		}
		e, err := bd.b.SweepResults.Get(ctx, idB)
		if err != nil || string(e.Value()) != `{"by":"B"}` {
			t.Fatalf("B's results entry = %v, %v; want B's own value", e, err)
		}
	})

	t.Run("responses aimed at B's sweep keys land nowhere", func(t *testing.T) {
		for _, reply := range []string{wire.KVSubject(wire.BucketSweep, idB), wire.KVSubject(wire.BucketSweepResults, idB)} {
			if err := a.PublishRequest(wire.KVDirectGetSubject(wire.BucketSweep, idA), reply, nil); err != nil {
				t.Fatal(err)
			}
			if err := a.PublishRequest(wire.KVSubject(wire.BucketSweepResults, idA), reply, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := GetSweepRequests(ctx, a.Conn, idA); err != nil { // barrier
			t.Fatal(err)
		}
		v, _, err := GetSweepRequests(ctx, b.Conn, idB)
		if err != nil || string(v) != "secret checks for B" {
			t.Fatalf("B's requests after the attempts = %q, %v", v, err)
		}
		e, err := bd.b.SweepResults.Get(ctx, idB)
		if err != nil || string(e.Value()) != `{"by":"B"}` {
			t.Fatalf("B's results after the attempts = %v, %v", e, err)
		}
	})

	t.Run("an absent key is not found", func(t *testing.T) {
		idC, pwC := bd.agents.enroll(t)
		c := bd.connectAgent(t, idC, pwC)
		if _, _, err := GetSweepRequests(ctx, c.Conn, idC); !errors.Is(err, fault.ErrNotFound) {
			t.Fatalf("GetSweepRequests of an absent key: %v, want not found", err)
		}
	})
}
