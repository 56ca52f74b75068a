package config

import (
	"net/url"
	"strings"

	"godwit.dev/godwit/internal/fault"
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
	Log    Log      `yaml:"log"`
}

// DefaultAgent returns the agent defaults.
func DefaultAgent() *Agent {
	return &Agent{StateDir: DefaultAgentStateDir(), Log: Log{Level: "info", Format: "auto"}}
}

// LabelMap parses Labels.
func (c *Agent) LabelMap() (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range c.Labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !validLabelKey(k) {
			return nil, fault.Invalid(Describe(c, "labels"), "%q must be key=value with a key of letters, digits, '.', '-', '_', '/'", kv)
		}
		out[k] = v
	}
	return out, nil
}

func validLabelKey(k string) bool {
	if k == "" || len(k) > 63 {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/", r)) {
			return false
		}
	}
	return true
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
	return nil
}
