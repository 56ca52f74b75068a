package runner

import (
	"encoding/json"
	"fmt"
	"godwit.dev/godwit/internal/errline"
	"maps"
	"strconv"
	"strings"

	"godwit.dev/godwit/internal/agent/execute"
	"godwit.dev/godwit/internal/wire"
)

// detail is what an event says beyond the assignment it is about.
type detail struct {
	step    int // the step it is about; -1 for the whole assignment
	phase   string
	msg     string
	errText string
	res     *execute.Result
	extra   map[string]any
}

// event builds an event about rec. Its id is fixed here, so that a retried delivery of it is
// recognised as the same event all the way to the hub's store.
func (r *Runner) event(rec *record, typ, severity string, d detail) wire.Event {
	data := wire.EventData{AgentID: r.cfg.AgentID, Migration: rec.Migration, Attempt: rec.Attempt,
		Message: d.msg, Error: d.errText, FromVersion: rec.From, ToVersion: rec.To}
	if r.cfg.System != nil {
		sys := r.cfg.System()
		data.System = &sys
	}
	extra := map[string]any{"generation": rec.Generation, "action": rec.Action, "state": rec.State}
	subject := "migration/" + rec.Migration
	if d.step >= 0 && d.step < len(rec.Steps) {
		data.Step = rec.Steps[d.step].Name
		extra["step_index"] = d.step
		subject += "/step/" + strconv.Itoa(d.step)
	}
	if d.phase != "" {
		extra["phase"] = d.phase
	}
	if d.res != nil {
		code := d.res.ExitCode
		data.ExitCode = &code
		data.OutputTail = outputTail(*d.res)
		data.DurationMS = d.res.Duration.Milliseconds()
		if d.res.TimedOut {
			extra["timed_out"] = true
		}
	}
	maps.Copy(extra, d.extra)
	data.Extra, _ = json.Marshal(extra)
	e := wire.NewEvent(wire.AgentSource(r.cfg.AgentID), typ, severity, data)
	e.Time = r.now().UTC()
	e.Subject = subject
	return e
}

// outputTail joins the bounded tails of a command's stderr and stdout, stderr first: that is
// where a failure usually says why.
func outputTail(res execute.Result) string {
	var b strings.Builder
	for _, part := range []struct{ name, text string }{{"stderr", res.Stderr}, {"stdout", res.Stdout}} {
		if part.text == "" {
			continue
		}
		fmt.Fprintf(&b, "--- %s ---\n%s", part.name, part.text)
		if !strings.HasSuffix(part.text, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// describe is the error text of a command that did not succeed.
func describe(rec *record, step int, phase string, res execute.Result) string {
	s := rec.Steps[step]
	what := fmt.Sprintf("%s command of step %d (%s)", phase, step, s.Name)
	var text string
	switch {
	case res.StartErr != nil:
		text = fmt.Sprintf("%s could not start: %v", what, res.StartErr)
	case res.TimedOut:
		text = fmt.Sprintf("%s timed out after %s and was stopped (exit code %d)", what, s.Timeout(), res.ExitCode)
	case res.ExitCode == 127:
		text = what + " exited with code 127 (command not found)"
	case res.ExitCode == 126:
		text = what + " exited with code 126 (command not executable)"
	case res.ExitCode > 128:
		text = fmt.Sprintf("%s exited with code %d (killed by signal %d?)", what, res.ExitCode, res.ExitCode-128)
	default:
		text = fmt.Sprintf("%s exited with code %d", what, res.ExitCode)
	}
	if phase == phaseDetect && res.StartErr == nil && !res.TimedOut {
		text += " (detect must exit 0: needed, or 1: already done)"
	}
	// The line that carries the error, not a hint printed after it.
	if line := errline.Cause(res.Stderr); line != "" {
		text += ": " + line
	}
	return text
}

func stepList(rec *record, idx []int) string {
	parts := make([]string, 0, len(idx))
	for _, i := range idx {
		name := "?"
		if i >= 0 && i < len(rec.Steps) {
			name = rec.Steps[i].Name
		}
		parts = append(parts, fmt.Sprintf("%d (%s)", i, name))
	}
	return strings.Join(parts, ", ")
}
