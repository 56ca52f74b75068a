// Package netfault is a TCP proxy on loopback that the fault drills put on a network path
// (a process to its NATS server, a NATS server to a peer's route listener) to break that path
// alone, with the processes at both ends running unchanged.
package netfault

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards each connection it accepts to its target. "Client" is the side that dialled
// the proxy, "server" its target. It breaks the path four ways:
//
//   - Cut is a black hole, the hard case for a client: its connection stays open and says
//     nothing, bytes in both directions are dropped, and every request times out (no error,
//     no disconnect to react to). Bytes dropped leave the protocol stream broken, so Heal
//     closes every connection that lived through the cut: the client reconnects, as after a
//     partition that outlived its TCP connections.
//   - Sever closes every open connection and every new one at once until Heal: a link whose
//     far end is gone, which the client sees and redials.
//   - DropReplies drops the server's bytes while the client's still reach it: what one side
//     sends arrives, the answers do not.
//   - SetDelay holds the server's bytes (acknowledgements and replies) for that long before
//     the client sees them, in order.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	cut     bool
	severed bool
	delay   time.Duration
	links   map[*link]struct{}
	// held counts the server's chunks passed on after a delay.
	held        atomic.Int64
	dropReplies atomic.Bool
}

type link struct{ in, out net.Conn }

func (l *link) close() {
	l.in.Close()
	if l.out != nil {
		l.out.Close()
	}
}

// Start listens on a free loopback port and forwards each connection to target (host:port).
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, links: map[*link]struct{}{}}
	go p.serve()
	return p, nil
}

// Addr is the proxy's listen address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's address as a NATS URL.
func (p *Proxy) URL() string { return "nats://" + p.Addr() }

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLinks()
}

// Cut black-holes every connection, open and new, until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

// Sever closes every open connection, and every new one as it comes, until Heal.
func (p *Proxy) Sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.severed = true
	p.closeLinks()
}

// Heal ends a cut or a severance: the connections that lived through a cut are closed (their
// streams lost bytes), new ones forward again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		p.closeLinks()
	}
	p.cut, p.severed = false, false
}

// DropReplies drops (on) or passes again (off) the server's bytes.
func (p *Proxy) DropReplies(on bool) { p.dropReplies.Store(on) }

func (p *Proxy) closeLinks() {
	for l := range p.links {
		l.close()
	}
	clear(p.links)
}

// SetDelay holds every byte the server sends for d before passing it on (0: none).
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

func (p *Proxy) isSevered() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.severed
}

func (p *Proxy) state() (cut bool, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut, p.delay
}

func (p *Proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go p.link(in)
	}
}

func (p *Proxy) link(in net.Conn) {
	l := &link{in: in}
	if p.isSevered() {
		in.Close()
		return
	}
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	l.out = out
	p.mu.Lock()
	if p.severed {
		p.mu.Unlock()
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { p.pipe(out, in, false); done <- struct{}{} }()
	go func() { p.pipe(in, out, true); done <- struct{}{} }()
	<-done // either side ended, or a heal closed both
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

type chunk struct {
	b    []byte
	due  time.Time
	held bool
}

// Held is how many chunks of the server's bytes were passed on late (SetDelay).
func (p *Proxy) Held() int64 { return p.held.Load() }

// pipe copies from src to dst; fromServer bytes are held for the delay. A reader queues each
// chunk with its due time and a writer passes it on then, so a delay is latency, not a
// throttle: chunks read together leave together.
func (p *Proxy) pipe(dst, src net.Conn, fromServer bool) {
	q := make(chan chunk, 4096)
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		for c := range q {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if c.held {
				p.held.Add(1) // before the write, so a reader of the chunk sees it counted
			}
			if _, err := dst.Write(c.b); err != nil {
				dst.Close()
				src.Close()
				for range q {
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			cut, delay := p.state()
			if !cut && !(fromServer && p.dropReplies.Load()) {
				due, held := time.Now(), fromServer && delay > 0
				if held {
					due = due.Add(delay)
				}
				q <- chunk{b: append([]byte(nil), buf[:n]...), due: due, held: held}
			}
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-wdone
	dst.Close()
}
