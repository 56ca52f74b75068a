package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

// FuzzDecode feeds arbitrary bodies to the strict decoder: it must never panic, and every
// failure must be a client error (400/413), never a 500.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"token":"x","name":"n"}`, `{`, ``, `{"labels":{"a":"b"}} {}`, `{"name":7}`, `[]`, `null`, `{"system":{"free_disk_bytes":-1}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/enroll", strings.NewReader(body))
		r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, 4096)
		var req wire.EnrollRequest
		err := decode(r, &req)
		if err == nil {
			_ = req.Validate()
			return
		}
		if code := StatusOf(err); code != http.StatusBadRequest && code != http.StatusRequestEntityTooLarge {
			t.Fatalf("decode error %v maps to %d", err, code)
		}
	})
}

// FuzzEnrollBody sends arbitrary bodies through the whole enrollment route (body cap, strict
// decoding, token shape, field checks, the store's unique names): never a 500, and whatever is
// enrolled passes the rules — a valid name and labels, within every bound.
func FuzzEnrollBody(f *testing.F) {
	b := setupFuzz(f)
	tok := b.enrollToken(f)
	for _, s := range []string{
		`{"token":"` + tok + `","name":"web-1","labels":{"role":"web"},"version":"1.0","system":{"os":"linux"}}`,
		`{"token":"` + tok + `","name":"web-1"}`,
		`{"token":"` + tok + `","name":"a/b"}`,
		`{"token":"` + tok + `","name":"x","labels":{"k":"v\u202e"}}`,
		`{"token":"gwe_x","name":"n"}`,
		`{"token":"` + tok + `","name":"` + strings.Repeat("a", 200) + `"}`,
		`{"name":"n"}`, `[]`, `{`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/enroll", strings.NewReader(body))
		rec := httptest.NewRecorder()
		b.api.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusCreated:
			var er wire.EnrollResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil {
				t.Fatalf("201 with %q: %v", rec.Body.String(), err)
			}
			a, err := b.store.GetAgent(context.Background(), er.AgentID)
			if err != nil {
				t.Fatal(err)
			}
			if wire.CheckAgentName(a.Name) != nil || wire.CheckLabels(a.Labels) != nil || len(body) > wire.MaxEnrollBodyBytes {
				t.Fatalf("enrolled %+v from %q", a, body)
			}
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusConflict, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("%q: %d %s", body, rec.Code, rec.Body.String())
		}
	})
}

// FuzzAuditQuery: any query string either is refused with a 400 naming a parameter, or runs
// against the store without an error other than a refused cursor.
func FuzzAuditQuery(f *testing.F) {
	b := setupFuzz(f)
	for _, q := range []string{"since=24h&actor=admin", "action=POST%20/api/v1/migrations&limit=5", "cursor=12", "cursor=-1",
		"action=DELETE", "action=%2F", "since=soon", "limit=0", "x=1", "action=%25%27%22", "actor=%00"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseAuditQuery(v, time.Now())
		if err != nil {
			var fe *fault.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("%q: %v is not a field error", raw, err)
			}
			return
		}
		if _, _, err := b.store.QueryAudit(context.Background(), q); err != nil && !errors.Is(err, fault.ErrInvalid) {
			t.Fatalf("%q: QueryAudit: %v", raw, err)
		}
	})
}

// FuzzClientAddress: whatever X-Forwarded-For holds, a request from an untrusted address is
// that address, and one from a trusted proxy is the proxy or an address the header names.
func FuzzClientAddress(f *testing.F) {
	a := NewAccess(AccessConfig{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	f.Add("10.1.2.3:80", "192.0.2.1, 10.9.9.9")
	f.Add("192.0.2.5:1", "10.0.0.1")
	f.Add("[::1]:443", "garbage,,")
	f.Add("10.0.0.1:9", "::ffff:10.2.2.2, 2001:db8::1")
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", xff)
		got := a.Client(r)
		conn := remoteAddr(remote)
		if !a.trusted(conn) {
			if got != conn {
				t.Fatalf("untrusted %q with %q: %v", remote, xff, got)
			}
			return
		}
		if got != conn && !strings.Contains(xff, got.String()) && !strings.Contains(xff, got.Unmap().String()) {
			// An address the header names (possibly written differently, as ::ffff:a.b.c.d).
			named := false
			for _, h := range strings.Split(xff, ",") {
				if p, err := netip.ParseAddr(strings.TrimSpace(h)); err == nil && p.Unmap() == got {
					named = true
				}
			}
			if !named {
				t.Fatalf("trusted %q with %q: %v is neither the proxy nor named", remote, xff, got)
			}
		}
	})
}

// setupFuzz is setup for fuzz targets: one store and server for every input.
func setupFuzz(f *testing.F) *bundle {
	f.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "hub.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	b := &bundle{store: st, admin: credential.New(credential.PrefixAdmin), bus: &fakeBus{}, now: time.Now()}
	if _, err := st.InitAdminToken(context.Background(), credential.Hash(b.admin), b.now); err != nil {
		f.Fatal(err)
	}
	b.api = New(Config{Store: st, Bus: b.bus, Logger: logging.Discard(), Registry: prometheus.NewRegistry(), MaxBodyBytes: 1 << 20,
		HeartbeatInterval: 5 * time.Second})
	return b
}

// enrollToken stores an enrollment token of a million uses and returns its secret.
func (b *bundle) enrollToken(f *testing.F) string {
	f.Helper()
	secret := credential.New(credential.PrefixEnroll)
	tok := wire.EnrollToken{ID: "fuzz", MaxUses: 1_000_000, ExpiresAt: b.now.Add(24 * time.Hour), CreatedAt: b.now}
	if err := b.store.CreateEnrollToken(context.Background(), tok, credential.Hash(secret)); err != nil {
		f.Fatal(err)
	}
	return secret
}

// FuzzSuspendRequest feeds arbitrary bodies to the suspend/resume body reader: it must never
// panic, every failure must be a client error, and what it accepts names api or cli (or no channel).
func FuzzSuspendRequest(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"reason":"canary","via":"cli","by":"alice"}`, `{"via":"ui"}`, `{"via":"spec"}`,
		`{"reason":7}`, `{"bogus":1}`, `{} {}`, `[`, `null`, `{"reason":"\u0000"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/sweeps/s/suspend", strings.NewReader(body))
		r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, 4096)
		req, err := suspendRequest(r)
		if err != nil {
			if code := StatusOf(err); code != http.StatusBadRequest && code != http.StatusRequestEntityTooLarge {
				t.Fatalf("suspend body error %v maps to %d", err, code)
			}
			return
		}
		if req.Via != "" && req.Via != wire.SuspendViaAPI && req.Via != wire.SuspendViaCLI {
			t.Fatalf("accepted %+v from %q", req, body)
		}
	})
}
