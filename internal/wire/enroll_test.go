package wire

import (
	"errors"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/fault"
)

func goodEnroll() EnrollRequest {
	return EnrollRequest{Token: "gwe_abc", Name: "web-1.ams.example.net", Labels: map[string]string{"role": "web", "site": "ams", "tier": ""},
		Version: "1.4.2", System: SystemInfo{OS: "linux", Arch: "amd64", Kernel: "6.1.0-18-amd64", Hostname: "web-1", AgentVersion: "1.4.2 (abc)"}}
}

func TestEnrollRequestValidate(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		name  string
		tweak func(*EnrollRequest)
		field string // empty: valid
		says  string
	}{
		{"ok", func(*EnrollRequest) {}, "", ""},
		{"host name", func(r *EnrollRequest) { r.Name = "DB_02" }, "", ""},
		{"longest name", func(r *EnrollRequest) { r.Name = long(MaxAgentNameLength) }, "", ""},
		{"no labels", func(r *EnrollRequest) { r.Labels = nil }, "", ""},
		{"empty name", func(r *EnrollRequest) { r.Name = "" }, "name", "must not be empty"},
		{"long name", func(r *EnrollRequest) { r.Name = long(MaxAgentNameLength + 1) }, "name", "longer than 128"},
		{"slash", func(r *EnrollRequest) { r.Name = "web/1" }, "name", "'/'"},
		{"backslash", func(r *EnrollRequest) { r.Name = `web\1` }, "name", `'\'`},
		{"dot dot", func(r *EnrollRequest) { r.Name = "web..1" }, "name", `".."`},
		{"parent dir", func(r *EnrollRequest) { r.Name = ".." }, "name", `".."`},
		{"leading dot", func(r *EnrollRequest) { r.Name = ".web" }, "name", "start and end"},
		{"trailing dash", func(r *EnrollRequest) { r.Name = "web-" }, "name", "start and end"},
		{"space", func(r *EnrollRequest) { r.Name = "web 1" }, "name", "is not allowed"},
		{"newline", func(r *EnrollRequest) { r.Name = "web\n1" }, "name", "control character U+000A"},
		{"escape", func(r *EnrollRequest) { r.Name = "web\x1b[31m" }, "name", "control character U+001B"},
		{"bidi override", func(r *EnrollRequest) { r.Name = "web\u202e1" }, "name", "bidirectional formatting character U+202E"},
		{"bidi isolate", func(r *EnrollRequest) { r.Name = "web\u20661" }, "name", "U+2066"},
		{"zero width", func(r *EnrollRequest) { r.Name = "web\u200b1" }, "name", "U+200B"},
		{"non-ascii", func(r *EnrollRequest) { r.Name = "wéb" }, "name", "'é' is not allowed"},
		{"invalid utf-8", func(r *EnrollRequest) { r.Name = "web\xff" }, "name", "not valid UTF-8"},
		{"too many labels", func(r *EnrollRequest) {
			r.Labels = map[string]string{}
			for i := range MaxLabels + 1 {
				r.Labels["k"+strings.Repeat("x", i)] = "v"
			}
		}, "labels", "at most 64"},
		{"label key slash", func(r *EnrollRequest) { r.Labels = map[string]string{"example.com/role": "web"} }, "labels", "'/'"},
		{"label key dot dot", func(r *EnrollRequest) { r.Labels = map[string]string{"a..b": "web"} }, "labels", `".."`},
		{"label key empty", func(r *EnrollRequest) { r.Labels = map[string]string{"": "web"} }, "labels", "must not be empty"},
		{"label key long", func(r *EnrollRequest) { r.Labels = map[string]string{long(64): "web"} }, "labels", "longer than 63"},
		{"label value slash", func(r *EnrollRequest) { r.Labels = map[string]string{"site": "eu/ams"} }, "labels.site", "'/'"},
		{"label value bidi", func(r *EnrollRequest) { r.Labels = map[string]string{"site": "ams\u202d"} }, "labels.site", "U+202D"},
		{"label value control", func(r *EnrollRequest) { r.Labels = map[string]string{"site": "a\x00b"} }, "labels.site", "U+0000"},
		{"label value long", func(r *EnrollRequest) { r.Labels = map[string]string{"site": long(64)} }, "labels.site", "longer than 63"},
		{"label value dot dot", func(r *EnrollRequest) { r.Labels = map[string]string{"site": ".."} }, "labels.site", `".."`},
		{"version long", func(r *EnrollRequest) { r.Version = long(MaxVersionLength + 1) }, "version", "longer than 64"},
		{"version control", func(r *EnrollRequest) { r.Version = "1.0\r\n" }, "version", "control character"},
		{"hostname bidi", func(r *EnrollRequest) { r.System.Hostname = "h\u2067" }, "system.hostname", "U+2067"},
		{"kernel long", func(r *EnrollRequest) { r.System.Kernel = long(MaxSystemFieldLength + 1) }, "system.kernel", "longer than 256"},
		{"os long", func(r *EnrollRequest) { r.System.OS = long(33) }, "system.os", "longer than 32"},
		{"agent version line separator", func(r *EnrollRequest) { r.System.AgentVersion = "1\u20282" }, "system.agent_version", "U+2028"},
		{"token long", func(r *EnrollRequest) { r.Token = long(MaxEnrollTokenLength + 1) }, "token", "longer than 256"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := goodEnroll()
			tc.tweak(&r)
			err := r.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var fe *fault.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(fe.Message, tc.says) {
				t.Fatalf("Validate() = %v; want a field error on %q saying %q", err, tc.field, tc.says)
			}
			if !errors.Is(err, fault.ErrInvalid) {
				t.Fatalf("Validate() = %v is not ErrInvalid", err)
			}
		})
	}
}

// FuzzCheckAgentName: whatever is accepted is a name the rules promise — short ASCII, no '/',
// no "..", no control or bidi character, alphanumeric at both ends.
func FuzzCheckAgentName(f *testing.F) {
	for _, s := range []string{"web-1", "a", "..", "a/b", "web\u202e", "DB_02.example", "", "a..b", "x\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckAgentName(s) != nil {
			return
		}
		if s == "" || len(s) > MaxAgentNameLength || strings.Contains(s, "..") || strings.ContainsAny(s, "/\\ \t\r\n") {
			t.Fatalf("accepted %q", s)
		}
		for _, r := range s {
			if r >= 0x80 || r < 0x20 || r == 0x7f {
				t.Fatalf("accepted %q with %U", s, r)
			}
		}
		if !alnum(s[0]) || !alnum(s[len(s)-1]) {
			t.Fatalf("accepted %q", s)
		}
	})
}
