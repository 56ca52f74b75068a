package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
			_ = validateEnroll(req)
			return
		}
		if code := StatusOf(err); code != http.StatusBadRequest && code != http.StatusRequestEntityTooLarge {
			t.Fatalf("decode error %v maps to %d", err, code)
		}
	})
}
