package credential

import (
	"strings"
	"testing"
)

func TestParseBearer(t *testing.T) {
	t.Parallel()
	admin, api := New(PrefixAdmin), New(PrefixAPI)
	ok := map[string]string{
		"Bearer " + admin:        admin,
		"Bearer " + api:          api,
		"bearer " + api:          api,
		"BEARER  " + api + " \t": api,
	}
	for h, want := range ok {
		if got, err := ParseBearer(h); err != nil || got != want {
			t.Errorf("ParseBearer(%q) = %q, %v; want %q", h, got, err, want)
		}
	}
	bad := map[string]string{
		"":                                      "missing",
		api:                                     "Bearer <token>",
		"Basic " + api:                          "Bearer <token>",
		"Bearer":                                "Bearer <token>",
		"Bearer ":                               "must start with",
		"Bearer " + New(PrefixEnroll):           "must start with",
		"Bearer " + New(PrefixAgent):            "must start with",
		"Bearer gwt_short":                      "52 characters",
		"Bearer " + api + "x":                   "52 characters",
		"Bearer " + strings.ToUpper(api):        "must start with",
		"Bearer gwt_" + strings.Repeat("1", 52): "unexpected character",
		"Bearer " + api[:20] + " " + api[21:]:   "unexpected character",
		"Bearer " + strings.Repeat("a", 2000):   "longer than",
	}
	for h, want := range bad {
		got, err := ParseBearer(h)
		if err == nil || got != "" || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseBearer(%.40q) = %q, %v; want an error containing %q", h, got, err, want)
		}
		if err != nil && len(h) > 20 && strings.Contains(err.Error(), h[7:]) {
			t.Errorf("ParseBearer(%.40q): the error repeats the token", h)
		}
	}
	if !IsAdminToken(admin) || IsAdminToken(api) {
		t.Error("IsAdminToken")
	}
}

// FuzzParseBearer: never a panic; an accepted header yields a token of exactly the shape New
// makes (a known prefix and 52 base32 characters), found in the header after the scheme; an
// error never repeats the header.
func FuzzParseBearer(f *testing.F) {
	f.Add("Bearer " + New(PrefixAPI))
	f.Add("bearer " + New(PrefixAdmin))
	f.Add("Bearer gwt_")
	f.Add("Basic dXNlcjpwYXNz")
	f.Add("Bearer  gwa_" + strings.Repeat("a", 52) + "\t")
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := ParseBearer(header)
		if err != nil {
			if tok != "" {
				t.Fatalf("error %v with token %q", err, tok)
			}
			if len(header) >= 12 && strings.Contains(err.Error(), header) {
				t.Fatalf("error %q repeats the header", err)
			}
			return
		}
		if len(tok) != 4+secretLength || !(strings.HasPrefix(tok, PrefixAdmin) || strings.HasPrefix(tok, PrefixAPI)) {
			t.Fatalf("token %q from %q", tok, header)
		}
		if strings.Trim(tok[4:], "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("token %q from %q", tok, header)
		}
		if !strings.HasPrefix(strings.ToLower(header), "bearer ") || !strings.Contains(header, tok) {
			t.Fatalf("token %q not in %q after the scheme", tok, header)
		}
	})
}
