package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/schema_validation"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/integration/harness"
)

var updateGoldens = flag.Bool("update", false, "rewrite the golden OpenAPI documents of the demo's frontends")

// TestOpenAPIDocument: GET /openapi.json on a running edge configured as
// the demo is (its frontend protos, a web frontend and an include-mode
// partner on its own host) is, for each frontend, a valid OpenAPI 3.1
// document of every route that frontend is served (the composed home
// screen included), equal to its golden file (go test ./integration -run
// TestOpenAPIDocument -update rewrites them), answers 304 to its own ETag,
// and the answers of real calls through Portico validate against it.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	be := harness.Services(t, []string{"users", "orders", "products", "accounts"}, nil)
	e := harness.Portico(t, func(c *app.Config) {
		c.Edge.Compose.ProtosDir = "../cmd/examples/demo/frontends"
		c.Edge.Frontends = []edge.FrontendConfig{{Name: "web"}, {Name: "partner", Mode: "include", Hosts: []string{"partner.localhost"}}}
		c.Edge.DefaultFrontend = "web"
	}, be.Addr)
	if rej := e.Tables.Load().Rejected; len(rej) > 0 {
		t.Fatal(rej)
	}
	for _, fe := range e.Tables.Load().Frontends() {
		host := "web.localhost"
		if fe.Frontend == "partner" {
			host = "partner.localhost"
		}
		t.Run(fe.Frontend, func(t *testing.T) { checkServedDocument(t, e, fe, host) })
	}
}

// checkServedDocument checks the document of frontend fe, served on host.
func checkServedDocument(t *testing.T, e *harness.Edge, fe *edge.RouteTable, host string) {
	c := &http.Client{}
	r := sendHost(t, "GET", e.URL+"/openapi.json", host, "")
	if r.code != 200 || r.header.Get("Content-Type") != "application/json" || r.header.Get("Etag") == "" {
		t.Fatalf("%d %v", r.code, r.header)
	}
	golden := "testdata/demo." + fe.Frontend + ".openapi.json"
	if *updateGoldens {
		if err := os.WriteFile(golden, []byte(r.body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want, err := os.ReadFile(golden); err != nil || string(want) != r.body {
		t.Errorf("the document differs from %s (%v); go test ./integration -run TestOpenAPIDocument -update rewrites it", golden, err)
	}
	cond := sendHost(t, "GET", e.URL+"/openapi.json", host, "", "If-None-Match", r.header.Get("Etag"))
	if cond.code != 304 {
		t.Fatalf("with its ETag: %d", cond.code)
	}
	if y := sendHost(t, "GET", e.URL+"/openapi.yaml", host, ""); y.code != 200 || !strings.HasPrefix(y.body, "openapi: 3.1.0") {
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
	for _, rt := range fe.Routes() {
		if rt.Binding.HTTPMethod != "PURGE" {
			n++
		}
	}
	if ops != n {
		t.Errorf("%d operations in the document, %d routes served", ops, n)
	}
	if fe.Frontend == "web" {
		home := m.Model.Paths.PathItems.GetOrZero("/api/home/{user}")
		if home == nil || home.Get == nil {
			t.Fatal("the composed home screen is not in the document")
		}
		// A frontend proto is loaded from source: its comments describe.
		if !strings.Contains(home.Get.Description, "GET /api/home/alice?productIds=p-1") {
			t.Errorf("GetHome's description %q is not its comment", home.Get.Description)
		}
		// Its calls are described, and the header naming degraded ones.
		if !strings.Contains(home.Get.Description, "Composed by the edge from") {
			t.Errorf("GetHome's description does not list its calls: %q", home.Get.Description)
		}
		ok, _ := home.Get.Responses.Codes.Get("200")
		if h, _ := ok.Headers.Get("Portico-Partial"); h == nil {
			t.Error("GetHome's 200 does not declare the Portico-Partial header")
		}
		screen := m.Model.Components.Schemas.GetOrZero("portico.frontend.home.v1.HomeScreen").Schema()
		if d := screen.Properties.GetOrZero("partial").Schema().Description; !strings.Contains(d, "One entry per optional call that failed") {
			t.Errorf("HomeScreen.partial's description %q is not its comment", d)
		}
	}

	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	// Every operation of the document, called as the document says (path
	// parameters from samples, an empty JSON body where it takes one): the
	// answer, success or error, is what the document says it is.
	samples := map[string]string{"id": "p-1", "name": "alice", "order_id": "o-1001", "user_id": "alice", "text": "hi",
		"code": "5", "path": "a/b", "user": "alice", "name_1": "s1", "name_2": "b1", "segment2": "eu"}
	called := 0
	for path, item := range m.Model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			url := path
			for _, p := range op.Parameters {
				if p.In == "path" {
					url = strings.Replace(url, "{"+p.Name+"}", samples[p.Name], 1)
				}
			}
			var body io.Reader
			ctype := ""
			if op.RequestBody != nil {
				if _, ok := op.RequestBody.Content.Get("application/json"); ok {
					body, ctype = strings.NewReader("{}"), "application/json"
				} else {
					body, ctype = strings.NewReader("raw"), "text/plain"
				}
			}
			req, err := http.NewRequestWithContext(t.Context(), strings.ToUpper(method), e.URL+url, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = host
			if ctype != "" {
				req.Header.Set("Content-Type", ctype)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			called++
			if ok, _ := op.Responses.Codes.Get("200"); ok != nil && resp.StatusCode == 200 {
				if _, stream := ok.Content.Get("application/x-ndjson"); stream {
					// A stream's lines each validate as {"result": …}.
					if resp.Header.Get("Content-Type") != "application/x-ndjson" {
						t.Errorf("%s %s: a stream answered %s", method, url, resp.Header.Get("Content-Type"))
					}
					continue
				}
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
			ok, errs := v.ValidateHttpResponse(req, resp)
			if !ok && len(errs) == 1 && strings.Contains(errs[0].Message, "not found") {
				// The validator's router cannot match "{path}" holding
				// slashes (a "**" variable) or a ":verb" after a
				// parameter: check the body against the operation's
				// schema for its status directly.
				r := op.Responses.Default
				if byCode, _ := op.Responses.Codes.Get(strconv.Itoa(resp.StatusCode)); byCode != nil {
					r = byCode
				}
				media, _ := r.Content.Get("application/json")
				ok, errs = schema_validation.NewSchemaValidator().ValidateSchemaBytes(media.Schema.Schema(), b)
			}
			if ok {
				continue
			}
			for _, e := range errs {
				t.Errorf("%s %s (%d): %s: %s", method, url, resp.StatusCode, e.Message, e.Reason)
			}
		}
	}
	if called != ops {
		t.Errorf("called %d of %d operations", called, ops)
	}
	paths := []string{
		"/v1/users/alice", "/v1/users?pageSize=2", "/v1/products/p-1", "/v1/orders?userId=alice", "/v1/plans",
		"/v1/orders/o-1001", "/api/home/alice?productIds=p-1&productIds=p-2", "/v1/users/zed",
	}
	if fe.Frontend == "partner" {
		paths = []string{"/v1/products/p-1", "/v1/products?pageSize=2", "/v1/products/p-404"}
	}
	for _, path := range paths {
		req, err := http.NewRequestWithContext(t.Context(), "GET", e.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
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

// TestDocsPage loads GET /docs in headless Chromium (Debian's package; the
// test fails without it, as it does without redis-server) and checks that
// the page, built from the served document by its embedded script, lists
// every operation. PORTICO_DOCS_SCREENSHOT=file.png keeps a screenshot.
func TestDocsPage(t *testing.T) {
	t.Parallel()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (Debian: apt-get install chromium): %v", err)
	}
	be := harness.Services(t, []string{"users", "orders", "products", "accounts"}, nil)
	e := harness.Portico(t, func(c *app.Config) {
		c.Edge.Compose.ProtosDir = "../cmd/examples/demo/frontends"
		c.Edge.Docs = true
	}, be.Addr)
	c := &http.Client{}
	if r := do(t, c, "GET", e.URL+"/docs", ""); r.code != 200 || !strings.Contains(r.header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("/docs: %d %v", r.code, r.header)
	}
	if r := do(t, c, "GET", e.URL+"/docs/app.js", ""); r.code != 200 || r.header.Get("Content-Type") != "text/javascript; charset=utf-8" ||
		!strings.HasSuffix(r.body, "})();\n") {
		t.Fatalf("/docs/app.js: %d %v %.300s", r.code, r.header, r.body)
	}
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal([]byte(do(t, c, "GET", e.URL+"/openapi.json", "").body), &doc); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, item := range doc.Paths {
		for _, op := range item {
			ids = append(ids, op.OperationID)
		}
	}
	browse := func(extra ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
			"--disable-extensions", "--disable-sync", "--no-first-run", "--user-data-dir=" + t.TempDir(),
			"--virtual-time-budget=10000"}, extra...)
		cmd := exec.CommandContext(ctx, chromium, append(args, e.URL+"/docs")...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium: %v\n%s", err, stderr.String())
		}
		return string(out)
	}
	dom := browse("--dump-dom")
	if !strings.Contains(dom, fmt.Sprintf(`data-ready="%d"`, len(ids))) {
		t.Fatalf("the page did not list the document's %d operations:\n%.3000s", len(ids), dom)
	}
	for _, id := range ids {
		if !strings.Contains(dom, `id="`+id+`"`) {
			t.Errorf("operation %s is not on the page", id)
		}
	}
	if shot := os.Getenv("PORTICO_DOCS_SCREENSHOT"); shot != "" {
		browse("--screenshot="+shot, "--window-size=1280,1600")
	}
}
