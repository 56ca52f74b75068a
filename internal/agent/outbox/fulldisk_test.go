package outbox

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/health"
	"godwit.dev/godwit/internal/agent/health/fulldisk"
	"godwit.dev/godwit/internal/wire"
)

// On a full file system the outbox refuses new events with an error the agent waits out (and
// says it is degraded), keeps what it holds, still sends it, and deletes it once space comes
// back — without sending it again; then it takes events again.
func TestFullDiskLosesNothing(t *testing.T) {
	fs, err := fulldisk.Mount(t, 2<<20)
	if err != nil {
		t.Skipf("no small file system to fill: %v", err)
	}
	o := open(t, filepath.Join(fs.Dir, "outbox.db"), Limits{}, nil)
	ids := appendN(t, o, wire.SeverityInfo, 0, 20)
	fs.Fill()

	refused := newEvent(wire.SeverityError, 99)
	err = o.Append(t.Context(), refused)
	if err == nil {
		t.Fatal("Append on a full file system succeeded")
	}
	if health.Classify(err) != health.Wait {
		t.Fatalf("Append on a full file system: %v is not an error to wait out", err)
	}
	if r := o.Degraded(); !strings.HasPrefix(r, "disk full: ") || !strings.Contains(r, "outbox.db") {
		t.Fatalf("Degraded() = %q", r)
	}
	if n, err := o.Len(); err != nil || n != 20 {
		t.Fatalf("Len = %d, %v: the journal lost or gained events", n, err)
	}

	s := newSink()
	run(t, o, s.publish)
	waitFor(t, 10*time.Second, func() error {
		if order, _, _ := s.snapshot(); len(order) != 20 {
			return fmt.Errorf("%d sent", len(order))
		}
		return nil
	})
	// Sent, and still held until the delete gets through.
	if n, _ := o.Len(); n != 20 {
		t.Logf("the deletes went through on the full file system (the log had room): %d events left", n)
	}
	fs.Free()
	waitLen(t, o, 0, 20*time.Second)
	s.check(t, ids, 20) // each once: no resend while the deletes waited for space
	if err := o.Append(t.Context(), refused); err != nil {
		t.Fatalf("Append after space came back: %v", err)
	}
	if r := o.Degraded(); r != "" {
		t.Fatalf("Degraded() after space came back = %q", r)
	}
	waitLen(t, o, 0, 20*time.Second)
	s.check(t, append(ids, refused.ID), 21)
}
