package human

import (
	"testing"
	"time"
)

func TestAgo(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "never"},
		{now.Add(time.Second), "just now"},
		{now, "0s ago"},
		{now.Add(-59 * time.Second), "59s ago"},
		{now.Add(-90 * time.Second), "1m ago"},
		{now.Add(-59 * time.Minute), "59m ago"},
		{now.Add(-47 * time.Hour), "47h ago"},
		{now.Add(-49 * time.Hour), "2d ago"},
	} {
		if got := Ago(c.t, now); got != c.want {
			t.Errorf("Ago(now%+v) = %q, want %q", c.t.Sub(now), got, c.want)
		}
	}
}
