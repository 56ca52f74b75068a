package api

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Every API route is described in the served OpenAPI document, with its method.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(openapiDoc, &doc); err != nil {
		t.Fatalf("openapi.yaml does not parse: %v", err)
	}
	h := setup(t).api
	if len(h.patterns) < 10 {
		t.Fatalf("only %d routes registered", len(h.patterns))
	}
	for _, r := range h.patterns {
		method, path, _ := strings.Cut(r, " ")
		path = strings.TrimPrefix(path, "/api/v1")
		ops, ok := doc.Paths[path]
		if !ok {
			t.Errorf("%s is not in openapi.yaml", r)
			continue
		}
		if _, ok := ops[strings.ToLower(method)]; !ok {
			t.Errorf("%s: openapi.yaml describes %s without %s", r, path, method)
		}
	}
}
