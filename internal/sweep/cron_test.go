package sweep

import (
	"strings"
	"testing"
	"time"
)

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("time zone %s: %v", name, err)
	}
	return loc
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// firings returns the first n firings after from.
func firings(s *Schedule, from time.Time, n int) []string {
	var out []string
	t := from
	for range n {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t.UTC().Format(time.RFC3339))
	}
	return out
}

func TestScheduleNext(t *testing.T) {
	t.Parallel()
	berlin := mustLoad(t, "Europe/Berlin")
	for _, tc := range []struct {
		name, expr string
		loc        *time.Location
		from       string
		want       []string
	}{
		{"every 15 minutes", "*/15 * * * *", time.UTC, "2026-05-01T10:07:00Z",
			[]string{"2026-05-01T10:15:00Z", "2026-05-01T10:30:00Z", "2026-05-01T10:45:00Z", "2026-05-01T11:00:00Z"}},
		{"an exact firing time is not repeated", "*/15 * * * *", time.UTC, "2026-05-01T10:15:00Z",
			[]string{"2026-05-01T10:30:00Z"}},
		{"sub-minute after", "0 * * * *", time.UTC, "2026-05-01T09:59:59.999Z",
			[]string{"2026-05-01T10:00:00Z"}},
		{"weekdays at 9 Berlin: winter then summer time", "0 9 * * mon-fri", berlin, "2026-03-26T12:00:00Z",
			[]string{"2026-03-27T08:00:00Z", "2026-03-30T07:00:00Z", "2026-03-31T07:00:00Z"}},
		// Spring forward, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z). 02:30 does not
		// exist that day: the job runs when the gap ends, once.
		{"daily 02:30 Berlin across spring forward", "30 2 * * *", berlin, "2026-03-27T12:00:00Z",
			[]string{"2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"}},
		{"every 30 minutes Berlin across spring forward", "*/30 * * * *", berlin, "2026-03-29T00:10:00Z",
			[]string{"2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"}},
		// Fall back, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00Z); 02:00-02:59 happens twice.
		{"daily 02:30 Berlin across fall back runs once", "30 2 * * *", berlin, "2026-10-23T12:00:00Z",
			[]string{"2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}},
		{"every 30 minutes Berlin across fall back keeps its pace", "*/30 * * * *", berlin, "2026-10-24T23:40:00Z",
			[]string{"2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z"}},
		{"every 15 minutes from inside the first pass of the repeated hour", "*/15 * * * *", berlin, "2026-10-25T00:50:00Z",
			[]string{"2026-10-25T01:00:00Z", "2026-10-25T01:15:00Z"}},
		{"hourly Berlin across fall back", "@hourly", berlin, "2026-10-24T23:30:00Z",
			[]string{"2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"}},
		{"fixed hours fire on the first pass only", "0 1-3 * * *", berlin, "2026-10-24T22:30:00Z",
			[]string{"2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z"}},
		{"either day when both day fields are set", "0 0 13 * fri", time.UTC, "2026-02-01T00:00:00Z",
			[]string{"2026-02-06T00:00:00Z", "2026-02-13T00:00:00Z", "2026-02-20T00:00:00Z", "2026-02-27T00:00:00Z", "2026-03-06T00:00:00Z", "2026-03-13T00:00:00Z"}},
		{"both days when one starts with *", "0 0 */10 * fri", time.UTC, "2026-01-01T00:00:00Z",
			[]string{"2026-05-01T00:00:00Z", "2026-07-31T00:00:00Z"}}, // days 1, 11, 21, 31 that are Fridays
		{"leap day", "0 0 29 feb *", time.UTC, "2026-01-01T00:00:00Z", []string{"2028-02-29T00:00:00Z"}},
		{"sunday as 7", "0 12 * * 7", time.UTC, "2026-05-01T00:00:00Z", []string{"2026-05-03T12:00:00Z"}},
		{"step from a value", "5/20 * * * *", time.UTC, "2026-05-01T10:00:00Z",
			[]string{"2026-05-01T10:05:00Z", "2026-05-01T10:25:00Z", "2026-05-01T10:45:00Z", "2026-05-01T11:05:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSchedule(tc.expr, tc.loc)
			if err != nil {
				t.Fatalf("ParseSchedule(%q): %v", tc.expr, err)
			}
			got := firings(s, utc(tc.from), len(tc.want))
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("%s in %s from %s:\n got %v\nwant %v", tc.expr, tc.loc, tc.from, got, tc.want)
			}
		})
	}
}

func TestParseScheduleRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ expr, want string }{
		{"* * * *", "five"},
		{"* * * * * *", "five"},
		{"60 * * * *", "minute field"},
		{"* 24 * * *", "hour field"},
		{"* * 0 * *", "day of month field"},
		{"* * * 13 *", "month field"},
		{"* * * * 8", "day of week field"},
		{"*/0 * * * *", "step"},
		{"5-1 * * * *", "backwards"},
		{"x * * * *", "not a number"},
		{"1,,2 * * * *", "empty"},
		{"@every 5m", "macro"},
		{"0 0 30 feb *", "never fires"},
		{"", "five"},
	} {
		if _, err := ParseSchedule(tc.expr, time.UTC); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSchedule(%q) = %v, want an error about %q", tc.expr, err, tc.want)
		}
	}
}
