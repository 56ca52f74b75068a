package lease

import (
	"strings"
	"testing"
)

func TestDecodeRecord(t *testing.T) {
	good := []struct {
		in    string
		rev   uint64
		epoch uint64
	}{
		{`{"holder":"a","instance":"i"}`, 7, 7}, // a term's first write: its own revision
		{`{"holder":"a","instance":"i","epoch":5}`, 9, 5},
		{`{"holder":"a","instance":"i","epoch":5,"released":true}`, 9, 5},
		{`{"holder":"a","instance":"i","epoch":5,"later":"field"}`, 9, 5},
		{`{"holder":"a","instance":"i","epoch":5,"prev":8,"gapMs":2001}`, 9, 5},
		{" {\"holder\":\"a\",\"instance\":\"i\"}\n", 1, 1},
	}
	for _, g := range good {
		r, err := DecodeRecord([]byte(g.in), g.rev)
		if err != nil {
			t.Errorf("DecodeRecord(%s) = %v", g.in, err)
			continue
		}
		if r.EpochAt(g.rev) != g.epoch {
			t.Errorf("DecodeRecord(%s).EpochAt(%d) = %d, want %d", g.in, g.rev, r.EpochAt(g.rev), g.epoch)
		}
	}
	bad := []struct{ in, why string }{
		{``, "EOF"},
		{`null`, "holder is empty"},
		{`[]`, "cannot unmarshal"},
		{`{"holder":"a"}`, "instance is empty"},
		{`{"instance":"i"}`, "holder is empty"},
		{`{"holder":"a","instance":"i"}{}`, "data after"},
		{`{"holder":"a","instance":"i","epoch":10}`, "later than its own revision"},
		{`{"holder":"a","instance":"i","epoch":-1}`, "cannot unmarshal"},
		{`{"holder":"a","instance":"i","epoch":5,"prev":9}`, "previous revision 9 is not before its own revision 9"},
		{`{"holder":"a","instance":"i","epoch":5,"prev":8,"gapMs":-1}`, "cannot unmarshal"},
		{`{"holder":1,"instance":"i"}`, "cannot unmarshal"},
		{`{"holder":"` + strings.Repeat("x", 5000) + `","instance":"i"}`, "more than"},
	}
	for _, b := range bad {
		if _, err := DecodeRecord([]byte(b.in), 9); err == nil || !strings.Contains(err.Error(), b.why) {
			t.Errorf("DecodeRecord(%.40s) = %v, want an error saying %q", b.in, err, b.why)
		}
	}
}

// Whatever is stored under a lease key, decoding never panics, and what it accepts survives a
// round trip.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"holder":"a","instance":"i","epoch":5,"released":true}`), uint64(9))
	f.Add([]byte(`{"holder":"a","instance":"i"}`), uint64(1))
	f.Add([]byte(`{"holder":"a","instance":"i","epoch":5,"prev":8,"gapMs":2001}`), uint64(9))
	f.Add([]byte(`{"holder":"","instance":""}`), uint64(0))
	f.Add([]byte(`not json`), uint64(3))
	f.Fuzz(func(t *testing.T, value []byte, rev uint64) {
		r, err := DecodeRecord(value, rev)
		if err != nil {
			return
		}
		if r.Holder == "" || r.Instance == "" || (rev != 0 && (r.Epoch > rev || r.Prev >= rev)) {
			t.Fatalf("accepted an invalid record %+v at revision %d", r, rev)
		}
		again, err := DecodeRecord(r.Encode(), rev)
		if err != nil || again != r {
			t.Fatalf("round trip of %+v: %+v, %v", r, again, err)
		}
	})
}
