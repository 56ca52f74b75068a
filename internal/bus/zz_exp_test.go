package bus

import (
	"fmt"
	"testing"
	"time"

	"context"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func expServer(t *testing.T, conf string) *server.Server {
	o := &server.Options{}
	if conf != "" {
		if err := o.ProcessConfigString(conf); err != nil {
			t.Fatal(err)
		}
	}
	o.Host = "127.0.0.1"
	o.Port = -1
	o.JetStream = true
	o.StoreDir = t.TempDir()
	o.NoSigs = true
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

func TestExpSingleAccount(t *testing.T) {
	ns := expServer(t, `
authorization { users = [
 {user: hub, password: hub}
 {user: a, password: a, permissions: {publish: {allow: ["$KV.hb.a", "$JS.API.DIRECT.GET.KV_ds.$KV.ds.a", "ev.a"]}, subscribe: {allow: ["_I.a.>", "$KV.ds.a"]}}}
]}`)
	hub, err := nats.Connect(ns.ClientURL(), nats.UserInfo("hub", "hub"))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(hub)
	ctx := context.Background()
	hb, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hb"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ds"})
	if err != nil {
		t.Fatal(err)
	}
	ds.Put(ctx, "a", []byte("desired-for-a"))
	ds.Put(ctx, "b", []byte("desired-for-b"))
	hb.Put(ctx, "b", []byte("hb-b"))
	// raw subs by hub to see what's published
	hub.Subscribe(">", func(m *nats.Msg) {
		fmt.Printf("HUB SAW %s reply=%q hdr=%v data=%q\n", m.Subject, m.Reply, m.Header, m.Data)
	})
	hub.Flush()

	a, err := nats.Connect(ns.ClientURL(), nats.UserInfo("a", "a"), nats.CustomInboxPrefix("_I.a"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { fmt.Println("A ERR", err) }))
	if err != nil {
		t.Fatal(err)
	}
	r, err := a.Request("$JS.API.DIRECT.GET.KV_ds.$KV.ds.a", nil, time.Second)
	fmt.Printf("direct get own: %v %v %q\n", err, r.Header, r.Data)
	r, err = a.Request("$KV.hb.a", []byte("hb-a"), time.Second)
	fmt.Printf("kv put own: %v %v %q\n", err, r.Header, r.Data)
	// confused deputy: direct get own desired, reply onto b's desired
	a.PublishRequest("$JS.API.DIRECT.GET.KV_ds.$KV.ds.a", "$KV.ds.b", nil)
	// pub ack onto b's heartbeat
	a.PublishRequest("$KV.hb.a", "$KV.hb.b", []byte("x"))
	// rollup all
	m := nats.NewMsg("$KV.hb.a")
	m.Header.Set("Nats-Rollup", "all")
	m.Data = []byte("rollup")
	m.Reply = "_I.a.rollup"
	r, err = a.RequestMsg(m, time.Second)
	if err == nil {
		fmt.Printf("rollup: %q\n", r.Data)
	}
	a.PublishRequest("$KV.hb.a", "$JS.API.STREAM.DELETE.KV_ds", []byte("x"))
	a.Flush()
	time.Sleep(300 * time.Millisecond)
	e, err := ds.Get(ctx, "b")
	if err == nil {
		fmt.Printf("b desired now: rev %d %q\n", e.Revision(), e.Value())
	} else {
		fmt.Println("b desired err", err)
	}
	e, err = hb.Get(ctx, "b")
	if err == nil {
		fmt.Printf("b hb now: rev %d %q\n", e.Revision(), e.Value())
	} else {
		fmt.Println("b hb err", err)
	}
}

func TestExpAccounts(t *testing.T) {
	ns := expServer(t, `
accounts {
  GODWIT: {
    jetstream: enabled
    users: [{user: hub, password: hub}]
    exports: [
      {service: "$KV.hb.*"}
      {service: "$JS.API.DIRECT.GET.KV_ds.$KV.ds.*"}
      {service: "ev.*"}
      {stream: "$KV.ds.*"}
    ]
  }
  AGENTS: {
    users: [
     {user: a, password: a, permissions: {publish: {allow: ["$KV.hb.a", "$JS.API.DIRECT.GET.KV_ds.$KV.ds.a", "ev.a"]}, subscribe: {allow: ["_I.a.>", "$KV.ds.a"]}}}
     {user: b, password: b, permissions: {publish: {allow: ["$KV.hb.b", "$JS.API.DIRECT.GET.KV_ds.$KV.ds.b", "ev.b"]}, subscribe: {allow: ["_I.b.>", "$KV.ds.b"]}}}
    ]
    imports: [
      {service: {account: GODWIT, subject: "$KV.hb.*"}}
      {service: {account: GODWIT, subject: "$JS.API.DIRECT.GET.KV_ds.$KV.ds.*"}}
      {service: {account: GODWIT, subject: "ev.*"}}
      {stream: {account: GODWIT, subject: "$KV.ds.*"}}
    ]
  }
}`)
	hub, err := nats.Connect(ns.ClientURL(), nats.UserInfo("hub", "hub"))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(hub)
	ctx := context.Background()
	hb, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hb"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ds"})
	if err != nil {
		t.Fatal(err)
	}
	ds.Put(ctx, "a", []byte("desired-for-a"))
	ds.Put(ctx, "b", []byte("desired-for-b"))
	hb.Put(ctx, "b", []byte("hb-b"))
	hub.Subscribe(">", func(m *nats.Msg) {
		fmt.Printf("HUB SAW %s reply=%q hdr=%v data=%q\n", m.Subject, m.Reply, m.Header, m.Data)
	})
	hub.Flush()

	a, err := nats.Connect(ns.ClientURL(), nats.UserInfo("a", "a"), nats.CustomInboxPrefix("_I.a"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { fmt.Println("A ERR", err) }))
	if err != nil {
		t.Fatal(err)
	}
	b, err := nats.Connect(ns.ClientURL(), nats.UserInfo("b", "b"), nats.CustomInboxPrefix("_I.b"))
	if err != nil {
		t.Fatal(err)
	}
	b.Subscribe("$KV.ds.b", func(m *nats.Msg) { fmt.Printf("B WATCH %s hdr=%v data=%q\n", m.Subject, m.Header, m.Data) })
	b.Subscribe("_I.b.>", func(m *nats.Msg) { fmt.Printf("B INBOX %s hdr=%v data=%q\n", m.Subject, m.Header, m.Data) })
	b.Flush()
	r, err := a.Request("$JS.API.DIRECT.GET.KV_ds.$KV.ds.a", nil, time.Second)
	if err == nil {
		fmt.Printf("direct get own: %v %q\n", r.Header, r.Data)
	} else {
		fmt.Println("direct get own", err)
	}
	r, err = a.Request("$JS.API.DIRECT.GET.KV_ds.$KV.ds.zz", nil, time.Second)
	if err == nil {
		fmt.Printf("direct get missing: %v %q\n", r.Header, r.Data)
	} else {
		fmt.Println("direct get missing", err)
	}
	r, err = a.Request("$KV.hb.a", []byte("hb-a"), time.Second)
	if err == nil {
		fmt.Printf("kv put own: %v %q\n", r.Header, r.Data)
	} else {
		fmt.Println("kv put own", err)
	}
	a.PublishRequest("$JS.API.DIRECT.GET.KV_ds.$KV.ds.a", "$KV.ds.b", nil)
	a.PublishRequest("$KV.hb.a", "$KV.hb.b", []byte("x"))
	a.PublishRequest("$JS.API.DIRECT.GET.KV_ds.$KV.ds.a", "$KV.hb.b", nil)
	a.PublishRequest("$JS.API.DIRECT.GET.KV_ds.$KV.ds.a", "ev.b", nil)
	a.PublishRequest("$JS.API.DIRECT.GET.KV_ds.$KV.ds.a", "_I.b.x.y", nil)
	a.PublishRequest("$KV.hb.a", "$JS.API.STREAM.PURGE.KV_hb", []byte("x"))
	a.Publish("ev.b", nil)
	a.Flush()
	time.Sleep(300 * time.Millisecond)
	e, err := ds.Get(ctx, "b")
	if err == nil {
		fmt.Printf("b desired now: rev %d %q\n", e.Revision(), e.Value())
	} else {
		fmt.Println("b desired err", err)
	}
	e, err = hb.Get(ctx, "b")
	if err == nil {
		fmt.Printf("b hb now: rev %d %q\n", e.Revision(), e.Value())
	} else {
		fmt.Println("b hb err", err)
	}
	fmt.Println("A last error", a.LastError())
}
