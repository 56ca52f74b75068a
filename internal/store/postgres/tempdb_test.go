package postgres

import (
	"strings"
	"testing"
)

// A server DSN pointed at a temporary database, in both DSN forms; passwords never reach a
// message.
func TestWithDatabaseAndRedact(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ server, want string }{
		{"postgres://root@127.0.0.1:5432/postgres?sslmode=disable", "postgres://root@127.0.0.1:5432/db1?sslmode=disable"},
		{"postgresql://u:pw@h/x", "postgresql://u:pw@h/db1"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=db1"},
	} {
		if got := withDatabase(c.server, "db1"); got != c.want {
			t.Errorf("withDatabase(%q) = %q, want %q", c.server, got, c.want)
		}
	}
	for _, dsn := range []string{"postgres://u:secret@h/x", "host=h password=secret"} {
		if got := Redact(dsn); strings.Contains(got, "secret") || got == "" {
			t.Errorf("Redact(%q) = %q", dsn, got)
		}
	}
}
