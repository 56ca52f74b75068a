package config

import (
	"net/url"
	"strings"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// Agent is the agent's configuration.
type Agent struct {
	// Hub is the hub's HTTP URL, used once, to enroll.
	Hub string `yaml:"hub" flag:"hub" usage:"hub URL (http://host:port), needed only to enroll"`
	// EnrollToken is used once; later starts reuse the identity in StateDir.
	EnrollToken string `yaml:"enrollToken" flag:"enroll-token" usage:"enrollment token, used once on first start"`
	StateDir    string `yaml:"stateDir" flag:"state-dir" usage:"directory for the agent identity and journal"`
	// Name defaults to the host name.
	Name string `yaml:"name" flag:"name" usage:"agent name (default: host name)"`
	// Labels are k=v pairs, set at enrollment.
	Labels []string `yaml:"labels" flag:"label" usage:"label key=value (repeatable)"`
	// HubCA is a CA certificate (PEM) to verify the hub with, for enrollment tokens that carry
	// no fingerprint; once enrolled, the agent keeps the CA it verified the hub with in StateDir.
	HubCA string `yaml:"hubCA" flag:"hub-ca" usage:"CA certificate (PEM) to verify the hub with when the enrollment token pins none"`
	// InsecurePlaintext allows http:// and nats:// without TLS to a hub that is not on loopback.
	InsecurePlaintext bool `yaml:"insecurePlaintext" flag:"insecure-plaintext" usage:"talk to a non-loopback hub without TLS (not recommended)"`
	// Policy is an AgentPolicy file: what the hub may make this node run, and as whom.
	Policy string `yaml:"policy" flag:"policy" usage:"agent policy file (kind AgentPolicy): allowed commands, user, timeout, environment, trusted signing keys"`
	Log    Log    `yaml:"log"`
}

// DefaultAgent returns the agent defaults.
func DefaultAgent() *Agent {
	return &Agent{StateDir: DefaultAgentStateDir(), Log: Log{Level: "info", Format: "auto"}}
}

// LabelMap parses Labels (key=value).
func (c *Agent) LabelMap() (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range c.Labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fault.Invalid(Describe(c, "labels"), "%q must be key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

// Validate checks the agent's settings. Hub and EnrollToken are checked only when enrollment is
// needed (see NeedEnrollment).
func (c *Agent) Validate() error {
	if c.StateDir == "" {
		return fault.Invalid(Describe(c, "stateDir"), "must not be empty")
	}
	if c.Hub != "" {
		u, err := url.Parse(c.Hub)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fault.Invalid(Describe(c, "hub"), "%q is not an http(s):// URL", c.Hub)
		}
		if u.User != nil {
			return fault.Invalid(Describe(c, "hub"), "must not carry credentials")
		}
		if u.Scheme == "http" && !IsLoopback(u.Hostname()) && !c.InsecurePlaintext {
			return fault.Invalid(Describe(c, "hub"), "%q is plaintext HTTP to a host that is not loopback: use https://, or pass --insecure-plaintext", c.Hub)
		}
	}
	if c.HubCA != "" {
		if err := checkFile(c.HubCA); err != nil {
			return fault.Invalid(Describe(c, "hubCA"), "%v", err)
		}
	}
	if c.Policy != "" {
		if err := checkFile(c.Policy); err != nil {
			return fault.Invalid(Describe(c, "policy"), "%v", err)
		}
	}
	if _, err := c.LabelMap(); err != nil {
		return err
	}
	return c.Log.validate(c)
}

// NeedEnrollment validates what a first start needs.
func (c *Agent) NeedEnrollment() error {
	if c.Hub == "" {
		return fault.Invalid(Describe(c, "hub"), "is required to enroll (this state dir holds no identity yet)")
	}
	if c.EnrollToken == "" {
		return fault.Invalid(Describe(c, "enrollToken"), "is required to enroll (this state dir holds no identity yet)")
	}
	// The hub's rules for what an agent enrolls with (wire.EnrollRequest.Validate), checked here
	// first. Only for an enrollment: name and labels are fixed then, so an agent enrolled under an
	// older, looser rule keeps starting with the settings it was enrolled with.
	if c.Name != "" {
		if err := wire.CheckAgentName(c.Name); err != nil {
			return fault.Invalid(Describe(c, "name"), "%v", err)
		}
	}
	labels, err := c.LabelMap()
	if err != nil {
		return err
	}
	if err := wire.CheckLabels(labels); err != nil {
		return fault.Invalid(Describe(c, "labels"), "%v", err)
	}
	return nil
}
