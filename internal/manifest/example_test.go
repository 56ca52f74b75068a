package manifest_test

import (
	"fmt"
	"time"

	"godwit.dev/godwit/internal/manifest"
)

// A kind declares its fields and its rules; the manifest package does the rest. This one is a
// cut-down failover group.
type group struct {
	APIVersion, Kind string
	Metadata         manifest.Metadata
	Members          manifest.LabelSelector
	HeartbeatTimeout time.Duration
	FailureThreshold int
	FailoverTimeout  time.Duration
	OnFence          hook

	lines manifest.Lines
}

type hook struct {
	Command string
	Timeout time.Duration
}

var groupKind = manifest.Kind{Name: "FailoverGroup", MaxBytes: 64 << 10}

func parseGroup(data []byte) (*group, error) {
	g := &group{HeartbeatTimeout: 5 * time.Second, FailureThreshold: 3} // defaults, before decoding
	lines, err := groupKind.Decode(data, &g.Metadata,
		manifest.Selector("members", &g.Members),
		manifest.Duration("heartbeatTimeout", &g.HeartbeatTimeout),
		manifest.Int("failureThreshold", &g.FailureThreshold),
		manifest.Duration("failoverTimeout", &g.FailoverTimeout),
		manifest.Object("onFence", manifest.String("command", &g.OnFence.Command), manifest.Duration("timeout", &g.OnFence.Timeout)),
	)
	if err != nil {
		return nil, err
	}
	g.APIVersion, g.Kind, g.lines = manifest.APIVersion, groupKind.Name, lines
	return g, nil
}

func (g *group) validate() error {
	r := manifest.Report{Lines: g.lines}
	r.Header(groupKind.Name, g.APIVersion, g.Kind, g.Metadata)
	r.Selector("spec.members", g.Members)
	if floor := g.HeartbeatTimeout * time.Duration(g.FailureThreshold); g.FailoverTimeout <= floor {
		r.Fail("spec.failoverTimeout", "must be longer than heartbeatTimeout × failureThreshold (%s)", manifest.FormatDuration(floor))
	}
	if g.OnFence.Timeout <= 0 {
		r.Fail("spec.onFence.timeout", "is required: a hook that hangs is killed at its timeout")
	}
	return r.Err()
}

func Example_kind() {
	_, err := parseGroup([]byte(`apiVersion: godwit.dev/v1
kind: FailoverGroup
metadata: {name: pg}
spec:
  members: {matchLabels: {role: db}}
  heartbeatTimeout: soon
  onFence: {command: pg_ctl stop, timout: 10s}
`))
	fmt.Println(err)

	g, err := parseGroup([]byte(`apiVersion: godwit.dev/v1
kind: FailoverGroup
metadata: {name: pg}
spec:
  members: {matchLabels: {role: db}}
  failoverTimeout: 10s
  onFence:
    command: pg_ctl stop
`))
	if err != nil {
		panic(err)
	}
	fmt.Println(g.validate())
	// Output:
	// spec.heartbeatTimeout (line 6): "soon" is not a duration (write e.g. 30s, 5m, 4h or 7d)
	// spec.onFence.timout (line 7): unknown field "timout" (allowed here: command, timeout)
	// spec.failoverTimeout (line 6): must be longer than heartbeatTimeout × failureThreshold (15s)
	// spec.onFence.timeout (line 7): is required: a hook that hangs is killed at its timeout
}
