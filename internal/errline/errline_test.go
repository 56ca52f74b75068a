package errline_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"godwit.dev/godwit/internal/errline"
)

func TestCause(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"empty", "", ""},
		{"blank lines", "\n  \n\t\n", ""},
		{"one line", "disk full", "disk full"},
		{"hint after the cause", "loading libs\nlibssl.so.3: cannot open shared object file: No such file or directory\nhint: install libssl3 (apt-get install libssl3)",
			"libssl.so.3: cannot open shared object file: No such file or directory"},
		{"last causal line wins", "error: first\nwarning: x\nfatal: second\nnote: see the log", "fatal: second"},
		{"no causal line: last non-hint", "step one\nstep two\nhint: try again", "step two"},
		{"only hints: the last", "hint: a\nTry 'x --help'", "Try 'x --help'"},
		{"apt style", "Reading package lists...\nE: Could not get lock /var/lib/dpkg/lock-frontend\nW: Be careful", "E: Could not get lock /var/lib/dpkg/lock-frontend"},
		{"permission", "open /etc/app.conf: permission denied\nusage: app [flags]", "open /etc/app.conf: permission denied"},
		{"command not found", "sh: 1: pg_upgradecluster: not found", "sh: 1: pg_upgradecluster: not found"},
		{"markers skipped", "--- stderr ---\nboom: cannot connect\n--- stdout ---\nok\n", "boom: cannot connect"},
		{"colon word is no apt prefix", "the line: nothing here\nplain", "plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errline.Cause(tc.text); got != tc.want {
				t.Errorf("Cause(%q) = %q, want %q", tc.text, got, tc.want)
			}
		})
	}
}

func TestHeadline(t *testing.T) {
	libssl := "--- stderr ---\n/usr/bin/app: error while loading shared libraries: libssl.so.3: cannot open shared object file: No such file or directory\nhint: install libssl3\n"
	for _, tc := range []struct{ name, err, out, want string }{
		{"hint quoted, cause in output",
			"run command of step 0 (install) exited with code 127 (command not found): hint: install libssl3", libssl,
			"run command of step 0 (install) exited with code 127 (command not found): /usr/bin/app: error while loading shared libraries: libssl.so.3: cannot open shared object file: No such file or directory"},
		{"cause already quoted",
			"run command of step 0 (install) exited with code 1: E: Could not get lock", "--- stderr ---\nE: Could not get lock\n",
			"run command of step 0 (install) exited with code 1: E: Could not get lock"},
		{"no output", "verify command of step 1 (check) timed out after 5m0s and was stopped (exit code -1)", "",
			"verify command of step 1 (check) timed out after 5m0s and was stopped (exit code -1)"},
		{"output without causal line", "run command of step 0 (s) exited with code 3", "--- stdout ---\nall fine\n",
			"run command of step 0 (s) exited with code 3"},
		{"nothing quoted", "run command of step 0 (s) exited with code 2", "--- stderr ---\nmkdir /srv: permission denied\n",
			"run command of step 0 (s) exited with code 2: mkdir /srv: permission denied"},
		{"multi-line error text", "stage 1 ok\nfatal: repository not found\nhint: check the URL", "", "fatal: repository not found"},
		{"only output", "", "--- stderr ---\nfatal: bad object\n", "fatal: bad object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errline.Headline(tc.err, tc.out); got != tc.want {
				t.Errorf("Headline(%q, %q)\n got %q\nwant %q", tc.err, tc.out, got, tc.want)
			}
		})
	}
}

func TestTailAndStderr(t *testing.T) {
	out := "--- stderr ---\na\nb\n\nc\n--- stdout ---\nd\n"
	if got := strings.Join(errline.Tail(out, 3), "|"); got != "b|c|d" {
		t.Errorf("Tail = %q", got)
	}
	if got := strings.Join(errline.Tail(errline.Stderr(out), 10), "|"); got != "a|b|c" {
		t.Errorf("Tail(Stderr) = %q", got)
	}
	if got := errline.Stderr("--- stdout ---\nonly stdout\n"); got != "" {
		t.Errorf("Stderr of stdout only = %q", got)
	}
	if errline.Tail(out, 0) != nil {
		t.Error("Tail(0) is not empty")
	}
}

func TestLongLinesAreCut(t *testing.T) {
	long := "error: " + strings.Repeat("é", 400)
	got := errline.Cause(long)
	if !utf8.ValidString(got) || !strings.HasSuffix(got, "…") || len(got) > errline.MaxLen+len("…") {
		t.Fatalf("Cause of a long line: %d bytes, valid %v: %q", len(got), utf8.ValidString(got), got)
	}
}

// FuzzCause: whatever the output, the picked line is one line of it (or its cut), valid UTF-8,
// bounded, and empty only when the text has no line.
func FuzzCause(f *testing.F) {
	for _, s := range []string{"", "a\nb", "x: cannot y\nhint: z", "--- stderr ---\nE: lock\n--- stdout ---\nok", "\xff\xfe error", strings.Repeat("x", 400)} {
		f.Add(s, "--- stderr ---\n"+s)
	}
	f.Fuzz(func(t *testing.T, text, output string) {
		c := errline.Cause(text)
		if (c == "") != (len(errline.Lines(text)) == 0) {
			t.Fatalf("Cause(%q) = %q but the text has %d lines", text, c, len(errline.Lines(text)))
		}
		for _, s := range []string{c, errline.Headline(text, output)} {
			if strings.Contains(s, "\n") || !utf8.ValidString(s) {
				t.Fatalf("not one valid line: %q", s)
			}
		}
		if sig := errline.Signature(errline.Quoted(errline.Headline(text, output))); !utf8.ValidString(sig) || len(sig) > 120 || strings.Contains(sig, "\n") {
			t.Fatalf("Signature %q: not one valid line of at most 120 bytes", sig)
		}
		if len(c) > errline.MaxLen+len("…") {
			t.Fatalf("Cause is %d bytes", len(c))
		}
		if valid := strings.ToValidUTF8(text, "\uFFFD"); c != "" && !strings.HasSuffix(c, "…") && !strings.Contains(valid, c) {
			t.Fatalf("Cause(%q) = %q is not a line of it", text, c)
		}
	})
}

func TestQuotedAndSignature(t *testing.T) {
	for in, want := range map[string]string{
		"run command of step 0 (install) exited with code 127 (command not found): libssl.so.3: cannot open":      "libssl.so.3: cannot open",
		"detect command of step 1 (probe) exited with code 2 (detect must exit 0: needed, or 1: already done): x": "x",
		"verify command of step 0 (v) timed out after 5m0s and was stopped (exit code -1): slow":                  "slow",
		"rollback command of step 0 (s) exited with code 1":                                                       "rollback command of step 0 (s) exited with code 1",
		"plain error: here": "plain error: here",
	} {
		if got := errline.Quoted(in); got != want {
			t.Errorf("Quoted(%q) = %q, want %q", in, got, want)
		}
	}
	if got := errline.Signature("agent 0196a000-0000-7000-8000-000000000001 lost 12 of deadbeefdeadbeef"); got != "agent <id> lost N of <hex>" {
		t.Errorf("Signature = %q", got)
	}
	if got := errline.Signature("  "); got != "(no error text)" {
		t.Errorf("Signature of nothing = %q", got)
	}
}
