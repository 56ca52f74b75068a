package wire

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

const (
	agentA = "01960000-0000-7000-8000-00000000000a"
	agentB = "01960000-0000-7000-8000-00000000000b"
)

func validEvent() Event {
	return NewEvent(AgentSource(agentA), EventExecutionFailed, SeverityError, EventData{AgentID: agentA, Error: "disk full"})
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name  string
		tweak func(*Event)
		subj  string
		want  string // empty: valid
	}{
		{"ok", func(*Event) {}, agentA, ""},
		{"no id", func(e *Event) { e.ID = "" }, agentA, "no id"},
		{"bad id", func(e *Event) { e.ID = "42" }, agentA, "not a UUID"},
		{"no source", func(e *Event) { e.Source = "" }, agentA, "no source"},
		{"unknown type", func(e *Event) { e.Type = "migration.exploded" }, agentA, "unknown type"},
		{"bad severity", func(e *Event) { e.Severity = "fatal" }, agentA, "severity"},
		{"no time", func(e *Event) { e.Time = time.Time{} }, agentA, "no time"},
		{"forged source", func(*Event) {}, agentB, "forged source"},
		{"forged data agent", func(e *Event) { e.Data.AgentID = agentB }, agentA, "forged data.agent_id"},
		{"agent source on hub subject", func(*Event) {}, "", "hub subject"},
		{"hub event", func(e *Event) { e.Source = HubSource("h1"); e.Data.AgentID = "" }, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := validEvent()
			tc.tweak(&e)
			err := e.Validate(tc.subj)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

func TestNewEventIDsAreTimeOrdered(t *testing.T) {
	a, b := validEvent(), validEvent()
	if a.ID == b.ID || a.ID > b.ID {
		t.Fatalf("UUIDv7 ids not increasing: %s then %s", a.ID, b.ID)
	}
}

// FuzzEventDecode: any bytes either fail to decode or yield an event whose validation does not
// panic, that encoding/json reads back the same from the same bytes (the store keeps the bytes
// and reads them with encoding/json), and whose accepted form round-trips.
func FuzzEventDecode(f *testing.F) {
	good, _ := json.Marshal(validEvent())
	f.Add(good, agentA)
	f.Add([]byte(`{"id":""}`), agentA)
	f.Add([]byte(`not json`), "")
	f.Add([]byte(`{"ID":"a","id":"b","Data":{"agent_id":"x"}}`), "")
	f.Fuzz(func(t *testing.T, raw []byte, subj string) {
		e, err := DecodeEvent(raw)
		if err != nil {
			return
		}
		var v1 Event
		if err := json.Unmarshal(raw, &v1); err != nil {
			t.Fatalf("DecodeEvent accepted what encoding/json refuses: %v", err)
		}
		a, _ := json.Marshal(e)
		b, _ := json.Marshal(v1)
		if string(a) != string(b) {
			t.Fatalf("DecodeEvent and encoding/json disagree:\n%s\n%s", a, b)
		}
		if e.Validate(subj) != nil {
			return
		}
		again, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("valid event does not re-encode: %v", err)
		}
		e2, err := DecodeEvent(again)
		if err != nil || e2.ID != e.ID || e2.Validate(subj) != nil {
			t.Fatalf("round trip changed a valid event: %v", err)
		}
	})
}

func TestDecodeEvent(t *testing.T) {
	good, _ := json.Marshal(validEvent())
	cases := []struct {
		name, raw, wantErr string
		check              func(Event) bool
	}{
		{"valid", string(good), "", func(e Event) bool { return e.Validate(agentA) == nil }},
		{"names match regardless of case, as encoding/json", `{"ID":"x","Data":{"Agent_ID":"a"}}`, "",
			func(e Event) bool { return e.ID == "x" && e.Data.AgentID == "a" }},
		{"last duplicate wins, as encoding/json", `{"id":"x","id":"y"}`, "", func(e Event) bool { return e.ID == "y" }},
		{"invalid UTF-8 refused", "{\"id\":\"\xff\"}", "UTF-8", nil},
		{"wrong type", `{"id":"x","data":{"attempt":"one"}}`, "attempt", nil},
		{"trailing data", `{"id":"x"} {}`, "", nil},
		{"not JSON", `id=x`, "invalid", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := DecodeEvent([]byte(c.raw))
			if c.check != nil {
				if err != nil || !c.check(e) {
					t.Fatalf("DecodeEvent(%s) = %+v, %v", c.raw, e, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("DecodeEvent(%q) error = %v, want one mentioning %q", c.raw, err, c.wantErr)
			}
		})
	}
}

// Every known type is either an agent's or the hub's, never both; operator.* and hub.* are the
// hub's whatever else changes.
func TestEventTypesHaveOneProducer(t *testing.T) {
	for typ := range KnownEventTypes {
		if AgentEventTypes[typ] == HubEventTypes[typ] {
			t.Errorf("event type %q: agent %v, hub %v; want exactly one", typ, AgentEventTypes[typ], HubEventTypes[typ])
		}
	}
	for _, set := range []map[string]bool{AgentEventTypes, HubEventTypes} {
		for typ := range set {
			if !KnownEventTypes[typ] {
				t.Errorf("event type %q is classified but not known", typ)
			}
		}
	}
	for typ := range AgentEventTypes {
		if strings.HasPrefix(typ, "operator.") || strings.HasPrefix(typ, "hub.") {
			t.Errorf("agents may publish %q", typ)
		}
	}
}

// An agent publishing a hub-only type is refused with ErrHubOnlyType; the hub may.
func TestValidateRefusesHubOnlyTypesFromAgents(t *testing.T) {
	for typ := range HubEventTypes {
		e := validEvent()
		e.Type = typ
		err := e.Validate(agentA)
		if !errors.Is(err, ErrHubOnlyType) || !strings.Contains(err.Error(), typ) {
			t.Errorf("agent event of type %q: %v, want ErrHubOnlyType naming the type", typ, err)
		}
		e.Source, e.Data.AgentID = HubSource("h1"), ""
		if err := e.Validate(""); err != nil {
			t.Errorf("hub event of type %q: %v", typ, err)
		}
	}
	for typ := range AgentEventTypes {
		e := validEvent()
		e.Type = typ
		if err := e.Validate(agentA); err != nil {
			t.Errorf("agent event of type %q: %v", typ, err)
		}
	}
}
