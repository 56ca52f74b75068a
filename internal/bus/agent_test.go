package bus

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

func TestPutHeartbeat(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	id, password := bd.agents.enroll(t)
	a := bd.connectAgent(t, id, password)

	sent := wire.Heartbeat{Version: "1.2.3", Seq: 7, SentAt: time.Now().UTC().Truncate(time.Millisecond)}
	rev, err := PutHeartbeat(ctx, a.Conn, id, sent)
	if err != nil {
		t.Fatalf("PutHeartbeat: %v", err)
	}
	e, err := bd.b.Heartbeats.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() != rev {
		t.Errorf("revision %d, entry has %d", rev, e.Revision())
	}
	var got wire.Heartbeat
	if err := json.Unmarshal(e.Value(), &got); err != nil {
		t.Fatal(err)
	}
	sent.AgentID = id
	if !got.SentAt.Equal(sent.SentAt) || got.AgentID != id || got.Seq != 7 || got.Version != "1.2.3" {
		t.Errorf("stored %+v, want %+v", got, sent)
	}
	rev2, err := PutHeartbeat(ctx, a.Conn, id, wire.Heartbeat{Seq: 8})
	if err != nil || rev2 <= rev {
		t.Fatalf("second PutHeartbeat = %d, %v; want a revision after %d", rev2, err, rev)
	}

	if _, err := PutHeartbeat(ctx, a.Conn, id, wire.Heartbeat{AgentID: newAgentID(t)}); !errors.Is(err, fault.ErrInvalid) {
		t.Errorf("heartbeat naming another agent: err = %v, want ErrInvalid", err)
	}
	big := wire.Heartbeat{Version: string(make([]byte, DefaultHeartbeatMaxValueSize))}
	if _, err := PutHeartbeat(ctx, a.Conn, id, big); err == nil {
		t.Error("oversized heartbeat accepted")
	}
}

func TestGetDesired(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	id, password := bd.agents.enroll(t)
	a := bd.connectAgent(t, id, password)

	if _, _, err := GetDesired(ctx, a.Conn, id); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("absent key: err = %v, want ErrNotFound", err)
	}
	rev, err := bd.b.Desired.Put(ctx, id, []byte(`{"v":1}`))
	if err != nil {
		t.Fatal(err)
	}
	v, got, err := GetDesired(ctx, a.Conn, id)
	if err != nil || string(v) != `{"v":1}` || got != rev {
		t.Fatalf("GetDesired = %q, %d, %v; want rev %d", v, got, err, rev)
	}
	if err := bd.b.Desired.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := GetDesired(ctx, a.Conn, id); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("deleted key: err = %v, want ErrNotFound", err)
	}
	if _, err := bd.b.Desired.Put(ctx, id, []byte(`{"v":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := bd.b.Desired.Purge(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := GetDesired(ctx, a.Conn, id); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("purged key: err = %v, want ErrNotFound", err)
	}
}

func TestWatchDesired(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	ctx := testCtx(t)
	idA, pwA := bd.agents.enroll(t)
	idB, _ := bd.agents.enroll(t)
	a := bd.connectAgent(t, idA, pwA)

	type note struct {
		value string
		isNil bool
		rev   uint64
	}
	var mu sync.Mutex
	var notes []note
	sub, err := WatchDesired(a.Conn, idA, func(value []byte, rev uint64) {
		mu.Lock()
		defer mu.Unlock()
		notes = append(notes, note{string(value), value == nil, rev})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	waitNotes := func(n int) []note {
		t.Helper()
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(notes) < n {
				return errors.New("not yet")
			}
			return nil
		})
		mu.Lock()
		defer mu.Unlock()
		return append([]note(nil), notes...)
	}

	// B's key first: by the time A's own put arrives, B's would have.
	if _, err := bd.b.Desired.Put(ctx, idB, []byte("for B")); err != nil {
		t.Fatal(err)
	}
	// A message that looks like a direct-get response (what another agent can redirect here).
	forged := nats.NewMsg(wire.KVSubject(wire.BucketDesired, idA))
	forged.Header.Set("Nats-Stream", "KV_"+wire.BucketDesired)
	forged.Header.Set("Nats-Sequence", "999")
	forged.Data = []byte("forged")
	if err := bd.hub.PublishMsg(forged); err != nil {
		t.Fatal(err)
	}
	if _, err := bd.b.Desired.Put(ctx, idA, []byte("for A")); err != nil {
		t.Fatal(err)
	}
	got := waitNotes(1)
	if len(got) != 1 || got[0] != (note{value: "for A"}) {
		t.Fatalf("notes = %+v, want only A's put with rev 0", got)
	}

	if err := bd.b.Desired.Delete(ctx, idA); err != nil {
		t.Fatal(err)
	}
	got = waitNotes(2)
	if len(got) != 2 || !got[1].isNil {
		t.Fatalf("notes = %+v, want a nil value for the delete", got)
	}
}
