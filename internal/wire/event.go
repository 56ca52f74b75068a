package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Severities, in increasing order.
const (
	SeverityInfo    = "info"
	SeverityWarning = "warning"
	SeverityError   = "error"
)

// Event types. Producers may send only these; anything else is dead-lettered by the ingest.
const (
	EventAgentStarted           = "agent.started"
	EventAgentOutboxFull        = "agent.outbox_full"
	EventDetectionSucceeded     = "migration.detection.succeeded"
	EventDetectionFailed        = "migration.detection.failed"
	EventDetectionNotNeeded     = "migration.detection.not_needed"
	EventExecutionSucceeded     = "migration.execution.succeeded"
	EventExecutionFailed        = "migration.execution.failed"
	EventExecutionPartial       = "migration.execution.partial"
	EventVerificationSucceeded  = "migration.verification.succeeded"
	EventVerificationFailed     = "migration.verification.failed"
	EventRollbackSucceeded      = "migration.rollback.succeeded"
	EventRollbackFailed         = "migration.rollback.failed"
	EventSweepProgress          = "sweep.progress"
	EventFailoverTransition     = "failover.transition"
	EventOperatorAction         = "operator.action"
	EventMigrationStateChanged  = "migration.state_changed"
	EventAssignmentReconciled   = "migration.assignment.reconciled"
	EventAgentEnrolled          = "agent.enrolled"
	EventAgentRevoked           = "agent.revoked"
	EventAgentStatusChanged     = "agent.status_changed"
	EventSweepCheckResult       = "sweep.check.result"
	EventFailoverHookFailed     = "failover.hook.failed"
	EventMigrationStepStarted   = "migration.step.started"
	EventMigrationStepCancelled = "migration.step.cancelled"
	// A command of a step outlived the agent that ran it (found by the restarted agent, which
	// waits for it or stops it before anything of the step runs or is judged), and how it ended.
	EventMigrationStepOrphaned     = "migration.step.orphaned"
	EventMigrationStepOrphanExited = "migration.step.orphan_exited"
	EventMigrationStepOrphanKilled = "migration.step.orphan_killed"
	// The agent's policy refused a command (docs/security.md, "Agent policy"): nothing of it
	// ran, and the assignment failed (or its rollback did) with the rule in the error.
	EventPolicyRefused = "migration.policy.refused"
	// The agent's policy refused a hook of its failover group (docs/failover.md): the agent does
	// not run the group's member, so it never promotes.
	EventFailoverPolicyRefused = "failover.policy.refused"
	EventControllerResumed     = "hub.controller.resumed"
	EventCheckFinding          = "hub.check.finding"
)

// KnownEventTypes is the closed set of event types the hub stores.
var KnownEventTypes = map[string]bool{
	EventAgentStarted: true, EventAgentOutboxFull: true, EventDetectionSucceeded: true, EventDetectionFailed: true,
	EventDetectionNotNeeded: true, EventExecutionSucceeded: true, EventExecutionFailed: true, EventExecutionPartial: true,
	EventVerificationSucceeded: true, EventVerificationFailed: true, EventRollbackSucceeded: true, EventRollbackFailed: true,
	EventSweepProgress: true, EventFailoverTransition: true, EventOperatorAction: true, EventMigrationStateChanged: true,
	EventAssignmentReconciled: true, EventAgentEnrolled: true, EventAgentRevoked: true, EventSweepCheckResult: true,
	EventFailoverHookFailed: true, EventMigrationStepStarted: true, EventMigrationStepCancelled: true,
	EventMigrationStepOrphaned: true, EventMigrationStepOrphanExited: true, EventMigrationStepOrphanKilled: true,
	EventControllerResumed: true, EventCheckFinding: true, EventAgentStatusChanged: true, EventPolicyRefused: true,
	EventFailoverPolicyRefused: true,
}

// AgentEventTypes are the types an agent may publish on its own subject. Every other known
// type is the hub's own (HubEventTypes): an agent publishing one would speak for an operator or
// the hub, so it is refused (ErrHubOnlyType). A new type belongs to exactly one of the two sets
// (a test checks it).
var AgentEventTypes = map[string]bool{
	EventAgentStarted: true, EventAgentOutboxFull: true,
	EventDetectionSucceeded: true, EventDetectionFailed: true, EventDetectionNotNeeded: true,
	EventExecutionSucceeded: true, EventExecutionFailed: true, EventExecutionPartial: true,
	EventVerificationSucceeded: true, EventVerificationFailed: true,
	EventRollbackSucceeded: true, EventRollbackFailed: true,
	EventMigrationStepStarted: true, EventMigrationStepCancelled: true,
	EventMigrationStepOrphaned: true, EventMigrationStepOrphanExited: true, EventMigrationStepOrphanKilled: true,
	EventPolicyRefused:      true,
	EventSweepCheckResult:   true,
	EventFailoverTransition: true, EventFailoverHookFailed: true, EventFailoverPolicyRefused: true,
}

// HubEventTypes are the types only a hub emits: operator actions, the controllers' state changes
// and findings, enrollment and revocation, sweep progress, and everything under hub.* and
// operator.*.
var HubEventTypes = map[string]bool{
	EventOperatorAction: true, EventMigrationStateChanged: true, EventAssignmentReconciled: true,
	EventAgentEnrolled: true, EventAgentRevoked: true, EventSweepProgress: true,
	EventControllerResumed: true, EventCheckFinding: true, EventAgentStatusChanged: true,
}

// ErrHubOnlyType is wrapped by Validate's error for an agent's event of a hub-only type.
var ErrHubOnlyType = errors.New("hub-only event type")

// MaxEventBytes bounds one encoded event; larger ones are dead-lettered. Output tails are
// bounded well below it by producers.
const MaxEventBytes = 64 << 10

// Event is the CloudEvents-style envelope of everything that happens in the fleet.
type Event struct {
	SpecVersion string    `json:"specversion"`
	ID          string    `json:"id"`     // UUIDv7, assigned by the producer
	Source      string    `json:"source"` // /agents/<id> or /hub/<id>
	Type        string    `json:"type"`
	Time        time.Time `json:"time"`
	Subject     string    `json:"subject,omitempty"` // what it is about, e.g. "migration/m1/step/2"
	Severity    string    `json:"severity"`
	Data        EventData `json:"data"`
}

// EventRecord is an event as the hub recorded it: the envelope as its producer sent it and when
// the hub received it (GET /api/v1/events).
type EventRecord struct {
	Event
	ReceivedAt time.Time `json:"received_at"`
	// AgentTime is the time an agent gave the event when it was further ahead of the hub's
	// receipt than the allowed clock skew; Time is then the receipt time. Absent otherwise.
	AgentTime *time.Time `json:"agent_time,omitempty"`
}

// EventData is the Godwit payload of an event. Fields that do not apply stay empty.
type EventData struct {
	AgentID     string          `json:"agent_id,omitempty"`
	Migration   string          `json:"migration,omitempty"`
	Step        string          `json:"step,omitempty"`
	Attempt     int             `json:"attempt,omitempty"`
	Message     string          `json:"message,omitempty"`
	Error       string          `json:"error,omitempty"`
	ExitCode    *int            `json:"exit_code,omitempty"`
	OutputTail  string          `json:"output_tail,omitempty"`
	DurationMS  int64           `json:"duration_ms,omitempty"`
	FromVersion string          `json:"from_version,omitempty"`
	ToVersion   string          `json:"to_version,omitempty"`
	System      *SystemInfo     `json:"system,omitempty"`
	Extra       json.RawMessage `json:"extra,omitempty"` // type-specific fields (sweep counts, failover roles…)
}

// AgentSource is the source of events an agent produces.
func AgentSource(agentID string) string { return agentSourcePrefix + agentID }

const agentSourcePrefix = "/agents/"

// HubSource is the source of events a hub produces.
func HubSource(hubID string) string { return "/hub/" + hubID }

// NewEvent returns an event with a fresh UUIDv7 id, the current time and specversion set.
func NewEvent(source, typ, severity string, data EventData) Event {
	return Event{SpecVersion: "1.0", ID: uuid.Must(uuid.NewV7()).String(), Source: source, Type: typ,
		Time: time.Now().UTC(), Severity: severity, Data: data}
}

// Validate checks an event as received on subjectAgent's subject (empty for hub-published
// events). It returns a reason fit for a dead-letter record.
func (e *Event) Validate(subjectAgent string) error {
	switch {
	case e.ID == "":
		return fmt.Errorf("event has no id")
	case !isUUID(e.ID):
		return fmt.Errorf("event id %q is not a UUID", e.ID)
	case e.Source == "":
		return fmt.Errorf("event %s has no source", e.ID)
	case !KnownEventTypes[e.Type]:
		return fmt.Errorf("event %s has unknown type %q", e.ID, e.Type)
	case e.Time.IsZero():
		return fmt.Errorf("event %s has no time", e.ID)
	}
	switch e.Severity {
	case SeverityInfo, SeverityWarning, SeverityError:
	default:
		return fmt.Errorf("event %s has unknown severity %q", e.ID, e.Severity)
	}
	if subjectAgent != "" {
		// An agent may speak only for itself: its credentials let it publish only on its own
		// subject, so the subject is the authenticated identity.
		if !AgentEventTypes[e.Type] {
			return fmt.Errorf("event %s: type %q is emitted only by the hub, not by agent %s: %w", e.ID, e.Type, subjectAgent, ErrHubOnlyType)
		}
		if src, ok := strings.CutPrefix(e.Source, agentSourcePrefix); !ok || src != subjectAgent {
			return fmt.Errorf("event %s: forged source %q on agent %s's subject", e.ID, e.Source, subjectAgent)
		}
		if e.Data.AgentID != "" && e.Data.AgentID != subjectAgent {
			return fmt.Errorf("event %s: forged data.agent_id %q on agent %s's subject", e.ID, e.Data.AgentID, subjectAgent)
		}
	} else if !strings.HasPrefix(e.Source, "/hub/") {
		return fmt.Errorf("event %s: source %q on the hub subject", e.ID, e.Source)
	}
	return nil
}

func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

// SeverityRank orders severities for filtering (info < warning < error); unknown is -1.
func SeverityRank(s string) int {
	switch s {
	case SeverityInfo:
		return 0
	case SeverityWarning:
		return 1
	case SeverityError:
		return 2
	}
	return -1
}
