package ingest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/pgtest"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/wire"
)

// tcpProxy forwards connections to a server until sever cuts every one of them, as a server
// that crashes or a connection pooler that restarts does (the client reads an end of stream).
type tcpProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
			go func() { _, _ = io.Copy(c, s); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); p.sever() })
	return p
}

func (p *tcpProxy) sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// A PostgreSQL that is unreachable for a while, then drops the hub's connection as it comes
// back (it crashed again, or a pooler in front of it restarted): every failure is of the
// database, none of the event, so the event waits in the stream and is stored once the
// database answers — it is not dead-lettered because the outage lasted MaxDeliver deliveries.
func TestLostPostgresConnectionIsTransient(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	dsn, err := url.Parse(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, dsn.Host)
	dsn.Host = proxy.ln.Addr().String()
	pg, err := postgres.Open(testCtx(t), dsn.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })

	var calls atomic.Int64
	var dropped atomic.Value // the error of the fifth call
	flaky := &wrapStore{Store: pg}
	flaky.InsertEventsFunc = func(ctx context.Context, events []store.StoredEvent, states []store.EventState) (int, error) {
		switch calls.Add(1) {
		case 1, 2, 3, 4: // the database does not answer
			return 0, fmt.Errorf("insert events: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
		case 5: // it answers, then drops the connection the hub just used
			if _, err := pg.CountEvents(ctx); err != nil {
				return 0, err
			}
			proxy.sever()
			n, err := pg.InsertEvents(ctx, events, states)
			dropped.Store(fmt.Sprint(err))
			return n, err
		}
		return pg.InsertEvents(ctx, events, states)
	}
	ing, reg := bd.ingester(t, "hub", Config{Store: flaky, IsTransient: postgres.IsTransient})

	a := newAgentID(t)
	bd.publish(t, wire.EventSubject(a), agentEvent(a, wire.EventExecutionFailed, time.Now(), "m1"))
	var stored int64
	waitFor(t, 20*time.Second, func() error {
		dls, err := ing.DeadLetters(testCtx(t), 0, 10)
		if err != nil {
			return err
		}
		if len(dls) > 0 {
			t.Fatalf("dead-lettered: %s: %s", dls[0].Reason, dls[0].Error)
		}
		if stored, err = pg.CountEvents(testCtx(t)); err != nil || stored != 1 {
			return fmt.Errorf("%d events stored (%v), want 1", stored, err)
		}
		return nil
	})
	if err, _ := dropped.Load().(string); err == "" || err == "<nil>" {
		t.Errorf("the fifth store call found its connection alive (%q): the test proves nothing", err)
	} else {
		t.Logf("the fifth store call failed with %q", err)
	}
	if got := metric(t, reg, "godwit_ingest_dead_letters_total", "reason", ReasonMaxDeliveries); got != 0 {
		t.Errorf("%v dead letters for a lost connection", got)
	}
}
