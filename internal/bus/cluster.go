package bus

import (
	"fmt"
	"strings"
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
