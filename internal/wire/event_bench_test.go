package wire

import (
	"encoding/json"
	"strings"
	"testing"
)

// benchEvent is an execution failure as runners report it: about 1 KB encoded.
func benchEvent(b *testing.B) []byte {
	e := validEvent()
	code := 28
	e.Type, e.Severity = EventExecutionFailed, SeverityError
	e.Data.Migration, e.Data.Step, e.Data.Attempt, e.Data.ExitCode = "config-v2", "write-config", 1, &code
	e.Data.Message = "failed: the run command of step 1 (write-config) did not succeed"
	e.Data.Error = "run command of step 1 (write-config) exited with code 28: no space left on device"
	e.Data.OutputTail = strings.Repeat("writing /etc/service/config.yaml: no space left on device\n", 4)
	e.Data.System = &SystemInfo{OS: "linux", Arch: "amd64", Kernel: "6.1.0-18-amd64", Hostname: "node-0042.dc1.example.net",
		AgentVersion: "v0.9.0", FreeDiskBytes: 48_318_382_080}
	e.Data.Extra = json.RawMessage(`{"generation":1,"action":"apply","phase":"run","step_index":1}`)
	raw, err := json.Marshal(e)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

// BenchmarkDecodeEvent is the ingest's decoder; BenchmarkDecodeEventStdlib the same event through
// encoding/json, BenchmarkDecodeEventReference through go-json-experiment/json with the same
// rules (the ingest's decoder before it was written for Event alone), for comparison.
func BenchmarkDecodeEvent(b *testing.B) {
	raw := benchEvent(b)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := DecodeEvent(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeEventStdlib(b *testing.B) {
	raw := benchEvent(b)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		var e Event
		if err := json.Unmarshal(raw, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeEventReference(b *testing.B) {
	raw := benchEvent(b)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := decodeEventReference(raw); err != nil {
			b.Fatal(err)
		}
	}
}
