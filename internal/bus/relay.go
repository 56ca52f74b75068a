package bus

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// Relay connections exist for `godwit bench fleet` only: they let it carry more simulated agents
// than the open-file limit allows one connection each, while every agent keeps its own identity
// on the bus.
//
// A relay connection presents the credentials of every agent it carries, as its password
// (RelayPassword); the server checks each one exactly as it checks that agent's own connection
// (enrolled, not revoked, the password matching the stored hash, the failover group looked up)
// and refuses the connection if any fails. The connection lands in the agents' account, under its
// limits, with the union of those agents' permissions (AgentPermissionsIn): every message still
// uses one agent's own subjects and crosses the same account imports as a real agent's.
//
// Holding the credentials of N agents already lets anyone open N connections as them, so a relay
// grants nothing those credentials do not. It is still not for production: revoking an agent does
// not drop a relay carrying it (DisconnectAgent finds connections by the agent's user name), and
// one misbehaving relay speaks for many agents. The server accepts relays only with
// ServerConfig.Relays set; the hub sets it only through hub.WithAgentRelays, an option no
// configuration file, flag or environment variable of `godwit hub` reaches: only the bench's own
// hub process (the hidden `godwit bench fleet-hub`, started by `godwit bench fleet` on a fresh
// data dir) and its in-process hub use it.

// RelayUser is the NATS user name of a relay connection.
const RelayUser = "godwit-bench-relay"

// MaxRelayAgents bounds the agents one relay connection carries. Each agent needs a subscription
// of its own (its desired-state watch) within the agents' account limit of AgentMaxSubscriptions
// per connection, beside the connection's reply inbox; and all their credentials must fit in the
// CONNECT line, which nats-server bounds to 4 KiB by default (about 95 bytes an agent).
const MaxRelayAgents = 30

// relayAuthTimeout bounds the check of a relay connection (every carried agent's credentials),
// on the server and in ConnectRelay.
const relayAuthTimeout = 30 * time.Second

// RelayCredential is one carried agent's NATS credentials.
type RelayCredential struct{ AgentID, Password string }

// RelayPassword encodes the carried agents' credentials as a relay connection's password.
func RelayPassword(creds []RelayCredential) (string, error) {
	if len(creds) == 0 || len(creds) > MaxRelayAgents {
		return "", fmt.Errorf("relay: %d agents, want 1 to %d", len(creds), MaxRelayAgents)
	}
	parts := make([]string, len(creds))
	for i, c := range creds {
		if !ValidAgentID(c.AgentID) {
			return "", fmt.Errorf("relay: not an agent ID: %q", c.AgentID)
		}
		if c.Password == "" || strings.ContainsAny(c.Password, ",:") {
			return "", fmt.Errorf("relay: agent %s: the password is empty or holds ',' or ':'", c.AgentID)
		}
		parts[i] = c.AgentID + ":" + c.Password
	}
	return strings.Join(parts, ","), nil
}

// parseRelayPassword is RelayPassword undone; every agent appears once.
func parseRelayPassword(password string) ([]RelayCredential, error) {
	parts := strings.Split(password, ",")
	if len(parts) > MaxRelayAgents {
		return nil, fmt.Errorf("%w: %d agents, more than %d", errRefused, len(parts), MaxRelayAgents)
	}
	creds := make([]RelayCredential, 0, len(parts))
	seen := make(map[string]bool, len(parts))
	for _, p := range parts {
		id, pw, ok := strings.Cut(p, ":")
		if !ok || !ValidAgentID(id) || pw == "" || seen[id] {
			return nil, fmt.Errorf("%w: malformed relay credentials", errRefused)
		}
		seen[id] = true
		creds = append(creds, RelayCredential{AgentID: id, Password: pw})
	}
	return creds, nil
}

// relayPermissions checks every carried agent's credentials and returns the union of their
// permissions; any failure refuses the whole connection.
func (s *Server) relayPermissions(password string) (*server.Permissions, error) {
	creds, err := parseRelayPassword(password)
	if err != nil {
		return nil, err
	}
	perms := make([]*server.Permissions, 0, len(creds))
	for _, c := range creds {
		if err := s.verify.check(s.ctx, c.AgentID, c.Password); err != nil {
			return nil, fmt.Errorf("agent %s: %w", c.AgentID, err)
		}
		bucket, err := s.verify.failoverBucket(s.ctx, c.AgentID)
		if err != nil {
			return nil, fmt.Errorf("agent %s: %w", c.AgentID, err)
		}
		perms = append(perms, AgentPermissionsIn(c.AgentID, bucket))
	}
	return unionPermissions(perms), nil
}

// unionPermissions merges allow lists. Agent permissions have no deny lists for a valid agent,
// and every agent passed here has been checked, so the union allows exactly what one of them may.
func unionPermissions(ps []*server.Permissions) *server.Permissions {
	var pub, sub []string
	for _, p := range ps {
		pub = append(pub, p.Publish.Allow...)
		sub = append(sub, p.Subscribe.Allow...)
	}
	slices.Sort(pub)
	slices.Sort(sub)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: slices.Compact(pub)},
		Subscribe: &server.SubjectPermission{Allow: slices.Compact(sub)},
	}
}

// ConnectRelay opens one relay connection carrying the agents of creds (bench only: see above).
// The connection has one reply inbox, that of the first agent: the replies to every carried
// agent's requests arrive there, within the union of their permissions. Like ConnectAgent it
// reconnects forever; opts are applied after the defaults.
func ConnectRelay(urls []string, creds []RelayCredential, opts ...nats.Option) (*nats.Conn, error) {
	password, err := RelayPassword(creds)
	if err != nil {
		return nil, err
	}
	clean := make([]string, len(urls))
	for i, u := range urls {
		if clean[i], err = credential.StripUserinfo(u); err != nil {
			return nil, fault.Invalid("urls", "%v", err)
		}
	}
	base := []nats.Option{
		nats.UserInfo(RelayUser, password),
		nats.CustomInboxPrefix(wire.AgentInbox(creds[0].AgentID)),
		nats.Name(fmt.Sprintf("godwit-bench-relay %d agents", len(creds))),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(agentReconnectDelay),
		nats.IgnoreAuthErrorAbort(),
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.Timeout(relayAuthTimeout),
	}
	nc, err := nats.Connect(strings.Join(clean, ","), append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect relay: %w", err)
	}
	return nc, nil
}
