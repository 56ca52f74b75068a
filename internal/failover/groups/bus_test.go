package groups_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	member "godwit.dev/godwit/internal/agent/failover"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/failover/groups"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

// storeAuth is the store as the embedded server's authenticator, as the hub wires it.
type storeAuth struct{ store.Store }

func (a storeAuth) FailoverBucket(ctx context.Context, id string) (string, error) {
	return groups.FailoverBucket(ctx, a.Store, id)
}

// busFixture is a hub's failover-group service on a real embedded NATS server, with three
// enrolled agents whose NATS passwords are known.
type busFixture struct {
	svc   *groups.Service
	srv   *bus.Server
	js    jetstream.JetStream
	pass  map[string]string
	kicks []string // agents the service disconnected
}

func newBusFixture(t *testing.T) *busFixture {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	now := time.Now()
	if err := st.CreateEnrollToken(t.Context(), wire.EnrollToken{ID: "t", MaxUses: 10, ExpiresAt: now.Add(time.Hour), CreatedAt: now}, "h"); err != nil {
		t.Fatal(err)
	}
	f := &busFixture{pass: map[string]string{}}
	for _, id := range []string{a1, a2, a3} {
		pw := credential.New(credential.PrefixAgent)
		f.pass[id] = pw
		a := wire.Agent{ID: id, Name: "db" + id[len(id)-1:], Labels: map[string]string{"role": "db"}, EnrolledAt: now}
		if err := st.Enroll(t.Context(), "h", now, a, credential.Hash(pw)); err != nil {
			t.Fatal(err)
		}
	}
	f.srv, err = bus.StartServer(bus.ServerConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: storeAuth{st},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.srv.Stop(context.Background()) })
	hub, err := f.srv.ConnectHub("test-hub")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	if f.js, err = jetstream.New(hub); err != nil {
		t.Fatal(err)
	}
	bk, err := bus.EnsureBuckets(t.Context(), f.js, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = &groups.Service{Store: st, Publisher: &groups.Bus{Store: st, JS: f.js, Assignments: bk.Failover, Replicas: 1,
		Disconnect: func(_ context.Context, id string) (int, error) {
			f.kicks = append(f.kicks, id)
			return f.srv.DisconnectAgent(id), nil
		}}}
	return f
}

func (f *busFixture) connect(t *testing.T, id string) *nats.Conn {
	t.Helper()
	nc, err := bus.ConnectAgent([]string{f.srv.ClientURL()}, id, f.pass[id],
		nats.CustomReconnectDelay(func(int) time.Duration { return 20 * time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func short(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A member publishes into its group's bucket (the record, its own key): a rollup header on such
// a publish must not erase the hub's control key or the other members' keys.
func TestGroupMemberCannotRollUpTheBucket(t *testing.T) {
	t.Parallel()
	f := newBusFixture(t)
	if _, err := f.svc.Apply(t.Context(), doc("pg", "{agent: "+a1+"}", "{agent: "+a2+"}"), false); err != nil {
		t.Fatal(err)
	}
	bucket := member.BucketName(groups.Namespace, "pg")
	kv2 := bus.GroupKV{Conn: f.connect(t, a2), Bucket: bucket}
	if _, err := kv2.Create(t.Context(), member.MemberKey(a2), []byte(`{"member":"a2"}`)); err != nil {
		t.Fatalf("a2's own key: %v", err)
	}
	nc := f.connect(t, a1)
	if _, err := (bus.GroupKV{Conn: nc, Bucket: bucket}).Create(t.Context(), member.KeyRecord, []byte(`{"epoch":1}`)); err != nil {
		t.Fatalf("a1 creates the record: %v", err)
	}
	for _, key := range []string{member.KeyRecord, member.MemberKey(a1)} {
		m := nats.NewMsg(wire.KVSubject(bucket, key))
		m.Header.Set("Nats-Rollup", "all")
		m.Data = []byte(`{}`)
		resp, err := nc.RequestMsgWithContext(t.Context(), m)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(resp.Data), `"error"`) {
			t.Errorf("rollup publish on %s accepted: %s", key, resp.Data)
		}
	}
	kv, err := f.js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{member.KeyControl, member.MemberKey(a2)} {
		if _, err := kv.Get(t.Context(), key); err != nil {
			t.Errorf("%s after a member's rollup: %v", key, err)
		}
	}
}

// A member removed from its group, or moved to another, loses the old group's bucket at once:
// its live connection was authorized with that bucket in its permissions, and a member that
// does not reconnect by itself must not keep them.
func TestRemovedMemberLosesItsGroupBucket(t *testing.T) {
	t.Parallel()
	f := newBusFixture(t)
	if _, err := f.svc.Apply(t.Context(), doc("pg", "{agent: "+a1+"}", "{agent: "+a2+"}", "{agent: "+a3+"}"), false); err != nil {
		t.Fatal(err)
	}
	bucket := member.BucketName(groups.Namespace, "pg")
	kv1 := bus.GroupKV{Conn: f.connect(t, a1), Bucket: bucket}
	kv3 := bus.GroupKV{Conn: f.connect(t, a3), Bucket: bucket}
	kv2 := bus.GroupKV{Conn: f.connect(t, a2), Bucket: bucket}
	rev, err := kv1.Create(t.Context(), member.KeyRecord, []byte(`{"epoch":1}`))
	if err != nil {
		t.Fatalf("a1 creates the record: %v", err)
	}
	if _, err := kv3.Get(t.Context(), member.KeyRecord); err != nil {
		t.Fatalf("a3 reads the record: %v", err)
	}
	// a1 leaves the group, and a3 goes to a group of its own; a2 stays.
	if _, err := f.svc.Apply(t.Context(), doc("pg", "{agent: "+a2+"}"), false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Apply(t.Context(), doc("other", "{agent: "+a3+"}"), false); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		kv   bus.GroupKV
	}{{"removed", kv1}, {"moved", kv3}} {
		if _, err := c.kv.Get(short(t), member.KeyRecord); err == nil {
			t.Errorf("the %s member still reads the group record", c.name)
		}
		if _, err := c.kv.Update(short(t), member.KeyRecord, []byte(`{"epoch":99}`), rev); err == nil || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			t.Errorf("the %s member's write of the group record reached the bucket: %v", c.name, err)
		}
	}
	// The member that stayed keeps its connection and its bucket.
	if _, err := kv2.Get(t.Context(), member.KeyRecord); err != nil {
		t.Fatalf("the remaining member reads the record: %v", err)
	}
	for _, id := range f.kicks {
		if id == a2 {
			t.Errorf("the remaining member %s was disconnected", id)
		}
	}
	kv, err := f.js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(t.Context(), member.KeyRecord); err != nil || e.Revision() != rev {
		t.Fatalf("record after the removed members' writes: %v, %v", e, err)
	}
}
