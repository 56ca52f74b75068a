package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// maxRecordBytes bounds a lease value; anything larger is not a lease record.
const maxRecordBytes = 4 << 10

// Record is the value of a lease key.
//
//	{"holder":"hub-a","instance":"3f9c…","epoch":4711,"prev":4736,"gapMs":2001}
//	{"holder":"hub-a","instance":"3f9c…","epoch":4711,"released":true}
//
// Epoch is absent (0) in the write that begins a term: that write's own revision is the epoch,
// which the holder learns from the store's answer and repeats in every later write of the term.
//
// A renew also says which write of the term it replaced (Prev) and how long after sending that
// write the holder sent this one, on its own monotonic clock (GapMs). A contender that saw Prev
// uses them to date a renew it sees late — one committed only after the stream elected a new
// leader, say — from when it saw Prev rather than from when it saw the renew (docs/ha.md,
// "A renew seen late").
type Record struct {
	Holder   string `json:"holder"`             // the replica's name, for people
	Instance string `json:"instance"`           // random per Lease value: tells one process from another with the same name
	Epoch    uint64 `json:"epoch,omitempty"`    // the term's epoch; 0 in the term's first write
	Released bool   `json:"released,omitempty"` // the holder stopped and handed the lease on
	// Prev is, in a renew, the revision it was written over: the term's previous write.
	Prev uint64 `json:"prev,omitempty"`
	// GapMs is, in a renew, the time from sending the write at Prev (the earliest send that may
	// have written it) to sending this one, in milliseconds rounded up, on the holder's clock.
	GapMs uint64 `json:"gapMs,omitempty"`
}

// Gap returns GapMs as a duration, at most the longest one.
func (r Record) Gap() time.Duration {
	if r.GapMs > uint64(math.MaxInt64/int64(time.Millisecond)) {
		return math.MaxInt64
	}
	return time.Duration(r.GapMs) * time.Millisecond
}

// gapMs is d in whole milliseconds, rounded up (never shorter than d: a contender that dates a
// renew by it can only date it later than it was sent); negative is 0.
func gapMs(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Millisecond - 1) / time.Millisecond)
}

// EpochAt returns the record's epoch when stored at revision rev.
func (r Record) EpochAt(rev uint64) uint64 {
	if r.Epoch == 0 {
		return rev
	}
	return r.Epoch
}

// Encode returns the record's JSON.
func (r Record) Encode() []byte {
	b, err := json.Marshal(r)
	if err != nil { // only strings, a number and a bool
		panic("lease: encode record: " + err.Error())
	}
	return b
}

// DecodeRecord parses a lease value stored at revision rev. It refuses what no lease wrote:
// not a JSON object, trailing data, an empty holder or instance, an epoch later than the
// revision it is stored at (an epoch is the revision of an earlier write of the same key), or a
// previous revision not before it.
// Unknown fields are ignored, for values written by a later version.
func DecodeRecord(value []byte, rev uint64) (Record, error) {
	var r Record
	if len(value) > maxRecordBytes {
		return Record{}, fmt.Errorf("lease record: %d bytes, more than %d", len(value), maxRecordBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("lease record: %w", err)
	}
	if dec.More() {
		return Record{}, errors.New("lease record: data after the JSON object")
	}
	switch {
	case r.Holder == "":
		return Record{}, errors.New("lease record: holder is empty")
	case r.Instance == "":
		return Record{}, errors.New("lease record: instance is empty")
	case rev != 0 && r.Epoch > rev:
		return Record{}, fmt.Errorf("lease record: epoch %d is later than its own revision %d", r.Epoch, rev)
	case rev != 0 && r.Prev >= rev:
		return Record{}, fmt.Errorf("lease record: previous revision %d is not before its own revision %d", r.Prev, rev)
	}
	return r, nil
}
