package outbox

import (
	"encoding/json"
	"fmt"
	"slices"
	"unicode/utf8"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// Room left for the truncation marker when deciding how much to cut, and the part of the error
// text and message kept until everything less valuable has gone.
const (
	markerRoom = 64
	keepText   = 4 << 10
)

// encode returns e as JSON of at most wire.MaxEventBytes. An event that is too large is made to
// fit rather than dropped, giving up first what matters least: the oldest part of the output
// tail; then the end of the error text and of the message beyond their first 4 KiB; then the
// type-specific extra and the system information, whole (they cannot be cut in the middle and
// stay JSON); then the rest of the error text and message; at last the names in the envelope.
// Every cut leaves a marker saying how much went. cut names the fields that were shortened.
func encode(e wire.Event) (payload []byte, cut []string, err error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	if len(b) <= wire.MaxEventBytes {
		return b, nil, nil
	}
	size := len(b)
	d := &e.Data
	fits := func() bool {
		if b, err = json.Marshal(e); err != nil {
			return false
		}
		return len(b) <= wire.MaxEventBytes
	}
	// shrink cuts the field down towards floor bytes until the event fits.
	shrink := func(name string, p *string, floor int, keepTail bool) bool {
		orig := *p
		if len(orig)-floor <= markerRoom {
			return false // cutting would save less than the marker costs
		}
		removed := 0
		for len(b) > wire.MaxEventBytes && len(orig)-removed > floor {
			removed = min(len(orig)-floor, removed+len(b)-wire.MaxEventBytes+markerRoom)
			*p = shorten(orig, removed, keepTail)
			if fits() {
				break
			}
			if err != nil {
				return false
			}
		}
		if removed > 0 && !slices.Contains(cut, name) {
			cut = append(cut, name)
		}
		return len(b) <= wire.MaxEventBytes
	}
	note := func(s string) {
		if d.Message != "" {
			d.Message += "\n"
		}
		d.Message += s
	}

	steps := []func() bool{
		func() bool { return shrink("output_tail", &d.OutputTail, 0, true) },
		func() bool { return shrink("error", &d.Error, keepText, false) },
		func() bool { return shrink("message", &d.Message, keepText, false) },
		func() bool {
			if len(d.Extra) == 0 {
				return false
			}
			n := len(d.Extra)
			d.Extra = nil
			note(fmt.Sprintf("[extra data of %d bytes dropped by the agent outbox: the event was over %d bytes]", n, wire.MaxEventBytes))
			cut = append(cut, "extra")
			return fits()
		},
		func() bool {
			if d.System == nil {
				return false
			}
			d.System = nil
			note("[system information dropped by the agent outbox: the event was too large]")
			cut = append(cut, "system")
			return fits()
		},
		func() bool { return shrink("error", &d.Error, 0, false) },
		func() bool { return shrink("message", &d.Message, 0, false) },
		func() bool { return shrink("subject", &e.Subject, 1<<10, false) },
		func() bool { return shrink("migration", &d.Migration, 1<<10, false) },
		func() bool { return shrink("step", &d.Step, 1<<10, false) },
		func() bool { return shrink("from_version", &d.FromVersion, 1<<10, false) },
		func() bool { return shrink("to_version", &d.ToVersion, 1<<10, false) },
	}
	for _, step := range steps {
		if step() {
			return b, cut, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("encode event %s: %w", e.ID, err)
		}
	}
	return nil, nil, fmt.Errorf("event %s (%s) is %d bytes and cannot be cut to %d: %w",
		e.ID, e.Type, size, wire.MaxEventBytes, fault.ErrTooLarge)
}

// shorten removes about removed bytes from s, from its start when keepTail is set (an output
// tail keeps its newest part) and from its end otherwise, on a UTF-8 boundary, with a marker in
// their place.
func shorten(s string, removed int, keepTail bool) string {
	if keepTail {
		i := min(removed, len(s))
		for i < len(s) && !utf8.RuneStart(s[i]) {
			i++
		}
		return fmt.Sprintf("[… %d bytes truncated by the agent outbox]\n", i) + s[i:]
	}
	i := max(len(s)-removed, 0)
	for i > 0 && i < len(s) && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + fmt.Sprintf("\n[… %d bytes truncated by the agent outbox]", len(s)-i)
}
