package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestEventBatchRoundTrip(t *testing.T) {
	var events [][]byte
	for range 3 {
		b, _ := json.Marshal(validEvent())
		events = append(events, b)
	}
	body, err := EncodeEventBatch(events)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) != BatchSize(len(events[0]), len(events[1]), len(events[2])) {
		t.Fatalf("body is %d bytes, BatchSize says %d", len(body), BatchSize(len(events[0]), len(events[1]), len(events[2])))
	}
	got, err := SplitEventBatch("3", body)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("split into %d events, want 3", len(got))
	}
	for n := range events {
		if !bytes.Equal(got[n], events[n]) {
			t.Fatalf("event %d: got %q, want %q", n, got[n], events[n])
		}
		if _, err := DecodeEvent(got[n]); err != nil {
			t.Fatalf("event %d does not decode: %v", n, err)
		}
	}
	// Elements do not share capacity: appending to one cannot overwrite the next.
	_ = append(got[0], 'x')
	if !bytes.Equal(got[1], events[1]) {
		t.Fatal("appending to an element changed the next one")
	}
}

func TestEncodeEventBatchRefuses(t *testing.T) {
	big := bytes.Repeat([]byte("x"), MaxEventBytes)
	for _, tc := range []struct {
		name   string
		events [][]byte
		want   string
	}{
		{"empty", nil, "0 events"},
		{"too many", make([][]byte, MaxBatchEvents+1), "65 events"},
		{"newline", [][]byte{[]byte(`{}`), []byte("{\n}")}, "event 1 holds a newline"},
		{"too large", [][]byte{big, big, big}, "over the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := EncodeEventBatch(tc.events)
			if !errors.Is(err, ErrBatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBatch naming %q", err, tc.want)
			}
		})
	}
}

func TestSplitEventBatchRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, count, body, want string
	}{
		{"count not a number", "two", "{}\n{}", `is "two"`},
		{"count zero", "0", "", `is "0"`},
		{"count negative", "-1", "{}", `is "-1"`},
		{"count padded", "02", "{}\n{}", `is "02"`},
		{"count too large", strconv.Itoa(MaxBatchEvents + 1), "{}", "is \"65\""},
		{"fewer lines", "3", "{}\n{}", "says 3 events, the body has 2 lines"},
		{"more lines", "1", "{}\n{}", "says 1 events, the body has 2 lines"},
		{"trailing newline", "2", "{}\n{}\n", "the body has 3 lines"},
		{"too large", "1", strings.Repeat("x", MaxBatchBytes+1), "over the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SplitEventBatch(tc.count, []byte(tc.body))
			if !errors.Is(err, ErrBatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBatch naming %q", err, tc.want)
			}
		})
	}
	// Empty lines are elements (which then fail to decode on their own), not a malformed batch.
	got, err := SplitEventBatch("3", []byte("\n\n"))
	if err != nil || len(got) != 3 {
		t.Fatalf("split of three empty lines: %d elements, err %v", len(got), err)
	}
}

func TestEventBatchID(t *testing.T) {
	a, b, c := "01960000-0000-7000-8000-000000000001", "01960000-0000-7000-8000-000000000002", "01960000-0000-7000-8000-000000000003"
	ids := map[string][]string{}
	for _, set := range [][]string{{a}, {a, b}, {a, c}, {a, b, c}, {a, c, b}, {b, c}, {a, "x", c}} {
		id := EventBatchID(set)
		if prev, ok := ids[id]; ok {
			t.Fatalf("batches %v and %v share the id %s", prev, set, id)
		}
		ids[id] = set
		if id != EventBatchID(append([]string(nil), set...)) {
			t.Fatalf("the id of %v is not stable", set)
		}
	}
}

// FuzzEventBatchSplit: any header value and body either split into exactly count elements that,
// joined again, give the body back (and decode or fail one by one, never panicking), or are
// refused as a whole with ErrBatch. A batch encoded from the elements splits into them again.
func FuzzEventBatchSplit(f *testing.F) {
	good, _ := json.Marshal(validEvent())
	body, _ := EncodeEventBatch([][]byte{good, good})
	f.Add("2", body)
	f.Add("1", good)
	f.Add("2", []byte("{}\n"))
	f.Add("3", []byte("\n\n"))
	f.Add("64", bytes.Repeat([]byte("{}\n"), 63))
	f.Add("x", []byte("{}"))
	f.Add("1", append(append([]byte{}, good...), "\r"...))
	f.Fuzz(func(t *testing.T, count string, body []byte) {
		parts, err := SplitEventBatch(count, body)
		if err != nil {
			if !errors.Is(err, ErrBatch) {
				t.Fatalf("SplitEventBatch(%q, %q): error %v does not wrap ErrBatch", count, body, err)
			}
			return
		}
		if n, _ := strconv.Atoi(count); len(parts) != n || n < 1 || n > MaxBatchEvents {
			t.Fatalf("SplitEventBatch(%q, %q) gave %d elements", count, body, len(parts))
		}
		if !bytes.Equal(bytes.Join(parts, []byte{'\n'}), body) {
			t.Fatalf("the elements of %q do not join back into it", body)
		}
		for _, p := range parts {
			if bytes.IndexByte(p, '\n') >= 0 {
				t.Fatalf("element %q holds a newline", p)
			}
			if e, err := DecodeEvent(p); err == nil {
				_ = e.Validate(agentA)
			}
		}
		again, err := EncodeEventBatch(parts)
		if err != nil {
			t.Fatalf("elements of a valid batch do not encode again: %v", err)
		}
		if !bytes.Equal(again, body) {
			t.Fatalf("re-encoded %q as %q", body, again)
		}
	})
}
