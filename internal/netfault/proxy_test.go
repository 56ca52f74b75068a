package netfault

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// echo serves one line back per line received, and counts the lines it read.
func echo(t *testing.T) (addr string, got chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = make(chan string, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					got <- sc.Text()
					if _, err := io.WriteString(c, sc.Text()+"\n"); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), got
}

func dial(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func roundTrip(c net.Conn, r *bufio.Reader, line string, wait time.Duration) (string, error) {
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	s, err := r.ReadString('\n')
	if len(s) > 0 {
		s = s[:len(s)-1]
	}
	return s, err
}

func start(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestCutIsABlackHoleAndHealClosesWhatLivedThroughIt(t *testing.T) {
	target, got := echo(t)
	p := start(t, target)
	c, r := dial(t, p)
	if s, err := roundTrip(c, r, "a", 10*time.Second); err != nil || s != "a" {
		t.Fatalf("before the cut: %q, %v", s, err)
	}
	<-got
	p.Cut()
	if s, err := roundTrip(c, r, "b", 300*time.Millisecond); err == nil {
		t.Fatalf("a reply came through the cut: %q", s)
	} else if !isTimeout(err) {
		t.Fatalf("the cut connection failed instead of staying silent: %v", err)
	}
	select {
	case s := <-got:
		t.Fatalf("the server received %q through the cut", s)
	default:
	}
	p.Heal()
	// The connection that lived through the cut is closed; a new one works.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("the connection that lived through the cut still reads")
	}
	c2, r2 := dial(t, p)
	if s, err := roundTrip(c2, r2, "c", 10*time.Second); err != nil || s != "c" {
		t.Fatalf("after the heal: %q, %v", s, err)
	}
}

func TestSeverClosesAndRefusesUntilHeal(t *testing.T) {
	target, _ := echo(t)
	p := start(t, target)
	c, r := dial(t, p)
	if _, err := roundTrip(c, r, "a", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Sever()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("the severed connection still reads")
	}
	c2, r2 := dial(t, p)
	_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r2.ReadString('\n'); err == nil || isTimeout(err) {
		t.Fatalf("a new connection while severed was not closed: %v", err)
	}
	p.Heal()
	c3, r3 := dial(t, p)
	if s, err := roundTrip(c3, r3, "b", 10*time.Second); err != nil || s != "b" {
		t.Fatalf("after the heal: %q, %v", s, err)
	}
}

func TestDropRepliesAndDelay(t *testing.T) {
	target, got := echo(t)
	p := start(t, target)
	c, r := dial(t, p)
	p.DropReplies(true)
	if s, err := roundTrip(c, r, "a", 300*time.Millisecond); err == nil {
		t.Fatalf("a reply came through: %q", s)
	}
	if s := <-got; s != "a" {
		t.Fatalf("the server received %q, want a", s)
	}
	p.DropReplies(false)
	p.SetDelay(50 * time.Millisecond)
	if s, err := roundTrip(c, r, "b", 10*time.Second); err != nil || s != "b" {
		t.Fatalf("delayed: %q, %v", s, err)
	}
	if p.Held() == 0 {
		t.Fatal("the delayed reply was not counted as held")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
