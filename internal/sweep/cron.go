package sweep

import (
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Schedule is a five-field cron expression (minute hour day-of-month month day-of-week) read in
// a time zone. Fields take *, lists (1,15), ranges (1-5), steps (*/15, 0-30/10, 5/20), month
// names (jan-dec) and weekday names (sun-sat; 0 and 7 are Sunday); the macros @yearly
// (@annually), @monthly, @weekly, @daily (@midnight) and @hourly stand for their usual
// expressions. As in Vixie cron, when both day fields are restricted (neither starts with *) a
// day matches if either does.
//
// Wall-clock times that a daylight-saving change skips or repeats fire like this:
//
//   - Skipped (spring forward, e.g. 02:30 in Europe/Berlin on the last Sunday of March): the
//     firing happens at the first instant after the gap (03:00 CEST), once however many
//     skipped times the expression names. A daily job is late that day, never lost.
//   - Repeated (fall back, 02:00-02:59 happens twice): an expression whose hour field is * fires
//     at both instants, so "every 15 minutes" stays every 15 real minutes; any other expression
//     fires at the first instant only, so a daily job runs once.
type Schedule struct {
	expr   string
	loc    *time.Location
	minute uint64 // bit n: minute n matches
	hour   uint64
	dom    uint64
	month  uint64
	dow    uint64
	// domStar and dowStar mark a day field starting with *, for the either-day rule; hourStar
	// marks an hour field that is exactly *, for repeated wall-clock times.
	domStar, dowStar, hourStar bool
}

var cronMacros = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

var (
	monthNames = map[string]int{"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}
	dayNames   = map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
)

// ParseSchedule reads a cron expression for the time zone loc. It refuses an expression that
// never fires (February 30th).
func ParseSchedule(expr string, loc *time.Location) (*Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	text := strings.TrimSpace(expr)
	if m, ok := cronMacros[strings.ToLower(text)]; ok {
		text = m
	} else if strings.HasPrefix(text, "@") {
		return nil, fmt.Errorf("%q is not a known macro (use @yearly, @monthly, @weekly, @daily, @hourly or five fields)", expr)
	}
	fields := strings.Fields(text)
	if len(fields) != 5 {
		return nil, fmt.Errorf("%q has %d fields; a cron expression has five: minute hour day-of-month month day-of-week", expr, len(fields))
	}
	s := &Schedule{expr: strings.Join(fields, " "), loc: loc}
	specs := []struct {
		name   string
		dst    *uint64
		lo, hi int
		names  map[string]int
	}{
		{"minute", &s.minute, 0, 59, nil},
		{"hour", &s.hour, 0, 23, nil},
		{"day of month", &s.dom, 1, 31, nil},
		{"month", &s.month, 1, 12, monthNames},
		{"day of week", &s.dow, 0, 7, dayNames},
	}
	for i, f := range specs {
		set, err := parseField(fields[i], f.lo, f.hi, f.names)
		if err != nil {
			return nil, fmt.Errorf("%s field %q: %w", f.name, fields[i], err)
		}
		*f.dst = set
	}
	if s.dow&(1<<7) != 0 {
		s.dow = s.dow&^(1<<7) | 1 // 7 is Sunday too
	}
	s.domStar = strings.HasPrefix(fields[2], "*")
	s.dowStar = strings.HasPrefix(fields[4], "*")
	s.hourStar = fields[1] == "*"
	// Within 8 years every month/day combination that can happen has happened (Feb 29 included).
	from := time.Date(2000, 1, 1, 0, 0, 0, 0, loc)
	if s.Next(from).IsZero() {
		return nil, fmt.Errorf("%q never fires (no day matches it)", expr)
	}
	return s, nil
}

func parseField(field string, lo, hi int, names map[string]int) (uint64, error) {
	var set uint64
	for _, item := range strings.Split(field, ",") {
		if item == "" {
			return 0, fmt.Errorf("empty list item")
		}
		rng, stepText, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 || n > hi {
				return 0, fmt.Errorf("step %q must be a number from 1 to %d", stepText, hi)
			}
			step = n
		}
		var from, to int
		switch {
		case rng == "*":
			from, to = lo, hi
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if from, err = fieldValue(a, lo, hi, names); err != nil {
				return 0, err
			}
			if to, err = fieldValue(b, lo, hi, names); err != nil {
				return 0, err
			}
			if to < from {
				return 0, fmt.Errorf("range %q runs backwards", rng)
			}
		default:
			v, err := fieldValue(rng, lo, hi, names)
			if err != nil {
				return 0, err
			}
			from, to = v, v
			if hasStep {
				to = hi // 5/20: from 5 to the end, every 20
			}
		}
		for v := from; v <= to; v += step {
			set |= 1 << uint(v)
		}
	}
	return set, nil
}

func fieldValue(s string, lo, hi int, names map[string]int) (int, error) {
	if v, ok := names[strings.ToLower(s)]; ok {
		return v, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if v < lo || v > hi {
		return 0, fmt.Errorf("%d is outside %d-%d", v, lo, hi)
	}
	return v, nil
}

// String returns the expression as parsed (macros expanded, spaces normalised).
func (s *Schedule) String() string { return s.expr }

// Location is the schedule's time zone.
func (s *Schedule) Location() *time.Location { return s.loc }

// searchDays bounds Next: 8 years and a day, past any leap-year cycle.
const searchDays = 8*366 + 1

// overlapWindow is more than any daylight-saving shift: the wall-clock hours a fall-back can
// repeat.
const overlapWindow = 4 * time.Hour

// Next returns the first firing strictly after after, or the zero time if there is none within
// eight years.
func (s *Schedule) Next(after time.Time) time.Time {
	// Wall-clock times are handled as UTC values of their fields; instants are real times.
	wallOf := func(t time.Time) time.Time {
		l := t.In(s.loc)
		return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
	}
	start := wallOf(after)
	// Just before a fall-back, wall-clock times already passed come round again: look back.
	if offset(after, s.loc) != offset(after.Add(overlapWindow), s.loc) {
		start = start.Add(-overlapWindow)
	}
	start = start.Truncate(time.Minute)

	var best, bestWall time.Time
	bestSecond := false // best is the second instant of a repeated wall-clock time
	day := time.Date(start.Year(), start.Month(), start.Day(), 0, 0, 0, 0, time.UTC)
	for range searchDays {
		if !best.IsZero() && day.After(bestWall.Add(overlapWindow)) {
			return best
		}
		if s.dayMatches(day) {
			for h := range bitsOf(s.hour) {
				for m := range bitsOf(s.minute) {
					w := day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
					if w.Before(start) {
						continue
					}
					if !best.IsZero() && (!bestSecond || w.After(bestWall.Add(overlapWindow))) {
						return best
					}
					for i, u := range s.instants(w) {
						if u.After(after) && (best.IsZero() || u.Before(best)) {
							best, bestWall, bestSecond = u, w, i == 1
						}
					}
				}
			}
		}
		day = day.AddDate(0, 0, 1)
	}
	return best
}

func (s *Schedule) dayMatches(day time.Time) bool {
	if s.month&(1<<uint(day.Month())) == 0 {
		return false
	}
	dom := s.dom&(1<<uint(day.Day())) != 0
	dow := s.dow&(1<<uint(day.Weekday())) != 0
	if s.domStar || s.dowStar {
		return dom && dow
	}
	return dom || dow
}

// instants returns the real instants at which the zone's clock shows the wall-clock time w
// (given as UTC fields), in order and as this schedule fires them: one normally; for a time a
// fall-back repeats, both if the hour field is * and the first otherwise; for a time a spring
// forward skips, the end of the gap.
func (s *Schedule) instants(w time.Time) []time.Time {
	var out []time.Time
	seen := map[int]bool{}
	for _, probe := range []time.Duration{-24 * time.Hour, 0, 24 * time.Hour} {
		off := offset(w.Add(probe), s.loc)
		if seen[off] {
			continue
		}
		seen[off] = true
		u := w.Add(-time.Duration(off) * time.Second)
		if l := u.In(s.loc); sameWall(l, w) {
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	switch {
	case len(out) > 1 && !s.hourStar:
		return out[:1]
	case len(out) > 0:
		return out
	}
	return []time.Time{s.gapEnd(w)}
}

// gapEnd returns the first instant whose wall-clock time is after w, for a w that a spring
// forward skips: the moment the clocks jumped.
func (s *Schedule) gapEnd(w time.Time) time.Time {
	lo := w.Add(-time.Duration(offset(w.Add(24*time.Hour), s.loc)) * time.Second)  // read with the later offset: before the gap
	hi := w.Add(-time.Duration(offset(w.Add(-24*time.Hour), s.loc)) * time.Second) // read with the earlier offset: after it
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2).Truncate(time.Second)
		if wallAfter(mid.In(s.loc), w) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

func offset(t time.Time, loc *time.Location) int {
	_, off := t.In(loc).Zone()
	return off
}

func sameWall(l, w time.Time) bool {
	return l.Year() == w.Year() && l.Month() == w.Month() && l.Day() == w.Day() && l.Hour() == w.Hour() && l.Minute() == w.Minute()
}

// wallAfter reports whether the wall-clock time of l is after w (UTC fields).
func wallAfter(l, w time.Time) bool {
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), 0, time.UTC).After(w)
}

// bitsOf yields the set bits of v in increasing order.
func bitsOf(v uint64) func(yield func(int) bool) {
	return func(yield func(int) bool) {
		for v != 0 {
			b := bits.TrailingZeros64(v)
			if !yield(b) {
				return
			}
			v &^= 1 << uint(b)
		}
	}
}
