package wire

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"
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

// decodeEventReference is a general decoder with nearly DecodeEvent's rules: encoding/json's,
// with invalid UTF-8 refused (go-json-experiment/json with the v1 options). It differs from
// encoding/json in one more way: it unescapes a time before parsing it, where encoding/json
// hands the time as written to time.Time.UnmarshalJSON, which refuses any escape. DecodeEvent
// accepts exactly what both accept, with the same result.
func decodeEventReference(data []byte) (Event, error) {
	var e Event
	err := jsonv2.Unmarshal(data, &e, jsonv2.JoinOptions(jsonv1.DefaultOptionsV1(), jsontext.AllowInvalidUTF8(false)))
	return e, err
}

// eventDecodeSeeds are bodies that reach the corners of encoding/json's rules.
var eventDecodeSeeds = []string{
	`{"id":""}`, `not json`, `{"ID":"a","id":"b","Data":{"agent_id":"x"}}`, `null`, ` null `, `null x`, "null\x00", `[]`, `"x"`, `12`, ``, ` `,
	`{"id":"\ud800"}`, `{"id":"\ud800\udc00"}`, `{"id":"\udc00\ud800"}`, `{"id":"\ud800\u0041"}`, `{"id":"a\u0000b\n\/\"\\"}`,
	`{"x":"\ud800"}`, `{"data":{"extra":"\ud800"}}`, `{"id":"\uZZZZ"}`, `{"id":"\q"}`, "{\"id\":\"a\tb\"}", "{\"id\":\"\xff\"}",
	"{\"id\":\"\xed\xa0\x80\"}", "{\"x\":[\"\xc3\"]}", `{"id":"é✓😀"}`,
	`{"data":{"system":{"os":"a"},"system":{"arch":"b"}}}`, `{"data":{"system":{"os":"a"},"system":null}}`, `{"data":{"system":[]}}`,
	`{"data":{"extra":null}}`, `{"data":{"extra": [1, {"a":[true,false,null]}, -0.5e+3] }}`, `{"data":{"extra":{"a":1},"extra":2}}`,
	`{"data":{"exit_code":null}}`, `{"data":{"exit_code":1,"exit_code":null}}`, `{"data":{"exit_code":-2147483649}}`,
	`{"time":null}`, `{"time":"2024-01-01T00:00:00Z","time":null}`, `{"time":"2024-01-01T00:00:00.123456789+02:00"}`, `{"time":"2024-01-01"}`,
	`{"time":12}`, `{"time":{}}`, `{"time":"2024-01-01T00:00:00\u005a"}`,
	`{"data":{"attempt":1.0}}`, `{"data":{"attempt":-0}}`, `{"data":{"attempt":1e2}}`, `{"data":{"attempt":01}}`, `{"data":{"attempt":-}}`,
	`{"data":{"attempt":9223372036854775807}}`, `{"data":{"attempt":9223372036854775808}}`, `{"data":{"attempt":-9223372036854775808}}`,
	`{"data":{"attempt":-9223372036854775809}}`, `{"data":{"attempt":99999999999999999999}}`, `{"data":{"attempt":"1"}}`, `{"data":{"attempt":true}}`,
	`{"data":{"duration_ms":1,"Duration_MS":null}}`, `{"data":{"system":{"free_disk_bytes":18446744073709551615}}}`,
	`{"data":{"system":{"free_disk_bytes":18446744073709551616}}}`, `{"data":{"system":{"free_disk_bytes":-0}}}`,
	`{"data":null}`, `{"data":[]}`, `{"data":"x"}`, `{"id":1}`, `{"id":true}`, `{"id":{}}`, `{"ſource":"x"}`, `{"\u0069d":"x"}`,
	`{"id":null,"id":"q"}`, `{"id":"a",}`, `{"id":"a" "source":"b"}`, `{"id" "a"}`, `{id:"a"}`, `{"id":"a"`, `{"id":"a}`, `{"x":[1,]}`,
	`{"x":[1 2]}`, `{"x":tru}`, `{"x":nul}`, `{"x":-01}`, `{"x":1.}`, `{"x":1e}`, `{"x":.5}`, `{"x":+1}`,
}

// FuzzEventDecode: any bytes either fail to decode or yield an event whose validation does not
// panic, that encoding/json reads back the same from the same bytes (the store keeps the bytes
// and reads them with encoding/json), and whose accepted form round-trips. DecodeEvent accepts
// what both encoding/json and decodeEventReference accept, and nothing else.
func FuzzEventDecode(f *testing.F) {
	good, _ := json.Marshal(validEvent())
	f.Add(good, agentA)
	for _, s := range eventDecodeSeeds {
		f.Add([]byte(s), "")
	}
	f.Fuzz(func(t *testing.T, raw []byte, subj string) {
		e, err := DecodeEvent(raw)
		ref, refErr := decodeEventReference(raw)
		var v1 Event
		v1Err := json.Unmarshal(raw, &v1)
		if (err == nil) != (refErr == nil && v1Err == nil) {
			t.Fatalf("DecodeEvent(%q) error = %v; the reference decoder's %v, encoding/json's %v", raw, err, refErr, v1Err)
		}
		if err != nil {
			return
		}
		a, _ := json.Marshal(e)
		b, _ := json.Marshal(v1)
		c, _ := json.Marshal(ref)
		if string(a) != string(b) || string(a) != string(c) {
			t.Fatalf("DecodeEvent, encoding/json and the reference decoder disagree on %q:\n%s\n%s\n%s", raw, a, b, c)
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

// Nesting is bounded as encoding/json bounds it: 10,000 levels, the event's own object counted.
func TestDecodeEventDepth(t *testing.T) {
	for _, levels := range []int{9997, 9998, 20000} {
		raw := `{"data":{"extra":` + strings.Repeat("[", levels) + strings.Repeat("]", levels) + `}}`
		_, err := DecodeEvent([]byte(raw))
		_, refErr := decodeEventReference([]byte(raw))
		var v1 Event
		v1Err := json.Unmarshal([]byte(raw), &v1)
		if (err == nil) != (refErr == nil) || (err == nil) != (v1Err == nil) {
			t.Fatalf("%d levels: DecodeEvent %v, reference %v, encoding/json %v", levels+2, err, refErr, v1Err)
		}
		if want := levels+2 <= 10000; (err == nil) != want {
			t.Fatalf("%d levels: DecodeEvent %v", levels+2, err)
		}
	}
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
