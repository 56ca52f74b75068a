package bus

import (
	"context"
	"crypto/subtle"
	"errors"

	"github.com/nats-io/nats-server/v2/server"

	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// authenticator is the server's CustomClientAuthentication; it is a Server seen through another
// method set, so the server options can hold it before the Server is complete.
type authenticator Server

var _ server.Authentication = (*authenticator)(nil)

// Check decides one client connection. It runs on that connection's read loop, so a slow store
// delays only the connecting client, and never longer than the look-up timeout.
func (a *authenticator) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	opts := c.GetOpts()
	if opts == nil {
		return false
	}
	user, password := opts.Username, opts.Password

	if user == HubUser {
		// The hub's secret never leaves this process, and the hub user is refused on the
		// network listener all the same.
		addr := c.RemoteAddress()
		if addr == nil || addr.Network() != "pipe" {
			a.log.Warn("nats: hub user refused on a network connection", "remote", addrString(addr))
			return false
		}
		if subtle.ConstantTimeCompare([]byte(password), []byte(a.hubSecret)) != 1 {
			return false
		}
		c.RegisterUser(&server.User{Username: HubUser, Account: (*Server)(a).cur.Load().hub})
		return true
	}

	if !ValidAgentID(user) || password == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(a.ctx, a.authTO)
	defer cancel()
	hash, revoked, err := a.auth.AgentCredential(ctx, user)
	switch {
	case errors.Is(err, fault.ErrNotFound):
		a.log.Info("nats: unknown agent refused", "agent_id", user)
		return false
	case err != nil:
		a.log.Warn("nats: agent credential look-up failed; connection refused", "agent_id", user, "err", err)
		return false
	case revoked:
		a.log.Info("nats: revoked agent refused", "agent_id", user)
		return false
	case !credential.Matches(password, hash):
		a.log.Info("nats: agent refused: wrong password", "agent_id", user)
		return false
	}
	c.RegisterUser(&server.User{Username: user, Account: (*Server)(a).cur.Load().agents, Permissions: AgentPermissions(user)})
	return true
}

func addrString(a interface{ String() string }) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// AgentPermissions is what an agent may do in the agents' account: publish only its events, its
// heartbeat, its observed state, its sweep results and a direct get of its own desired-state and
// sweep-request keys; subscribe only to its reply inbox and those two keys of its own. An invalid
// agent ID gets permissions that deny everything.
func AgentPermissions(agentID string) *server.Permissions {
	if !ValidAgentID(agentID) {
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Deny: []string{">"}},
			Subscribe: &server.SubjectPermission{Deny: []string{">"}},
		}
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			wire.EventSubject(agentID),
			wire.KVSubject(wire.BucketHeartbeats, agentID),
			wire.KVSubject(wire.BucketObserved, agentID),
			wire.KVDirectGetSubject(wire.BucketDesired, agentID),
			wire.KVSubject(wire.BucketSweepResults, agentID),
			wire.KVDirectGetSubject(wire.BucketSweep, agentID),
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			wire.AgentInbox(agentID) + ".>",
			wire.KVSubject(wire.BucketDesired, agentID),
			wire.KVSubject(wire.BucketSweep, agentID),
		}},
	}
}

// ValidAgentID reports whether id is a canonical (lower-case, hyphenated) UUID. Agent IDs become
// subject tokens and permission entries, so nothing else, in particular no ".", "*" or ">", may
// pass for one.
func ValidAgentID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		switch i {
		case 8, 13, 18, 23:
			if ch != '-' {
				return false
			}
		default:
			if !('0' <= ch && ch <= '9' || 'a' <= ch && ch <= 'f') {
				return false
			}
		}
	}
	return true
}
