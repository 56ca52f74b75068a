package api

import (
	"context"
	"net/http"
	"testing"

	"godwit.dev/godwit/internal/wire"
)

// actorMigrations records the actor each migration action and deletion is made by.
type actorMigrations struct {
	Migrations
	actors map[string]string
}

func (m *actorMigrations) Act(_ context.Context, name string, act wire.MigrationAction, actor string) (wire.Migration, error) {
	m.actors[string(act)] = actor
	return wire.Migration{Name: name, State: "paused"}, nil
}

func (m *actorMigrations) Delete(_ context.Context, _, actor string) error {
	m.actors["delete"] = actor
	return nil
}

// A migration deleted through the API is recorded as deleted by the caller, as every other
// operator action is: an operator's token is not the admin token.
func TestMigrationDeleteIsByTheCaller(t *testing.T) {
	t.Parallel()
	mc := &actorMigrations{actors: map[string]string{}}
	b := setup(t, func(c *Config) { c.Migrations = mc })
	op, _ := b.apiToken(t, wire.RoleOperator, "1h")
	if code, eb := b.call(t, "POST", "/api/v1/migrations/m/pause", op, "", nil); code != http.StatusOK {
		t.Fatalf("pause: %d %v", code, eb)
	}
	if code, eb := b.call(t, "DELETE", "/api/v1/migrations/m", op, "", nil); code != http.StatusOK {
		t.Fatalf("delete: %d %v", code, eb)
	}
	for act, want := range map[string]string{"pause": "operator token", "delete": "operator token"} {
		if got := mc.actors[act]; got != want {
			t.Errorf("%s recorded as by %q, want %q (the caller's token)", act, got, want)
		}
	}
}
