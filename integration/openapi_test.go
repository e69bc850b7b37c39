package integration

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/schema_validation"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
)

// TestOpenAPIDocument: GET /openapi.json on a running edge is a valid
// OpenAPI 3.1 document of every route it serves (the composed home screen
// included), answers 304 to its own ETag, and the answers of real calls
// through Portico validate against it.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	be := harness.Services(t, []string{"users", "orders", "products", "accounts"}, nil)
	e := harness.Portico(t, func(c *app.Config) { c.Edge.Compose.ProtosDir = "../cmd/examples/demo/frontends" }, be.Addr)
	c := &http.Client{}
	r := do(t, c, "GET", e.URL+"/openapi.json", "")
	if r.code != 200 || r.header.Get("Content-Type") != "application/json" || r.header.Get("Etag") == "" {
		t.Fatalf("%d %v", r.code, r.header)
	}
	if again := do(t, c, "GET", e.URL+"/openapi.json", "", "If-None-Match", r.header.Get("Etag")); again.code != 304 {
		t.Fatalf("with its ETag: %d", again.code)
	}
	if y := do(t, c, "GET", e.URL+"/openapi.yaml", ""); y.code != 200 || !strings.HasPrefix(y.body, "openapi: 3.1.0") {
		t.Fatalf("yaml: %d %.100s", y.code, y.body)
	}
	doc, err := libopenapi.NewDocument([]byte(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if ok, errs := schema_validation.ValidateOpenAPIDocument(doc); !ok {
		for _, e := range errs {
			t.Errorf("invalid document: %s: %s", e.Message, e.Reason)
		}
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	ops := 0
	for _, item := range m.Model.Paths.PathItems.FromOldest() {
		ops += item.GetOperations().Len()
	}
	// A custom HTTP method (PURGE /v1/orders/{order_id}) has no place in
	// an OpenAPI 3.1 path item; every other route is an operation.
	n := 0
	for _, rt := range e.Tables.Load().Routes() {
		if rt.Binding.HTTPMethod != "PURGE" {
			n++
		}
	}
	if ops != n {
		t.Errorf("%d operations in the document, %d routes served", ops, n)
	}
	if m.Model.Paths.PathItems.GetOrZero("/api/home/{user}") == nil {
		t.Error("the composed home screen is not in the document")
	}

	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, path := range []string{
		"/v1/users/alice", "/v1/users?pageSize=2", "/v1/products/p-1", "/v1/orders?userId=alice", "/v1/plans",
		"/v1/orders/o-1001", "/api/home/alice?productIds=p-1&productIds=p-2", "/v1/users/zed",
	} {
		req, err := http.NewRequestWithContext(t.Context(), "GET", e.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if ok, errs := v.ValidateHttpResponse(req, resp); !ok {
			for _, e := range errs {
				t.Errorf("GET %s (%d): %s: %s", path, resp.StatusCode, e.Message, e.Reason)
				for _, f := range e.SchemaValidationErrors {
					t.Errorf("  %s at %s", f.Reason, f.FieldPath)
				}
			}
		}
	}
}
