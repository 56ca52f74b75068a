// Package errline picks, out of a failed command's output, the line that says why it failed.
//
// A command's last line of stderr is often a hint ("hint: install libssl3 …", "Try 'foo
// --help'") while the cause ("libssl.so.3: cannot open shared object file") came a line or two
// before. Cause prefers the last line that reads like an error (error, fatal, cannot, No such,
// denied, not found, …) and is not a hint; only when no line does is the last line taken. The
// package is pure: no I/O, no state, safe for any input.
package errline

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// MaxLen bounds a returned line, in bytes (cut at a rune boundary, "…" appended).
const MaxLen = 300

// causal are the words that mark a line as saying what went wrong, lower case.
var causal = []string{
	"error", "err:", "fatal", "panic", "cannot", "can't", "could not", "couldn't", "unable to",
	"no such", "denied", "not found", "not permitted", "refused", "failed", "failure", "no space left",
	"timed out", "timeout", "killed", "segmentation fault", "core dumped", "invalid", "unknown",
	"missing", "not installed", "unreachable", "exception", "traceback", "abort",
}

// causalPrefixes mark a causal line only at its start (apt's "E: …", "W: …" is a warning).
var causalPrefixes = []string{"e: ", "error", "fatal", "panic:"}

// hintPrefixes mark a line that advises rather than reports, lower case.
var hintPrefixes = []string{"hint:", "note:", "help:", "tip:", "try ", "try:", "usage:", "see ", "info:", "suggestion:",
	"did you mean", "run '", "run \"", "for more information", "(use ", "perhaps "}

// markerLine is what a tool adds around output: "--- stderr ---".
func markerLine(l string) bool {
	return strings.HasPrefix(l, "---") && strings.HasSuffix(l, "---")
}

// IsHint reports whether the line advises rather than reports.
func IsHint(line string) bool {
	l := strings.ToLower(strings.TrimSpace(line))
	for _, p := range hintPrefixes {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

// IsCausal reports whether the line reads like an error and is not a hint.
func IsCausal(line string) bool {
	if IsHint(line) {
		return false
	}
	l := strings.ToLower(strings.TrimSpace(line))
	for _, p := range causalPrefixes {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	for _, w := range causal {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}

// Lines returns the non-empty lines of text, trimmed, without output markers.
func Lines(text string) []string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if l = strings.TrimSpace(l); l != "" && !markerLine(l) {
			out = append(out, l)
		}
	}
	return out
}

// Cause returns the line of text that carries the error: the last causal line, else the last
// line that is not a hint, else the last line; "" when text has no line. It is cut to MaxLen.
func Cause(text string) string {
	lines := Lines(text)
	if len(lines) == 0 {
		return ""
	}
	pick := -1
	for i := len(lines) - 1; i >= 0 && pick < 0; i-- {
		if IsCausal(lines[i]) {
			pick = i
		}
	}
	for i := len(lines) - 1; i >= 0 && pick < 0; i-- {
		if !IsHint(lines[i]) {
			pick = i
		}
	}
	if pick < 0 {
		pick = len(lines) - 1
	}
	return clip(lines[pick])
}

// Stderr is the stderr part of an output tail as the agent sends it ("--- stderr ---" …
// "--- stdout ---" …); the whole text when it has no such markers.
func Stderr(tail string) string {
	i := strings.Index(tail, "--- stderr ---")
	if i < 0 {
		if strings.Contains(tail, "--- stdout ---") {
			return ""
		}
		return tail
	}
	rest := tail[i+len("--- stderr ---"):]
	if j := strings.Index(rest, "--- stdout ---"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// Headline is the one line an operator is shown for a failure: the error text's causal line
// and, when the output's stderr has a causal line the error text does not carry (the error
// quoted a hint, or nothing), that line in place of the quoted one.
//
// An agent's error text is "<what> exited with code N (gloss): <a line of stderr>"; the gloss
// says little ("command not found") next to the line that names what was not found.
func Headline(errText, output string) string {
	line := Cause(errText)
	stderr := Stderr(output)
	c := Cause(stderr)
	if c == "" || !IsCausal(c) || strings.Contains(line, c) {
		return line
	}
	if line == "" {
		return c
	}
	// The error quoted the last stderr line; a hint there gives way to the cause.
	if ls := Lines(stderr); len(ls) > 0 {
		if last := clip(ls[len(ls)-1]); last != c && strings.HasSuffix(line, ": "+last) {
			return clip(strings.TrimSuffix(line, last) + c)
		}
	}
	if i := strings.LastIndex(line, ": "); i >= 0 && IsHint(line[i+2:]) {
		return clip(line[:i+2] + c)
	}
	if !strings.Contains(line, ": ") {
		return clip(line + ": " + c)
	}
	return line
}

// Tail returns the last n non-empty lines of text, without output markers.
func Tail(text string, n int) []string {
	ls := Lines(text)
	if n <= 0 {
		return nil
	}
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	for i := range ls {
		ls[i] = clip(ls[i])
	}
	return ls
}

func clip(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= MaxLen {
		return s
	}
	cut := MaxLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

var (
	uuidRE   = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)
	hexRE    = regexp.MustCompile(`\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{12,}\b`)
	numberRE = regexp.MustCompile(`\d+`)
	spaceRE  = regexp.MustCompile(`\s+`)
)

// Signature reduces a line to what failures of the same cause share: ids, hex strings and
// numbers replaced, at most 120 bytes; "(no error text)" for an empty line.
func Signature(line string) string {
	line = strings.TrimSpace(line)
	if line == "" {
		return "(no error text)"
	}
	line = uuidRE.ReplaceAllString(line, "<id>")
	line = hexRE.ReplaceAllString(line, "<hex>")
	line = numberRE.ReplaceAllString(line, "N")
	line = spaceRE.ReplaceAllString(line, " ")
	if len(line) > 120 {
		cut := 117
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = line[:cut] + "..."
	}
	return line
}

// commandPrefixRE matches what an agent puts before the stderr line it quotes: "run command of
// step 0 (install) exited with code 127 (command not found): ".
var commandPrefixRE = regexp.MustCompile(`^\S+ command of step -?\d+ \(.*?\) (?:exited with code -?\d+(?: \([^)]*\))*|timed out after \S+ and was stopped \(exit code -?\d+\))(?: \(detect must[^)]*\))?: `)

// Quoted is the stderr line an agent's error text quotes, without what came before it; the
// whole line when it quotes none.
func Quoted(line string) string {
	if loc := commandPrefixRE.FindStringIndex(line); loc != nil && loc[1] < len(line) {
		return line[loc[1]:]
	}
	return line
}
