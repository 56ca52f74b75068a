// Package human words values for people, the same way in the CLI's tables and the web UI.
package human

import (
	"fmt"
	"time"
)

// Ago says how long before now t was, compactly ("12s ago", "5m ago", "3h ago" up to two days,
// then "4d ago"). The zero time is "never"; a time after now (the clocks of the machine that
// stamped it and of this one disagree) is "just now".
func Ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}
