package bus

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

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

	if user == HubUser || user == systemUser {
		// The hub's secret never leaves this process, and the hub's users are refused on the
		// network listener all the same.
		addr := c.RemoteAddress()
		if addr == nil || addr.Network() != "pipe" {
			a.log.Warn("nats: hub user refused on a network connection", "user", user, "remote", addrString(addr))
			return false
		}
		if subtle.ConstantTimeCompare([]byte(password), []byte(a.hubSecret)) != 1 {
			return false
		}
		inst := (*Server)(a).cur.Load()
		acc := inst.hub
		if user == systemUser {
			if acc = inst.ns.SystemAccount(); acc == nil {
				return false
			}
		}
		c.RegisterUser(&server.User{Username: user, Account: acc})
		return true
	}

	if user == RelayUser {
		if !a.cfg.Relays {
			a.log.Warn("nats: relay connection refused: relays are not enabled", "remote", addrString(c.RemoteAddress()))
			return false
		}
		perms, err := (*Server)(a).relayPermissions(password)
		if err != nil {
			a.log.Info("nats: relay connection refused", "err", err)
			return false
		}
		c.RegisterUser(&server.User{Username: RelayUser, Account: (*Server)(a).cur.Load().agents, Permissions: perms})
		return true
	}

	v := (*Server)(a).verify
	if err := v.check(a.ctx, user, password); err != nil {
		return false
	}
	bucket, err := v.failoverBucket(a.ctx, user)
	if err != nil {
		return false
	}
	c.RegisterUser(&server.User{Username: user, Account: (*Server)(a).cur.Load().agents, Permissions: AgentPermissionsIn(user, bucket)})
	return true
}

// errRefused is why a connection was refused, as logged and, with the auth callout, returned to
// the NATS server. It never carries the password.
var errRefused = errors.New("refused")

// verifier decides whether an agent may connect: the one rule behind the embedded server's
// authenticator and the external cluster's auth callout.
type verifier struct {
	auth    Authenticator
	timeout time.Duration
	log     *slog.Logger
	// probe, when set, also accepts the hub's own start-up probe identities (see probe.go).
	probe *probeKey
	now   func() time.Time
}

// check returns nil if user is an enrolled, unrevoked agent whose password matches, and an error
// saying why not otherwise. A failed look-up (store down, or slower than the timeout) refuses:
// the agent retries, and revocation never depends on the store being up.
func (v *verifier) check(ctx context.Context, user, password string) error {
	if !ValidAgentID(user) || password == "" {
		return fmt.Errorf("%w: not an agent identity", errRefused)
	}
	if v.probe != nil && strings.HasPrefix(password, probePrefix) {
		if err := v.probe.verify(user, password, v.now()); err != nil {
			v.log.Warn("nats: probe identity refused", "agent_id", user, "err", err)
			return fmt.Errorf("%w: %w", errRefused, err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	hash, revoked, err := v.auth.AgentCredential(ctx, user)
	switch {
	case errors.Is(err, fault.ErrNotFound):
		v.log.Info("nats: unknown agent refused", "agent_id", user)
		return fmt.Errorf("%w: unknown agent", errRefused)
	case err != nil:
		v.log.Warn("nats: agent credential look-up failed; connection refused", "agent_id", user, "err", err)
		return fmt.Errorf("%w: credential look-up failed", errRefused)
	case revoked:
		v.log.Info("nats: revoked agent refused", "agent_id", user)
		return fmt.Errorf("%w: revoked", errRefused)
	case !credential.Matches(password, hash):
		v.log.Info("nats: agent refused: wrong password", "agent_id", user)
		return fmt.Errorf("%w: wrong password", errRefused)
	}
	return nil
}

// FailoverGroups is implemented by an Authenticator that knows failover groups: an agent that
// is a member of one gets the permissions of its group's bucket (AgentPermissionsIn).
type FailoverGroups interface {
	// FailoverBucket is the bucket of agentID's group, "" when it is in none.
	FailoverBucket(ctx context.Context, agentID string) (string, error)
}

// failoverBucket is the bucket of agentID's group; a failed look-up refuses the connection like
// a failed credential look-up (the agent retries).
func (v *verifier) failoverBucket(ctx context.Context, agentID string) (string, error) {
	g, ok := v.auth.(FailoverGroups)
	if !ok {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	b, err := g.FailoverBucket(ctx, agentID)
	if err != nil {
		v.log.Warn("nats: failover group look-up failed; connection refused", "agent_id", agentID, "err", err)
		return "", fmt.Errorf("%w: failover group look-up failed", errRefused)
	}
	if b != "" && !validBucketToken(b) {
		return "", fmt.Errorf("%w: invalid failover bucket %q", errRefused, b)
	}
	return b, nil
}

// validBucketToken reports whether b can stand in a subject and a permission as one token.
func validBucketToken(b string) bool {
	if b == "" {
		return false
	}
	for _, r := range b {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func addrString(a interface{ String() string }) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// Limits of one agent connection, enforced by the server on both topologies: the embedded
// server sets them on the agents' account, an external cluster takes them from the user JWT the
// hub's auth callout answers with. An agent uses a handful of subscriptions; a message above
// the payload bound is refused before it reaches a stream.
const (
	AgentMaxSubscriptions = 64
	AgentMaxPayload       = 1 << 20
)

// AgentPermissions is what an agent may do in the agents' account: publish only its events, its
// heartbeat, its observed state, its sweep results and a direct get of its own desired-state and
// sweep-request keys; subscribe only to its reply inbox and those two keys of its own. An invalid
// agent ID gets permissions that deny everything.
func AgentPermissions(agentID string) *server.Permissions { return AgentPermissionsIn(agentID, "") }

// AgentPermissionsIn is AgentPermissions of a member of the failover group whose bucket is
// groupBucket ("" for none). Beside its own assignment key (read and watch), a member may read
// the group record, the control key and the members' keys of that bucket, write the record
// (by compare-and-set when it sends the expected revision, which only the member itself can
// make it do) and its own member key,
// subscribe to the record's subject (the other members' writes of it, as a hint to read it
// again: GroupKV.Watch), and nothing of any other bucket. It never writes the control key:
// that is the hub's.
func AgentPermissionsIn(agentID, groupBucket string) *server.Permissions {
	if !ValidAgentID(agentID) || groupBucket != "" && !validBucketToken(groupBucket) {
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Deny: []string{">"}},
			Subscribe: &server.SubjectPermission{Deny: []string{">"}},
		}
	}
	pub := []string{
		wire.EventSubject(agentID),
		wire.KVSubject(wire.BucketHeartbeats, agentID),
		wire.KVSubject(wire.BucketObserved, agentID),
		wire.KVDirectGetSubject(wire.BucketDesired, agentID),
		wire.KVSubject(wire.BucketSweepResults, agentID),
		wire.KVDirectGetSubject(wire.BucketSweep, agentID),
		wire.KVDirectGetSubject(wire.BucketFailover, agentID),
	}
	sub := []string{
		wire.AgentInbox(agentID) + ".>",
		wire.KVSubject(wire.BucketDesired, agentID),
		wire.KVSubject(wire.BucketSweep, agentID),
		wire.KVSubject(wire.BucketFailover, agentID),
	}
	if groupBucket != "" {
		sub = append(sub, wire.KVSubject(groupBucket, groupRecordKey))
		pub = append(pub,
			wire.KVDirectGetSubject(groupBucket, "record"),
			wire.KVDirectGetSubject(groupBucket, "control"),
			wire.KVDirectGetSubject(groupBucket, "member.*"),
			wire.KVSubject(groupBucket, "record"),
			wire.KVSubject(groupBucket, "member."+agentID),
		)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
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
