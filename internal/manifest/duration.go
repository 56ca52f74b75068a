package manifest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// maxDays keeps "Nd" within time.Duration's range (about 292 years).
const maxDays = 100_000

// ParseDuration reads a Go duration (90s, 5m, 1h30m) or a whole number of days (7d).
func ParseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok && days != "" && strings.Trim(days, "0123456789") == "" {
		n, err := strconv.Atoi(days)
		if err != nil || n > maxDays {
			return 0, fmt.Errorf("%q is too long a duration", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write e.g. 30s, 5m, 4h or 7d)", s)
	}
	return v, nil
}

// FormatDuration prints a duration as a spec would write it: 10m rather than 10m0s, 2h rather
// than 2h0m0s. ParseDuration reads it back to the same value.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
