package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names the external cluster's configuration gives the hub's two users and the system account
// (docs/security.md).
const (
	ClusterHubUser     = "godwit-hub"
	ClusterSystemUser  = "godwit-sys"
	ClusterSystemAcct  = "SYS"
	clusterAuthTimeout = 5 // seconds; longer than DefaultAuthLookupTimeout
)

// ClusterParams fills the placeholders of ClusterConfig.
type ClusterParams struct {
	Issuer, XKey                string // the hub's callout keys (CalloutKeys.Issuer, XKey)
	HubPassword, SystemPassword string // as nats-server takes them: plain or a bcrypt hash
}

// Placeholders of the block in docs/security.md.
var ClusterPlaceholders = ClusterParams{
	Issuer: "<ISSUER>", XKey: "<XKEY>", HubPassword: "<HUB_PASSWORD>", SystemPassword: "<SYSTEM_PASSWORD>",
}

// ClusterConfig is the part of an external cluster's nats-server configuration Godwit needs, ready
// to paste into every server of the cluster: the hub's account with JetStream and the exports,
// the agents' account with the matching imports and the limits of one agent connection, a system account with the hub's system user
// (for revocation), and the auth callout that sends every unknown user — every agent — to the
// hub. docs/security.md shows it with ClusterPlaceholders; the hub writes it with its own keys
// into its data dir.
func ClusterConfig(p ClusterParams) string {
	exp, imp := accountLinks("      ")
	return strings.TrimLeft(fmt.Sprintf(`
accounts {
  %[1]s {
    jetstream: enabled
    users: [
      {user: %[3]s, password: "%[4]s"}
    ]
    exports: [
%[5]s    ]
  }
  %[2]s {
    limits: {max_subscriptions: %[13]d, max_payload: %[14]d}
    imports: [
%[6]s    ]
  }
  %[7]s {
    users: [
      {user: %[8]s, password: "%[9]s"}
    ]
  }
}
system_account: %[7]s
authorization {
  timeout: %[10]d
  auth_callout {
    issuer: %[11]s
    xkey: %[12]s
    account: %[1]s
    auth_users: [%[3]s, %[8]s]
    allowed_accounts: [%[2]s]
  }
}
`, AccountHub, AccountAgents, ClusterHubUser, p.HubPassword, exp, imp,
		ClusterSystemAcct, ClusterSystemUser, p.SystemPassword, clusterAuthTimeout, p.Issuer, p.XKey,
		AgentMaxSubscriptions, AgentMaxPayload), "\n")
}

// MoveStreamLeader asks JetStream to hand the raft leadership of a replicated stream to the
// server named server when another of the stream's servers holds it (a preferred leader
// stepdown, nats-server 2.11+), and returns the server that led the stream when it looked. A
// stream with one replica, a server outside the stream's peer set or not current, or a leader
// already there is left alone.
//
// The hub's leader keeps the lease bucket's stream led by the server it is connected to: the
// loss of any other server then costs the lease nothing, where a lost stream leader would make
// every renew fail for NATS's election time (4–9 s), long enough to end the term (docs/ha.md).
func MoveStreamLeader(ctx context.Context, js jetstream.JetStream, nc *nats.Conn, stream, server string) (string, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	cl := info.Cluster
	if cl == nil || server == "" || cl.Leader == "" || cl.Leader == server {
		return leaderOf(cl), nil
	}
	member := false
	for _, p := range cl.Replicas {
		if p.Name == server && p.Current {
			member = true
		}
	}
	if !member {
		return cl.Leader, nil
	}
	req, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": server}})
	if err != nil {
		return cl.Leader, err
	}
	msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, req)
	if err != nil {
		return cl.Leader, fmt.Errorf("stream %s: leader stepdown: %w", stream, err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return cl.Leader, fmt.Errorf("stream %s: leader stepdown: %w", stream, err)
	}
	if resp.Error != nil {
		return cl.Leader, fmt.Errorf("stream %s: leader stepdown: %s (%d)", stream, resp.Error.Description, resp.Error.Code)
	}
	return cl.Leader, nil
}

func leaderOf(cl *jetstream.ClusterInfo) string {
	if cl == nil {
		return ""
	}
	return cl.Leader
}
