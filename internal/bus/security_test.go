package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// waitPermissionViolation waits for the asynchronous permissions violation naming subject.
func waitPermissionViolation(t *testing.T, a *agentConn, subject string) error {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-a.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), fmt.Sprintf("%q", subject)) {
				return err
			}
		case <-timeout:
			t.Fatalf("no permissions violation for %s", subject)
			return nil
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	bd := setup(t)
	id, password := bd.agents.enroll(t)
	revokedID, revokedPW := bd.agents.enroll(t)
	bd.agents.revoke(revokedID)

	cases := []struct {
		name, user, password string
	}{
		{"wrong password", id, password + "x"},
		{"empty password", id, ""},
		{"unknown agent", newAgentID(t), password},
		{"revoked agent", revokedID, revokedPW},
		{"hub user over the network", HubUser, bd.srv.hubSecret},
		{"system user over the network", systemUser, bd.srv.hubSecret},
		{"wildcard user", ">", password},
		{"upper-case ID", strings.ToUpper(id), password},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { assertRefused(t, bd.srv.ClientURL(), tc.user, tc.password) })
	}

	t.Run("ConnectAgent reports it", func(t *testing.T) {
		_, err := ConnectAgent([]string{bd.srv.ClientURL()}, revokedID, revokedPW)
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("err = %v, want an authorization violation", err)
		}
	})

	t.Run("credential look-up fails or hangs", func(t *testing.T) {
		failing := &fakeAuth{AgentCredentialFunc: func(ctx context.Context, id string) (string, bool, error) {
			if id == revokedID {
				<-ctx.Done() // a store that hangs: the look-up timeout must end it
				return "", false, ctx.Err()
			}
			return "", false, errors.New("store down")
		}}
		srv, err := StartServer(ServerConfig{
			StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: failing, AuthLookupTimeout: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Stop(context.Background()) })
		for _, user := range []string{id, revokedID} {
			_, err = ConnectAgent([]string{srv.ClientURL()}, user, password)
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("%s: err = %v, want an authorization violation", user, err)
			}
		}
	})

	// Sanity: the same credentials do work.
	nc := bd.connectAgent(t, id, password)
	if !nc.IsConnected() {
		t.Fatal("valid agent not connected")
	}
}

// assertRefused connects as user with password and wants an authorization violation.
func assertRefused(t *testing.T, url, user, password string) {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo(user, password))
	if err == nil {
		nc.Close()
		t.Fatal("connection accepted")
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("err = %v, want an authorization violation", err)
	}
}
