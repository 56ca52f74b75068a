package bus

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/wire"
)

// groupAuth is a fakeAuth that also knows failover groups.
type groupAuth struct {
	*fakeAuth
	buckets map[string]string // agent id → bucket
}

func (g groupAuth) FailoverBucket(_ context.Context, agentID string) (string, error) {
	return g.buckets[agentID], nil
}

// startGroupServer starts an embedded server whose agents are those of agents, in the failover
// group buckets given (agent id → bucket), and returns it with the hub's JetStream.
func startGroupServer(t *testing.T, agents *agentTable, buckets map[string]string) (*Server, jetstream.JetStream) {
	t.Helper()
	auth := groupAuth{fakeAuth: &fakeAuth{AgentCredentialFunc: agents.lookup}, buckets: buckets}
	srv, err := StartServer(ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: auth,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	hub, err := srv.ConnectHub("test-hub")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	js, err := jetstream.New(hub)
	if err != nil {
		t.Fatal(err)
	}
	return srv, js
}

// A member reaches its own group's bucket through GroupKV exactly as the runtime needs (read
// record, control and members' keys; write the record by compare-and-set and its own key), and
// nothing else: not another member's key, not the control key, not another group's bucket; an
// agent of no group reaches no group bucket at all.
func TestGroupBucketPermissions(t *testing.T) {
	t.Parallel()
	agents := &agentTable{hash: map[string]string{}, revoked: map[string]bool{}}
	idA, pwA := agents.enroll(t)
	idB, pwB := agents.enroll(t)
	idC, pwC := agents.enroll(t)
	idD, pwD := agents.enroll(t)
	const g1, g2 = "godwit_fo_godwit_one", "godwit_fo_godwit_two"
	srv, js := startGroupServer(t, agents, map[string]string{idA: g1, idB: g2, idD: g1})
	for _, b := range []string{g1, g2} {
		kv, err := js.CreateKeyValue(testCtx(t), jetstream.KeyValueConfig{Bucket: b, History: 64})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(testCtx(t), "control", []byte(`{"paused":false}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := EnsureBuckets(testCtx(t), js, BucketOptions{}); err != nil {
		t.Fatal(err)
	}
	bd := &bundle{srv: srv}
	a := bd.connectAgent(t, idA, pwA)
	b := bd.connectAgent(t, idB, pwB)
	c := bd.connectAgent(t, idC, pwC)
	kvA := GroupKV{Conn: a.Conn, Bucket: g1}

	// What the runtime needs works.
	rev, err := kvA.Create(testCtx(t), "record", []byte(`{"epoch":1}`))
	if err != nil {
		t.Fatalf("create record: %v", err)
	}
	if _, err := kvA.Create(testCtx(t), "record", []byte(`{"epoch":2}`)); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("second create of the record: %v, want ErrKeyExists", err)
	}
	if _, err := kvA.Update(testCtx(t), "record", []byte(`{"epoch":2}`), rev+100); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("update at a wrong revision: %v, want ErrKeyRevisionMismatch", err)
	}
	rev2, err := kvA.Update(testCtx(t), "record", []byte(`{"epoch":2}`), rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("update at the right revision: %d, %v", rev2, err)
	}
	// A member's watch of the record is pushed another member's write at once (its poll is an
	// hour away): its permissions let it subscribe to the record's subject.
	wctx, wcancel := context.WithCancel(t.Context())
	defer wcancel()
	w, err := GroupKV{Conn: a.Conn, Bucket: g1, Poll: time.Hour}.Watch(wctx, "record")
	if err != nil {
		t.Fatal(err)
	}
	if e := <-w.Updates(); e == nil || e.Revision() != rev2 {
		t.Fatalf("the watch's first entry: %v, want revision %d", e, rev2)
	}
	if err := a.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	d := bd.connectAgent(t, idD, pwD)
	rev3, err := GroupKV{Conn: d.Conn, Bucket: g1}.Update(testCtx(t), "record", []byte(`{"epoch":3}`), rev2)
	if err != nil {
		t.Fatalf("the other member's update: %v", err)
	}
	select {
	case e := <-w.Updates():
		if e == nil || e.Revision() != rev3 || string(e.Value()) != `{"epoch":3}` {
			t.Fatalf("pushed entry %v, want revision %d", e, rev3)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the other member's write of the record was not pushed to the watch")
	}
	rev2 = rev3
	if _, err := kvA.Create(testCtx(t), "member."+idA, []byte(`{}`)); err != nil {
		t.Fatalf("own member key: %v", err)
	}
	e, err := kvA.Get(testCtx(t), "record")
	if err != nil || string(e.Value()) != `{"epoch":3}` || e.Revision() != rev2 || e.Created().IsZero() {
		t.Fatalf("get record: %v %v", e, err)
	}
	if _, err := kvA.Get(testCtx(t), "control"); err != nil {
		t.Fatalf("get control: %v", err)
	}
	if _, err := kvA.Get(testCtx(t), "member."+idA); err != nil {
		t.Fatalf("get own member key: %v", err)
	}
	if _, err := kvA.Get(testCtx(t), "member.nobody"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("absent member key: %v, want ErrKeyNotFound", err)
	}

	// What it must not do is refused by the server.
	denied := []struct {
		name string
		conn *agentConn
		kv   GroupKV
		op   func(GroupKV) error
		subj string
	}{
		{"another member's key", a, kvA, func(k GroupKV) error { _, err := k.Create(shortCtx(t), "member."+idB, []byte(`{}`)); return err },
			wire.KVSubject(g1, "member."+idB)},
		{"the control key", a, kvA, func(k GroupKV) error {
			_, err := k.Update(shortCtx(t), "control", []byte(`{"paused":true}`), 1)
			return err
		},
			wire.KVSubject(g1, "control")},
		{"another group's record", a, GroupKV{Conn: a.Conn, Bucket: g2}, func(k GroupKV) error { _, err := k.Get(shortCtx(t), "record"); return err },
			wire.KVDirectGetSubject(g2, "record")},
		{"another group's own-member key", a, GroupKV{Conn: a.Conn, Bucket: g2}, func(k GroupKV) error {
			_, err := k.Create(shortCtx(t), "member."+idA, []byte(`{}`))
			return err
		}, wire.KVSubject(g2, "member."+idA)},
		{"group one's record from group two", b, GroupKV{Conn: b.Conn, Bucket: g1}, func(k GroupKV) error {
			_, err := k.Update(shortCtx(t), "record", []byte(`{"epoch":9}`), rev2)
			return err
		}, wire.KVSubject(g1, "record")},
		{"a non-member reads", c, GroupKV{Conn: c.Conn, Bucket: g1}, func(k GroupKV) error { _, err := k.Get(shortCtx(t), "record"); return err },
			wire.KVDirectGetSubject(g1, "record")},
		{"a non-member writes", c, GroupKV{Conn: c.Conn, Bucket: g1}, func(k GroupKV) error {
			_, err := k.Create(shortCtx(t), "member."+idC, []byte(`{}`))
			return err
		}, wire.KVSubject(g1, "member."+idC)},
	}
	for _, d := range denied {
		if err := d.op(d.kv); err == nil {
			t.Fatalf("%s: allowed", d.name)
		}
		waitPermissionViolation(t, d.conn, d.subj)
	}
	// Subscriptions beyond its own group's record are refused too.
	for _, x := range []struct {
		conn *agentConn
		subj string
	}{{b, wire.KVSubject(g1, "record")}, {c, wire.KVSubject(g1, "record")}, {a, wire.KVSubject(g1, "control")}, {a, wire.KVSubject(g1, "member."+idD)}} {
		if _, err := x.conn.Conn.SubscribeSync(x.subj); err != nil {
			t.Fatal(err)
		}
		waitPermissionViolation(t, x.conn, x.subj)
	}
	// Nothing of the refused writes landed.
	kv1, _ := js.KeyValue(testCtx(t), g1)
	if e, err := kv1.Get(testCtx(t), "record"); err != nil || e.Revision() != rev2 {
		t.Fatalf("record after refused writes: %v %v", e, err)
	}
	for _, k := range []string{"member." + idB, "member." + idC} {
		if _, err := kv1.Get(testCtx(t), k); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("%s written: %v", k, err)
		}
	}
	if e, _ := kv1.Get(testCtx(t), "control"); string(e.Value()) != `{"paused":false}` {
		t.Fatalf("control written: %s", e.Value())
	}
}

// A nudge can reach a member's watch before the stream has stored the write it announces. The
// watch then reads again for a while, rather than leaving the write to its next poll. Here the
// nudge is a refused compare-and-set (published to the record's subject, never stored), and
// what changes afterwards, with no message on the subject at all, is the stream itself: the
// hub deletes the newest record. Only a read after the nudge's first can see that.
func TestGroupWatchReadsAgainAfterANudgeThatFoundNothingNew(t *testing.T) {
	t.Parallel()
	agents := &agentTable{hash: map[string]string{}, revoked: map[string]bool{}}
	idA, pwA := agents.enroll(t)
	const g1 = "godwit_fo_godwit_one"
	srv, js := startGroupServer(t, agents, map[string]string{idA: g1})
	// The bucket's stream as CreateKeyValue makes it, but allowing a message's delete.
	stream, err := js.CreateStream(testCtx(t), jetstream.StreamConfig{Name: "KV_" + g1,
		Subjects: []string{"$KV." + g1 + ".>"}, MaxMsgsPerSubject: 64, AllowDirect: true, AllowRollup: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureBuckets(testCtx(t), js, BucketOptions{}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(testCtx(t), g1)
	if err != nil {
		t.Fatal(err)
	}
	rev1, err := kv.Put(testCtx(t), "record", []byte(`{"epoch":1}`))
	if err != nil {
		t.Fatal(err)
	}
	rev2, err := kv.Put(testCtx(t), "record", []byte(`{"epoch":2}`))
	if err != nil {
		t.Fatal(err)
	}
	a := (&bundle{srv: srv}).connectAgent(t, idA, pwA)
	kvA := GroupKV{Conn: a.Conn, Bucket: g1, Poll: time.Hour}
	w, err := kvA.Watch(t.Context(), "record")
	if err != nil {
		t.Fatal(err)
	}
	if e := <-w.Updates(); e == nil || e.Revision() != rev2 {
		t.Fatalf("the watch's first entry: %v, want revision %d", e, rev2)
	}
	if err := a.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := kvA.Update(testCtx(t), "record", []byte(`{"epoch":9}`), rev1); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("the refused update: %v, want ErrKeyRevisionMismatch", err)
	}
	time.Sleep(50 * time.Millisecond) // the nudge's first read has found revision rev2 again
	if err := stream.DeleteMsg(testCtx(t), rev2); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-w.Updates():
		if e == nil || e.Revision() != rev1 {
			t.Fatalf("entry %v, want revision %d (the newest left)", e, rev1)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not read again after its nudge found nothing new")
	}
}
