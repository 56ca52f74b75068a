package sqlstore

import (
	"strings"
	"testing"
	"testing/fstest"
)

// The migrations this binary carries load on both engines, one per version.
func TestMigrationsLoad(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		ms, err := loadMigrations(engine)
		if err != nil {
			t.Fatalf("%s: %v", engine, err)
		}
		if len(ms) == 0 {
			t.Fatalf("%s: no migrations", engine)
		}
	}
}

func TestMigrationVersions(t *testing.T) {
	file := func(body string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(body)} }
	cases := []struct {
		name  string
		files fstest.MapFS
		want  string // error substring; empty: loads, and the sqlite body wins
	}{
		{"engine file stands in for the shared one", fstest.MapFS{
			"migrations/0001_init.sql":        file("shared"),
			"migrations/0001_init.sqlite.sql": file("sqlite"),
		}, ""},
		{"two changes under one number", fstest.MapFS{
			"migrations/0001_init.sql":  file("a"),
			"migrations/0002_users.sql": file("b"),
			"migrations/0002_roles.sql": file("c"),
		}, `version 2 is both "roles" and "users"`},
		{"two engine changes under one number", fstest.MapFS{
			"migrations/0001_a.sqlite.sql": file("a"),
			"migrations/0001_b.sqlite.sql": file("b"),
		}, "version 1 is both"},
		{"a gap", fstest.MapFS{
			"migrations/0001_a.sql": file("a"),
			"migrations/0003_c.sql": file("c"),
		}, "version 2 missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ms, err := loadMigrationsFrom(c.files, "sqlite")
			if c.want != "" {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("err = %v, want %q", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 1 || ms[0].sql != "sqlite" {
				t.Fatalf("loaded %+v, want the sqlite file alone", ms)
			}
		})
	}
}
