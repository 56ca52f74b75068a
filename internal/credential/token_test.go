package credential

import (
	"strings"
	"testing"
)

func TestParseEnrollToken(t *testing.T) {
	t.Parallel()
	secret := New(PrefixEnroll)
	fp := Fingerprint([]byte("a CA"))
	cases := []struct {
		name, in, secret, fp, err string
	}{
		{"bare secret (loopback hub, older hub)", secret, secret, "", ""},
		{"pinned", WithPin(secret, fp), secret, fp, ""},
		{"surrounding space", " " + WithPin(secret, fp) + "\n", secret, fp, ""},
		{"no fingerprint means no suffix", WithPin(secret, ""), secret, "", ""},
		{"admin token", New(PrefixAdmin), "", "", "must start with"},
		{"prefix only", PrefixEnroll, "", "", "must start with"},
		{"empty", "", "", "", "must start with"},
		{"short fingerprint", secret + PinSeparator + fp[:10], "", "", "64 hex digits"},
		{"long fingerprint", secret + PinSeparator + fp + "00", "", "", "64 hex digits"},
		{"upper-case fingerprint", secret + PinSeparator + strings.ToUpper(fp), "", "", "lower-case hex"},
		{"not hex", secret + PinSeparator + strings.Repeat("g", 64), "", "", "lower-case hex"},
		{"two fingerprints", WithPin(WithPin(secret, fp), fp), "", "", "64 hex digits"},
		{"foreign character in the secret", secret + "!" + PinSeparator + fp, "", "", "unexpected character"},
		{"other separator", secret + ".sha1:" + fp[:40], "", "", "unexpected character"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, f, err := ParseEnrollToken(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || s != "" || f != "" {
					t.Fatalf("ParseEnrollToken(%q) = %q, %q, %v; want an error containing %q", tc.in, s, f, err, tc.err)
				}
				return
			}
			if err != nil || s != tc.secret || f != tc.fp {
				t.Fatalf("ParseEnrollToken(%q) = %q, %q, %v; want %q, %q", tc.in, s, f, err, tc.secret, tc.fp)
			}
		})
	}
}

// FuzzParseEnrollToken: never a panic; what parses round-trips through WithPin; a secret never
// contains the separator, and a fingerprint is always 64 lower-case hex digits.
func FuzzParseEnrollToken(f *testing.F) {
	secret := New(PrefixEnroll)
	f.Add(secret)
	f.Add(WithPin(secret, Fingerprint([]byte("x"))))
	f.Add("gwe_a.sha256:" + strings.Repeat("0", 64))
	f.Add("gwe_.sha256:")
	f.Fuzz(func(t *testing.T, in string) {
		s, fp, err := ParseEnrollToken(in)
		if err != nil {
			if s != "" || fp != "" {
				t.Fatalf("error %v with results %q %q", err, s, fp)
			}
			return
		}
		if !strings.HasPrefix(s, PrefixEnroll) || strings.Contains(s, PinSeparator) || strings.ContainsAny(s, " \n\t.:") {
			t.Fatalf("secret %q from %q", s, in)
		}
		if fp != "" && (len(fp) != 64 || strings.Trim(fp, "0123456789abcdef") != "") {
			t.Fatalf("fingerprint %q from %q", fp, in)
		}
		if WithPin(s, fp) != strings.TrimSpace(in) {
			t.Fatalf("WithPin(%q, %q) = %q, want %q", s, fp, WithPin(s, fp), strings.TrimSpace(in))
		}
	})
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"nats://godwit-hub:s3cret@n1:4222": "nats://godwit-hub:xxxxx@n1:4222",
		"nats://n1:4222":                   "nats://n1:4222",
		"nats://s3cret@n1:4222":            "nats://xxxxx@n1:4222",
		"nats://u:p%zz@n1:4222":            "nats://u:xxxxx@n1:4222",
		"nats//godwit-sys:0ther@n1:4222":   "xxxxx@n1:4222",
	}
	for in, want := range cases {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	if got, err := StripUserinfo("nats://godwit-hub:s3cret@n1:4222"); err != nil || got != "nats://n1:4222" {
		t.Errorf("StripUserinfo = %q, %v", got, err)
	}
}

// FuzzRedactURL: the password of a URL never survives redaction, whatever characters it and the
// host hold (escaped or not).
func FuzzRedactURL(f *testing.F) {
	f.Add("godwit-hub", "s3cret-pass", "n1:4222")
	f.Add("u", "p%zzsecret", "h")
	f.Add("u", "pa:ss@w#rd/x", "h/p?q")
	f.Add("", "token-only", "h")
	f.Fuzz(func(t *testing.T, user, pass, host string) {
		if strings.ContainsAny(user, ":@/") || strings.Contains(host, "@") {
			return // then the text itself is ambiguous about where the password is
		}
		if len(pass) < 6 || strings.Contains("nats://"+user+":xxxxx@"+host, pass) {
			return // the password is also in what the redacted URL legitimately shows
		}
		in := "nats://" + user + ":" + pass + "@" + host
		if out := RedactURL(in); strings.Contains(out, pass) {
			t.Fatalf("RedactURL(%q) = %q keeps the password", in, out)
		}
		token := "nats://" + pass + "@" + host
		if out := RedactURL(token); !strings.Contains(pass, ":") && strings.Contains(out, pass) {
			t.Fatalf("RedactURL(%q) = %q keeps the token", token, out)
		}
	})
}
