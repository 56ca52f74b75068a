package bench

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// eventKind is one entry of the event mix: what agents report during migrations, most of it
// progress, some of it failures.
type eventKind struct {
	typ, severity, phase, message string
	weight                        int // out of 100
	exit                          int
	withTail                      bool
}

var eventMix = []eventKind{
	{wire.EventDetectionSucceeded, wire.SeverityInfo, "detect", "step %d (%s) is needed", 25, 0, true},
	{wire.EventMigrationStepStarted, wire.SeverityInfo, "run", "run command of step %d (%s) started", 30, 0, false},
	{wire.EventVerificationSucceeded, wire.SeverityInfo, "verify", "step %d (%s) verified", 15, 0, true},
	{wire.EventExecutionSucceeded, wire.SeverityInfo, "", "applied 3 of 3 steps: 0 (backup), 1 (write), 2 (reload)", 15, 0, false},
	{wire.EventExecutionFailed, wire.SeverityError, "run", "failed: the run command of step %d (%s) did not succeed", 4, 28, true},
	{wire.EventExecutionPartial, wire.SeverityError, "run", "failed: the run command of step %d (%s) did not succeed", 2, 1, true},
	{wire.EventMigrationStepCancelled, wire.SeverityWarning, "run", "attempt 1 of step %d (%s) superseded by attempt 2", 3, 0, false},
	{wire.EventRollbackSucceeded, wire.SeverityInfo, "", "rolled back: 1 (write), 0 (backup)", 3, 0, false},
	{wire.EventAgentStarted, wire.SeverityInfo, "", "agent bench started, version dev", 3, 0, false},
}

var (
	stepNames      = []string{"backup", "write-config", "reload"}
	migrationNames = []string{"config-v2", "tls-1-3"}
)

// outputTail is about 200 bytes of a command's output, as runners report it.
const outputTail = "--- stderr ---\nwrite /etc/service/config.yaml: no space left on device\n" +
	"--- stdout ---\nbacking up /etc/service/config.yaml to backup/config.v1\nwriting version=2 (42 lines)\nreloading service: ok\n"

// eventSource makes realistic agent events, deterministically mixed by index.
type eventSource struct {
	agents []string
	kinds  []eventKind // 100 entries, by weight
	sys    wire.SystemInfo
}

func newEventSource(agents []string) *eventSource {
	s := &eventSource{agents: agents, sys: wire.SystemInfo{OS: "linux", Arch: "amd64", Kernel: "6.1.0-18-amd64",
		Hostname: "node-0042.dc1.example.net", AgentVersion: "v0.9.0", FreeDiskBytes: 48_318_382_080}}
	for _, k := range eventMix {
		for range k.weight {
			s.kinds = append(s.kinds, k)
		}
	}
	if len(s.kinds) != 100 {
		panic(fmt.Sprintf("bench: event mix weighs %d, want 100", len(s.kinds)))
	}
	return s
}

// event returns the i-th event and the agent that publishes it.
func (s *eventSource) event(i int) (agent string, e wire.Event) {
	n := i % len(s.agents)
	agent = s.agents[n]
	k := s.kinds[(i*37)%100] // spread kinds evenly over agents
	step := i % len(stepNames)
	// Each agent works on one migration, half the fleet on each of two.
	data := wire.EventData{AgentID: agent, Migration: migrationNames[n%len(migrationNames)], Attempt: 1,
		FromVersion: "1", ToVersion: "2", System: &s.sys}
	msg := k.message
	if strings.Contains(msg, "%d") {
		msg = fmt.Sprintf(msg, step, stepNames[step])
	}
	data.Message = msg
	extra := map[string]any{"generation": 1, "action": wire.ActionApply, "state": "applying"}
	if k.phase != "" {
		data.Step = stepNames[step]
		extra["phase"], extra["step_index"] = k.phase, step
	}
	if k.withTail {
		code := k.exit
		data.ExitCode, data.OutputTail, data.DurationMS = &code, outputTail, int64(40+i%900)
	}
	if k.severity == wire.SeverityError {
		data.Error = fmt.Sprintf("run command of step %d (%s) exited with code %d: write /etc/service/config.yaml: no space left on device",
			step, stepNames[step], k.exit)
	}
	if k.typ == wire.EventAgentStarted {
		data.Migration, data.Attempt, data.FromVersion, data.ToVersion, extra = "", 0, "", "", nil
	}
	if extra != nil {
		data.Extra, _ = json.Marshal(extra)
	}
	e = wire.Event{SpecVersion: "1.0", ID: uuid.Must(uuid.NewV7()).String(), Source: wire.AgentSource(agent), Type: k.typ,
		Time: time.Now().UTC(), Severity: k.severity, Data: data}
	if data.Migration != "" {
		e.Subject = "migration/" + data.Migration
	}
	return agent, e
}

// published is one encoded event ready to go on the wire.
type published struct {
	agent, id string
	payload   []byte
}

// encode makes n encoded events.
func (s *eventSource) encode(n int) ([]published, int, error) {
	out := make([]published, n)
	bytes := 0
	for i := range out {
		agent, e := s.event(i)
		b, err := json.Marshal(e)
		if err != nil {
			return nil, 0, err
		}
		out[i] = published{agent: agent, id: e.ID, payload: b}
		bytes += len(b)
	}
	return out, bytes, nil
}

// stored makes n events as the ingest hands them to the store.
func (s *eventSource) stored(n int) ([]store.StoredEvent, error) {
	out := make([]store.StoredEvent, n)
	for i := range out {
		_, e := s.event(i)
		b, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		out[i] = store.StoredEvent{Event: e, Raw: b, ReceivedAt: time.Now().UTC()}
	}
	return out, nil
}

// agentIDs returns n canonical agent ids.
func agentIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7()).String()
	}
	return ids
}
