package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// OpenAPI is the served OpenAPI document, loaded and validated by kin-openapi, with a router
// that finds the operation a request addresses. Exported for the tests in package api_test.
type OpenAPI struct {
	Doc    *openapi3.T
	router routers.Router
}

var (
	openAPIOnce sync.Once
	openAPI     *OpenAPI
	openAPIErr  error
)

// LoadOpenAPI loads openapi.yaml once per test binary and fails t if it is not a valid
// OpenAPI document.
func LoadOpenAPI(t testing.TB) *OpenAPI {
	t.Helper()
	openAPIOnce.Do(func() { openAPI, openAPIErr = loadOpenAPI() })
	if openAPIErr != nil {
		t.Fatalf("openapi.yaml: %v", openAPIErr)
	}
	return openAPI
}

func loadOpenAPI() (*OpenAPI, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openapiDoc)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	// Everything kin-openapi can check: formats, patterns, defaults and examples against their
	// schemas, no extensions next to a $ref.
	opts := []openapi3.ValidationOption{openapi3.EnableSchemaFormatValidation(), openapi3.EnableSchemaPatternValidation(),
		openapi3.EnableSchemaDefaultsValidation(), openapi3.EnableExamplesValidation(), openapi3.ProhibitExtensionsWithRef()}
	if err := doc.Validate(loader.Context, opts...); err != nil {
		return nil, fmt.Errorf("not a valid OpenAPI %s document: %w", doc.OpenAPI, err)
	}
	closeObjects(doc)
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	return &OpenAPI{Doc: doc, router: router}, nil
}

// closeObjects makes every object schema that lists properties and says nothing about others
// refuse other properties, in the tests only: a field the hub sends must be in the document
// (else generated clients drop it), while the published document stays open to fields a newer
// hub adds.
func closeObjects(doc *openapi3.T) {
	seen := map[*openapi3.Schema]bool{}
	var walk func(*openapi3.SchemaRef)
	walk = func(ref *openapi3.SchemaRef) {
		if ref == nil || ref.Value == nil || seen[ref.Value] {
			return
		}
		s := ref.Value
		seen[s] = true
		if len(s.Properties) > 0 && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil {
			s.AdditionalProperties.Has = new(false)
		}
		for _, p := range s.Properties {
			walk(p)
		}
		walk(s.Items)
		walk(s.AdditionalProperties.Schema)
		for _, list := range []openapi3.SchemaRefs{s.OneOf, s.AnyOf, s.AllOf} {
			for _, r := range list {
				walk(r)
			}
		}
	}
	for _, s := range doc.Components.Schemas {
		walk(s)
	}
	for _, r := range doc.Components.Responses {
		for _, mt := range r.Value.Content {
			walk(mt.Schema)
		}
	}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			for _, r := range op.Responses.Map() {
				for _, mt := range r.Value.Content {
					walk(mt.Schema)
				}
			}
		}
	}
}

// Operations lists every operation of the document as "METHOD /path".
func (o *OpenAPI) Operations() []string {
	var out []string
	for path, item := range o.Doc.Paths.Map() {
		for method := range item.Operations() {
			out = append(out, method+" "+path)
		}
	}
	sort.Strings(out)
	return out
}

// CheckResponse validates one response to req against the document. Under /api/v1 the request
// must address an operation the document describes, and the status and body must be ones it
// allows; for a path or method the document does not describe, the body must be its Error.
// Other paths (/healthz, /readyz, /metrics, /ui/) are not part of the document. It returns the
// operation ("GET /agents/{id}"), or "" when the request addressed none.
func (o *OpenAPI) CheckResponse(req *http.Request, status int, header http.Header, body []byte) (string, error) {
	if !strings.HasPrefix(req.URL.Path, "/api/v1/") {
		return "", nil
	}
	route, params, err := o.router.FindRoute(req)
	if err != nil {
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			return "", fmt.Errorf("%s %s answered %d, but openapi.yaml has no such operation (%v)", req.Method, req.URL.Path, status, err)
		}
		return "", o.checkError(header, body)
	}
	op := route.Method + " " + route.Path
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return op, err
	}
	return op, nil
}

func (o *OpenAPI) checkError(header http.Header, body []byte) error {
	if ct := header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("error response with content type %q", ct)
	}
	v, err := decodeJSON(body)
	if err != nil {
		return err
	}
	opts := []openapi3.SchemaValidationOption{openapi3.VisitAsResponse(), openapi3.MultiErrors()}
	if o.Doc.IsOpenAPI31OrLater() {
		opts = append(opts, openapi3.EnableJSONSchema2020())
	}
	return o.Doc.Components.Schemas["Error"].Value.VisitJSON(v, opts...)
}

// CheckedHandler wraps h so that every response it writes is validated against the OpenAPI
// document, failing t for each one that does not match. It records which operations were
// answered in covered (when not nil).
func (o *OpenAPI) CheckedHandler(t testing.TB, h http.Handler, covered *Coverage) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		res := rec.Result()
		body := rec.Body.Bytes()
		op, err := o.CheckResponse(r, res.StatusCode, res.Header, body)
		if err != nil {
			t.Errorf("%s %s → %d: response does not match openapi.yaml: %v\nbody: %s", r.Method, r.URL.RequestURI(), res.StatusCode, err, truncate(body))
		} else if op != "" && covered != nil {
			covered.add(op, res.StatusCode)
		}
		for k, vs := range res.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(res.StatusCode)
		_, _ = w.Write(body)
	})
}

func truncate(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "…"
	}
	return string(b)
}

// Coverage records the operations answered (and with which status codes).
type Coverage struct {
	mu  sync.Mutex
	ops map[string]map[int]bool
}

func (c *Coverage) add(op string, status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ops == nil {
		c.ops = map[string]map[int]bool{}
	}
	if c.ops[op] == nil {
		c.ops[op] = map[int]bool{}
	}
	c.ops[op][status] = true
}

// String lists the operations with the status codes checked, for the test log.
func (c *Coverage) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ops []string
	for op, codes := range c.ops {
		var cs []string
		for code := range codes {
			cs = append(cs, fmt.Sprint(code))
		}
		sort.Strings(cs)
		ops = append(ops, op+" "+strings.Join(cs, ","))
	}
	sort.Strings(ops)
	return strings.Join(ops, "; ")
}

// Successes returns the operations answered with a 2xx at least once.
func (c *Coverage) Successes() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for op, codes := range c.ops {
		for code := range codes {
			if code < 300 {
				out[op] = true
			}
		}
	}
	return out
}

func decodeJSON(b []byte) (any, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("body is not JSON: %w", err)
	}
	return v, nil
}
