package wire

import (
	"bytes"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
	"unsafe"
)

// DecodeEvent decodes one encoded event with encoding/json's rules (field names matched without
// regard to case, the last of duplicate names wins, null leaves a field as it is, a repeated
// object is merged into the one before it), so that a body it accepts reads back the same
// through encoding/json, except that invalid UTF-8 (also as an unpaired surrogate escape) is
// refused rather than replaced: a stored body is kept exactly as received and must be valid text.
//
// It is written for Event alone, one pass over the bytes without reflection and one allocation
// for all of its strings, because decoding is the ingest's largest cost besides the insert: it
// takes half the time go-json-experiment/json with the same options takes, and a fifth of
// encoding/json's (BenchmarkDecodeEvent*). FuzzEventDecode holds it to both.
func DecodeEvent(data []byte) (Event, error) {
	d := eventDecoder{data: data}
	var e Event
	if err := d.event(&e); err != nil {
		return Event{}, err
	}
	return e, nil
}

// maxDepth is how deeply arrays and objects may nest, as in encoding/json.
const maxDepth = 10000

type eventDecoder struct {
	data  []byte
	pos   int
	depth int
	buf   []byte // unescaped string, reused
	// strs holds the bytes of every string field read: one allocation instead of one a field.
	// Bytes once appended are never written again, so the fields may be strings over them.
	strs []byte
}

func (d *eventDecoder) syntax(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", d.pos, fmt.Sprintf(format, args...))
}

// field names a member in errors: "data.attempt". Its parts are joined only for an error.
type field struct{ parent, name string }

func (f field) String() string { return f.parent + f.name }

// mismatch is the error for a value of the wrong kind for a field.
func (d *eventDecoder) mismatch(field field, want string) error {
	return fmt.Errorf("%s: a JSON %s where %s is expected (byte %d)", field, d.kindAt(), want, d.pos)
}

func (d *eventDecoder) kindAt() string {
	if d.pos >= len(d.data) {
		return "end of input"
	}
	switch c := d.data[d.pos]; {
	case c == '"':
		return "string"
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == 't' || c == 'f':
		return "boolean"
	case c == 'n':
		return "null"
	case c == '-' || c >= '0' && c <= '9':
		return "number"
	default:
		return fmt.Sprintf("character %q", c)
	}
}

func (d *eventDecoder) space() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte, 0 at the end.
func (d *eventDecoder) peek() byte {
	d.space()
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

func (d *eventDecoder) event(e *Event) error {
	switch d.peek() {
	case 'n':
		if err := d.literal(); err != nil {
			return err
		}
	case '{':
		for first := true; ; first = false {
			n, end, err := d.members(field{"", "the event"}, eventFields, first)
			if err != nil {
				return err
			}
			if end {
				break
			}
			if err := d.eventField(e, n, eventFields[n]); err != nil {
				return err
			}
		}
	default:
		start := d.pos
		if _, err := d.skip(); err != nil {
			return err
		}
		d.pos = start
		return d.mismatch(field{"", "the event"}, "an object")
	}
	if d.space(); d.pos < len(d.data) {
		return d.syntax("%s after the event", d.kindAt())
	}
	return nil
}

var eventFields = []string{"specversion", "id", "source", "type", "time", "subject", "severity", "data"}

func (d *eventDecoder) eventField(e *Event, n int, member string) error {
	name := field{"", member}
	switch n {
	case 0:
		return d.str(name, &e.SpecVersion)
	case 1:
		return d.str(name, &e.ID)
	case 2:
		return d.str(name, &e.Source)
	case 3:
		return d.str(name, &e.Type)
	case 4:
		return d.time(name, &e.Time)
	case 5:
		return d.str(name, &e.Subject)
	case 6:
		return d.str(name, &e.Severity)
	case 7:
		switch d.peek() {
		case 'n':
			return d.literal()
		case '{':
			for first := true; ; first = false {
				n, end, err := d.members(name, dataFields, first)
				if end || err != nil {
					return err
				}
				if err := d.dataField(&e.Data, n, dataFields[n]); err != nil {
					return err
				}
			}
		}
		return d.mismatch(name, "an object")
	}
	_, err := d.skip()
	return err
}

var dataFields = []string{"agent_id", "migration", "step", "attempt", "message", "error", "exit_code", "output_tail",
	"duration_ms", "from_version", "to_version", "system", "extra"}

func (d *eventDecoder) dataField(x *EventData, n int, member string) error {
	name := field{"data.", member}
	switch n {
	case 0:
		return d.str(name, &x.AgentID)
	case 1:
		return d.str(name, &x.Migration)
	case 2:
		return d.str(name, &x.Step)
	case 3:
		v := int64(x.Attempt)
		start := d.peekPos()
		if _, err := d.int64(name, &v); err != nil {
			return err
		}
		if int64(int(v)) != v {
			return d.outOfRange(name, start)
		}
		x.Attempt = int(v)
		return nil
	case 4:
		return d.str(name, &x.Message)
	case 5:
		return d.str(name, &x.Error)
	case 6:
		var v int64
		start := d.peekPos()
		null, err := d.int64(name, &v)
		switch {
		case err != nil:
			return err
		case null:
			x.ExitCode = nil
		case int64(int(v)) != v:
			return d.outOfRange(name, start)
		default:
			code := int(v)
			x.ExitCode = &code
		}
		return nil
	case 7:
		return d.str(name, &x.OutputTail)
	case 8:
		_, err := d.int64(name, &x.DurationMS)
		return err
	case 9:
		return d.str(name, &x.FromVersion)
	case 10:
		return d.str(name, &x.ToVersion)
	case 11:
		switch d.peek() {
		case 'n':
			x.System = nil
			return d.literal()
		case '{':
			if x.System == nil {
				x.System = &SystemInfo{}
			}
			sys := x.System
			for first := true; ; first = false {
				n, end, err := d.members(name, systemFields, first)
				if end || err != nil {
					return err
				}
				if err := d.systemField(sys, n, systemFields[n]); err != nil {
					return err
				}
			}
		}
		return d.mismatch(name, "an object")
	case 12:
		// encoding/json hands json.RawMessage the value as written, null included.
		start := d.peekPos()
		if _, err := d.skip(); err != nil {
			return err
		}
		x.Extra = append(x.Extra[:0:0], d.data[start:d.pos]...)
		return nil
	}
	_, err := d.skip()
	return err
}

var systemFields = []string{"os", "arch", "kernel", "hostname", "agent_version", "free_disk_bytes", "policy_digest"}

func (d *eventDecoder) systemField(s *SystemInfo, n int, member string) error {
	name := field{"data.system.", member}
	switch n {
	case 0:
		return d.str(name, &s.OS)
	case 1:
		return d.str(name, &s.Arch)
	case 2:
		return d.str(name, &s.Kernel)
	case 3:
		return d.str(name, &s.Hostname)
	case 4:
		return d.str(name, &s.AgentVersion)
	case 5:
		start := d.peekPos()
		u, neg, null, err := d.integer(name)
		switch {
		case err != nil || null:
			return err
		case neg:
			// encoding/json refuses a sign on an unsigned field, even -0.
			return d.outOfRange(name, start)
		}
		s.FreeDiskBytes = u
		return nil
	case 6:
		return d.str(name, &s.PolicyDigest)
	}
	_, err := d.skip()
	return err
}

func (d *eventDecoder) peekPos() int {
	d.space()
	return d.pos
}

// An object is read with members: at its '{', call members with first set, then after reading
// each member it returns, again with first unset, until it reports the end. It returns the index
// in names of a member named like one of them (exactly, else regardless of case, as
// encoding/json matches names), whose value the caller then reads, and skips the others.
// (A loop rather than a callback: a closure per object would cost an allocation per event.)
func (d *eventDecoder) members(path field, names []string, first bool) (n int, end bool, err error) {
	if first {
		d.pos++ // '{'
		d.depth++
		if d.depth > maxDepth {
			return 0, false, d.syntax("nested more than %d deep", maxDepth)
		}
	}
	for {
		switch c := d.peek(); {
		case c == '}':
			d.pos++
			d.depth--
			return 0, true, nil
		case first:
		case c == ',':
			d.pos++
		default:
			return 0, false, d.syntax("%s after a member of %s", d.kindAt(), path)
		}
		if d.peek() != '"' {
			return 0, false, d.syntax("%s where a member name is expected in %s", d.kindAt(), path)
		}
		d.buf = d.buf[:0]
		key, err := d.string(&d.buf)
		if err != nil {
			return 0, false, err
		}
		n := matchName(key, names)
		if d.peek() != ':' {
			return 0, false, d.syntax("%s after a member name", d.kindAt())
		}
		d.pos++
		if n >= 0 {
			return n, false, nil
		}
		if _, err := d.skip(); err != nil {
			return 0, false, err
		}
		first = false
	}
}

// matchName returns the index of key in names, or -1.
func matchName(key []byte, names []string) int {
	for n, name := range names {
		if string(key) == name {
			return n
		}
	}
	for n, name := range names {
		if bytes.EqualFold(key, []byte(name)) {
			return n
		}
	}
	return -1
}

// str reads a string field; null leaves it as it is.
func (d *eventDecoder) str(field field, dst *string) error {
	switch d.peek() {
	case '"':
		if d.strs == nil {
			// The unescaped strings of an event take at most as many bytes as the event.
			d.strs = make([]byte, 0, len(d.data))
		}
		off := len(d.strs)
		s, err := d.string(&d.strs)
		if err != nil {
			return err
		}
		if len(d.strs) == off { // no escape: s is a part of the input
			d.strs = append(d.strs, s...)
		}
		*dst = unsafe.String(unsafe.SliceData(d.strs[off:]), len(d.strs)-off)
		return nil
	case 'n':
		return d.literal()
	}
	return d.mismatch(field, "a string")
}

// integer reads an integer field: a JSON number without fraction or exponent, as its magnitude
// and sign (that it fits the field is the caller's to check); null reports null and leaves the
// field to the caller.
func (d *eventDecoder) integer(field field) (u uint64, neg, null bool, err error) {
	switch c := d.peek(); {
	case c == 'n':
		return 0, false, true, d.literal()
	case c != '-' && (c < '0' || c > '9'):
		return 0, false, false, d.mismatch(field, "an integer")
	}
	start := d.pos
	integral, err := d.number()
	if err != nil {
		return 0, false, false, err
	}
	num := d.data[start:d.pos]
	if neg = num[0] == '-'; neg {
		num = num[1:]
	}
	ok := integral
	for _, c := range num {
		digit := uint64(c - '0')
		if !ok || u > math.MaxUint64/10 || u == math.MaxUint64/10 && digit > math.MaxUint64%10 {
			ok = false
			break
		}
		u = u*10 + digit
	}
	if !ok {
		return 0, false, false, d.outOfRange(field, start)
	}
	return u, neg, false, nil
}

func (d *eventDecoder) outOfRange(field field, start int) error {
	return fmt.Errorf("%s: %s is not an integer the field holds (byte %d)", field, d.data[start:d.pos], start)
}

// int64 reads a signed integer field into dst; null leaves it as it is.
func (d *eventDecoder) int64(field field, dst *int64) (null bool, err error) {
	start := d.peekPos()
	u, neg, null, err := d.integer(field)
	switch {
	case err != nil || null:
		return null, err
	case neg && u <= 1<<63:
		*dst = int64(-u)
	case !neg && u < 1<<63:
		*dst = int64(u)
	default:
		return false, d.outOfRange(field, start)
	}
	return false, nil
}

// time reads a time field as encoding/json does: the value as written goes to
// time.Time.UnmarshalJSON (RFC 3339 in a string; null leaves it as it is).
func (d *eventDecoder) time(field field, t *time.Time) error {
	start := d.peekPos()
	if _, err := d.skip(); err != nil {
		return err
	}
	if err := t.UnmarshalJSON(d.data[start:d.pos]); err != nil {
		return fmt.Errorf("%s: %w (byte %d)", field, err, start)
	}
	return nil
}

// literal reads true, false or null.
func (d *eventDecoder) literal() error {
	rest := d.data[d.pos:]
	for _, lit := range []string{"null", "true", "false"} {
		if bytes.HasPrefix(rest, []byte(lit)) {
			d.pos += len(lit)
			return nil
		}
	}
	return d.syntax("not a literal")
}

// number reads a JSON number and reports whether it has neither fraction nor exponent.
func (d *eventDecoder) number() (integral bool, err error) {
	b, i := d.data, d.pos
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() bool {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > start
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		d.pos = i
		return false, d.syntax("a number without digits")
	}
	integral = true
	if i < len(b) && b[i] == '.' {
		i++
		integral = false
		if !digits() {
			d.pos = i
			return false, d.syntax("a number without digits after its decimal point")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		integral = false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			d.pos = i
			return false, d.syntax("a number without digits in its exponent")
		}
	}
	d.pos = i
	return integral, nil
}

// string reads a string at d.pos (its opening quote) and returns it unescaped: a slice of the
// input when it has no escape, else appended to *into.
func (d *eventDecoder) string(into *[]byte) ([]byte, error) {
	b := d.data
	d.pos++
	start := d.pos
	for i := start; i < len(b); {
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i == len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return b[start:i], nil
		case c == '\\':
			off := len(*into)
			*into = append(*into, b[start:i]...)
			d.pos = i
			var err error
			if *into, err = d.escaped(*into); err != nil {
				return nil, err
			}
			return (*into)[off:], nil
		case c < 0x20:
			d.pos = i
			return nil, d.syntax("control character %#02x in a string", c)
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				d.pos = i
				return nil, d.syntax("invalid UTF-8 in a string")
			}
			i += size
		}
	}
	d.pos = len(b)
	return nil, d.syntax("a string without its closing quote")
}

// plain marks the bytes that stand for themselves in a string: ASCII but control characters,
// the quote and the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// escaped continues string from the first backslash, unescaping onto buf.
func (d *eventDecoder) escaped(buf []byte) ([]byte, error) {
	b := d.data
	for i := d.pos; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return buf, nil
		case c == '\\':
			if i+1 >= len(b) {
				d.pos = len(b)
				return buf, d.syntax("a string without its closing quote")
			}
			switch e := b[i+1]; e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := hex4(b[i+2:])
				if !ok {
					d.pos = i
					return buf, d.syntax("invalid \\u escape in a string")
				}
				i += 6
				if r >= 0xd800 && r < 0xe000 {
					// A surrogate escape is valid only as the first of a pair.
					lo, ok := rune(0), false
					if r < 0xdc00 && i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
						lo, ok = hex4(b[i+2:])
						ok = ok && lo >= 0xdc00 && lo < 0xe000
					}
					if !ok {
						d.pos = i - 6
						return buf, d.syntax("invalid UTF-8 in a string: an unpaired surrogate escape")
					}
					r = 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00)
					i += 6
				}
				buf = utf8.AppendRune(buf, r)
				continue
			default:
				d.pos = i
				return buf, d.syntax("invalid escape \\%c in a string", e)
			}
			i += 2
		case c < 0x20:
			d.pos = i
			return buf, d.syntax("control character %#02x in a string", c)
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				d.pos = i
				return buf, d.syntax("invalid UTF-8 in a string")
			}
			buf = append(buf, b[i:i+size]...)
			i += size
		}
	}
	d.pos = len(b)
	return buf, d.syntax("a string without its closing quote")
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// skip reads any value, checking its syntax, and returns its first byte.
func (d *eventDecoder) skip() (byte, error) {
	c := d.peek()
	switch {
	case c == '"':
		d.buf = d.buf[:0]
		_, err := d.string(&d.buf)
		return c, err
	case c == '{':
		for first := true; ; first = false {
			// No names: every member is skipped.
			_, end, err := d.members(field{"", "an object"}, nil, first)
			if end || err != nil {
				return c, err
			}
		}
	case c == '[':
		d.pos++
		d.depth++
		if d.depth > maxDepth {
			return c, d.syntax("nested more than %d deep", maxDepth)
		}
		if d.peek() == ']' {
			d.pos++
			d.depth--
			return c, nil
		}
		for {
			if _, err := d.skip(); err != nil {
				return c, err
			}
			switch d.peek() {
			case ',':
				d.pos++
			case ']':
				d.pos++
				d.depth--
				return c, nil
			default:
				return c, d.syntax("%s after an array element", d.kindAt())
			}
		}
	case c == 't' || c == 'f' || c == 'n':
		return c, d.literal()
	case c == '-' || c >= '0' && c <= '9':
		_, err := d.number()
		return c, err
	case c == 0 && d.pos >= len(d.data):
		return c, d.syntax("end of input where a value is expected")
	}
	return c, d.syntax("character %q where a value is expected", c)
}
