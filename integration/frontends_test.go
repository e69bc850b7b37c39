package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge"
	"github.com/portico-dev/portico/integration/harness"
	"github.com/portico-dev/portico/policies"
)

// onHost is a GET with the request's Host set: the frontend it reaches.
func onHost(t *testing.T, url, host string) response {
	t.Helper()
	return sendHost(t, "GET", url, host, "")
}

// sendHost sends a request with its Host set, and hdr as name, value
// pairs.
func sendHost(t *testing.T, method, url, host, body string, hdr ...string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestFrontends: a web frontend (exclude mode, the default) and a partner
// frontend (include mode, chosen by Host) over the same services. The
// partner gets only the methods and fields tagged for it, in answers and
// in its OpenAPI document; a request naming a field it does not see is a
// 400; each request is one backend call; a host no frontend serves is a
// 404 when there is no default.
func TestFrontends(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	count := grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		calls.Add(1)
		return h(ctx, req)
	})
	be := harness.Services(t, []string{"products", "users"}, nil, count)
	frontends := func(def string) func(*app.Config) {
		return func(c *app.Config) {
			c.Edge.Frontends = []edge.FrontendConfig{{Name: "web"}, {Name: "partner", Mode: "include", Hosts: []string{"partner.test", "*.partners.test"},
				CORS: &policies.CORSConfig{AllowOrigins: []string{"https://portal.partner.example"}}}}
			c.Edge.DefaultFrontend = def
		}
	}
	e := harness.Portico(t, frontends("web"), be.Addr)
	if rej := e.Tables.Load().Rejected; len(rej) > 0 {
		t.Fatal(rej)
	}
	fields := func(body string) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		return m
	}

	web := onHost(t, e.URL+"/v1/products/p-1", "shop.test")
	if p := fields(web.body); web.code != 200 || p["description"] == nil || p["stock"] == nil || p["id"] != "p-1" {
		t.Fatalf("web: %d %s", web.code, web.body)
	}
	before := calls.Load()
	partner := onHost(t, e.URL+"/v1/products/p-1", "partner.test")
	if n := calls.Load() - before; n != 1 {
		t.Errorf("the partner's request made %d backend calls", n)
	}
	p := fields(partner.body)
	if partner.code != 200 || len(p) != 4 || p["id"] != "p-1" || p["name"] == nil || p["priceCents"] == nil || p["currency"] == nil {
		t.Fatalf("partner: %d %s; want id, name, priceCents and currency only", partner.code, partner.body)
	}
	if r := onHost(t, e.URL+"/v1/products?pageSize=2", "api.partners.test"); r.code != 200 || len(fields(r.body)["products"].([]any)) != 2 {
		t.Fatalf("partner list (a *.partners.test host): %d %.300s", r.code, r.body)
	}
	// A query parameter naming a field the partner does not see is as if
	// the field did not exist: ignored like any unknown parameter, never
	// passed on (on web, tags filters the list).
	if r, bogus := onHost(t, e.URL+"/v1/products?tags=nope", "partner.test"), onHost(t, e.URL+"/v1/products?bogus=nope", "partner.test"); r.code != 200 || r.body != bogus.body {
		t.Fatalf("a query naming a field the partner does not see: %d %.200s", r.code, r.body)
	}
	if r := onHost(t, e.URL+"/v1/products?tags=nope", "shop.test"); r.code != 200 || len(fields(r.body)["products"].([]any)) != 0 {
		t.Fatalf("web's tags filter: %d %.200s", r.code, r.body)
	}
	// A body naming a field the partner does not see: 400, as for any
	// unknown field; without it, the call goes through.
	if r := sendHost(t, "POST", e.URL+"/v1/products", "partner.test", `{"id":"p-new","name":"New","description":"hidden"}`); r.code != 400 ||
		!strings.Contains(r.body, `unknown field \"description\"`) {
		t.Fatalf("a body naming a field the partner does not see: %d %s", r.code, r.body)
	}
	if r := sendHost(t, "POST", e.URL+"/v1/products", "partner.test", `{"id":"p-new","name":"New"}`); r.code != 200 || len(fields(r.body)) != 4 {
		t.Fatalf("the partner's create: %d %s", r.code, r.body)
	}
	if r := onHost(t, e.URL+"/v1/users/alice", "partner.test"); r.code != 404 {
		t.Fatalf("a method not tagged for the partner: %d %s", r.code, r.body)
	}
	if r := onHost(t, e.URL+"/v1/users/alice", "shop.test"); r.code != 200 {
		t.Fatalf("the same method on web: %d %s", r.code, r.body)
	}

	// The partner's CORS default is its own: its portal may call it from a
	// browser; web has none (no policies.cors), so that origin gets no
	// CORS headers there.
	preflight := func(host string) string {
		req, err := http.NewRequestWithContext(t.Context(), "OPTIONS", e.URL+"/v1/products/p-1", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Origin", "https://portal.partner.example")
		req.Header.Set("Access-Control-Request-Method", "GET")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("Access-Control-Allow-Origin")
	}
	if got := preflight("partner.test"); got != "https://portal.partner.example" {
		t.Errorf("the partner's preflight: Access-Control-Allow-Origin %q", got)
	}
	if got := preflight("shop.test"); got != "" {
		t.Errorf("web's preflight from the partner's portal: Access-Control-Allow-Origin %q", got)
	}

	var doc struct {
		Paths      map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal([]byte(onHost(t, e.URL+"/openapi.json", "partner.test").body), &doc); err != nil {
		t.Fatal(err)
	}
	product := doc.Components.Schemas["portico.examples.products.v1.Product"].Properties
	if len(doc.Paths) != 2 || doc.Paths["/v1/products/{id}"]["get"] == nil || doc.Paths["/v1/products"]["post"] == nil || len(product) != 4 || product["description"] != nil {
		t.Fatalf("partner's document: paths %v, Product %v", doc.Paths, product)
	}
	if webDoc := onHost(t, e.URL+"/openapi.json", "shop.test"); len(webDoc.body) <= 2*len(onHost(t, e.URL+"/openapi.json", "partner.test").body) {
		t.Fatal("web's document is not the larger one")
	}

	strict := harness.Portico(t, frontends(""), be.Addr)
	if r := onHost(t, strict.URL+"/v1/products/p-1", "shop.test"); r.code != 404 || fields(r.body)["message"] != `no frontend serves host "shop.test"` {
		t.Fatalf("without a default frontend, an unknown host: %d %s", r.code, r.body)
	}
}

const catalogV1 = `
syntax = "proto3";
package cat.v1;
import "google/api/annotations.proto";
import "portico/v1/options.proto";

service Catalog {
  // GetItem is offered to partners.
  rpc GetItem(GetItemRequest) returns (Item) {
    option (google.api.http) = {get: "/v1/items/{id}"};
    option (portico.v1.method) = {frontends: ["partner"]};
  }
}

message GetItemRequest {
  string id = 1 [(portico.v1.field) = {frontends: ["partner"]}];
}

message Item {
  string id = 1 [(portico.v1.field) = {frontends: ["partner"]}];
  string name = 2 [(portico.v1.field) = {frontends: ["partner"]}];
}
`

// TestFrontendsNewField: a service redeployed with a new, untagged field
// (no edge restart): web gets it, in answers and in its document, once
// the service is reflected again; the partner, in include mode, never
// does. Each request is one backend call.
func TestFrontendsNewField(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	answer := func(md protoreflect.MethodDescriptor, req *dynamicpb.Message) (proto.Message, error) {
		calls.Add(1)
		item := dynamicpb.NewMessage(md.Output())
		fields := md.Output().Fields()
		item.Set(fields.ByName("id"), req.Get(req.Descriptor().Fields().ByName("id")))
		item.Set(fields.ByName("name"), protoreflect.ValueOfString("Item"))
		if f := fields.ByName("cost_cents"); f != nil {
			item.Set(f, protoreflect.ValueOfInt64(42))
		}
		return item, nil
	}
	v1 := harness.Dynamic(t, "", catalogV1, answer)
	e := harness.Portico(t, func(c *app.Config) {
		c.Edge.Frontends = []edge.FrontendConfig{{Name: "web"}, {Name: "partner", Mode: "include", Hosts: []string{"partner.test"}}}
		c.Edge.DefaultFrontend = "web"
		c.Mesh.RefreshInterval = 200 * time.Millisecond
	}, v1.Addr)
	if r := onHost(t, e.URL+"/v1/items/i-1", "shop.test"); r.code != 200 || r.body != `{"id":"i-1","name":"Item"}` {
		t.Fatalf("web before: %d %s", r.code, r.body)
	}
	v1.Server.Stop()
	harness.Dynamic(t, v1.Addr, strings.Replace(catalogV1, "string name = 2 [(portico.v1.field) = {frontends: [\"partner\"]}];",
		"string name = 2 [(portico.v1.field) = {frontends: [\"partner\"]}];\n  int64 cost_cents = 3;", 1), answer)
	eventually(t, 10*time.Second, "web's answer with the new field", func() bool {
		r := sendHostOK(e.URL+"/v1/items/i-1", "shop.test")
		return r == `{"id":"i-1","name":"Item","costCents":"42"}`
	})
	before := calls.Load()
	if r := onHost(t, e.URL+"/v1/items/i-1", "partner.test"); r.code != 200 || r.body != `{"id":"i-1","name":"Item"}` {
		t.Fatalf("partner after the redeploy: %d %s", r.code, r.body)
	}
	if n := calls.Load() - before; n != 1 {
		t.Errorf("the partner's request made %d backend calls", n)
	}
	web, partnerDoc := onHost(t, e.URL+"/openapi.json", "shop.test").body, onHost(t, e.URL+"/openapi.json", "partner.test").body
	if !strings.Contains(web, `"costCents"`) || strings.Contains(partnerDoc, `"costCents"`) {
		t.Fatalf("the new field in web's document: %v, in the partner's: %v", strings.Contains(web, `"costCents"`), strings.Contains(partnerDoc, `"costCents"`))
	}
	// The service reflects its file with its comments: they describe.
	if !strings.Contains(web, `"description": "GetItem is offered to partners."`) {
		t.Error("the reflected comment is not GetItem's description")
	}
}

// sendHostOK is a GET on host that reports "" for any failure: for
// conditions polled while a backend restarts.
func sendHostOK(url, host string) string {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return ""
	}
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return ""
	}
	return string(b)
}

// TestFrontendsCacheApart: a cached answer is rendered for one frontend's
// view and kept for it alone: web's cached answer, with every field, never
// answers the partner, who gets (and caches) its own.
func TestFrontendsCacheApart(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	src := strings.Replace(catalogV1, `option (portico.v1.method) = {frontends: ["partner"]};`,
		`option (portico.v1.method) = {frontends: ["partner"] cache: {ttl: {seconds: 60} public: true}};`, 1)
	src = strings.Replace(src, "string name = 2 [(portico.v1.field) = {frontends: [\"partner\"]}];",
		"string name = 2 [(portico.v1.field) = {frontends: [\"partner\"]}];\n  int64 cost_cents = 3;", 1)
	be := harness.Dynamic(t, "", src, func(md protoreflect.MethodDescriptor, req *dynamicpb.Message) (proto.Message, error) {
		calls.Add(1)
		item := dynamicpb.NewMessage(md.Output())
		item.Set(md.Output().Fields().ByName("id"), req.Get(req.Descriptor().Fields().ByName("id")))
		item.Set(md.Output().Fields().ByName("cost_cents"), protoreflect.ValueOfInt64(42))
		return item, nil
	})
	e := harness.Portico(t, func(c *app.Config) {
		c.Edge.Frontends = []edge.FrontendConfig{{Name: "web"}, {Name: "partner", Mode: "include", Hosts: []string{"partner.test"}}}
		c.Edge.DefaultFrontend = "web"
	}, be.Addr)
	for _, want := range []struct{ host, body, cache string }{
		{"shop.test", `{"id":"i-1","name":"","costCents":"42"}`, "MISS"},
		{"partner.test", `{"id":"i-1","name":""}`, "MISS"},
		{"shop.test", `{"id":"i-1","name":"","costCents":"42"}`, "HIT"},
		{"partner.test", `{"id":"i-1","name":""}`, "HIT"},
	} {
		r := onHost(t, e.URL+"/v1/items/i-1", want.host)
		if r.code != 200 || r.body != want.body || r.header.Get("Portico-Cache") != want.cache {
			t.Fatalf("%s: %d %s %s; want %s %s", want.host, r.code, r.header.Get("Portico-Cache"), r.body, want.cache, want.body)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d backend calls, want 2 (one per frontend)", n)
	}
}

// TestFrontendsByCaller: a frontend chosen by who calls: a verified JWT's
// claim (partner), an API key's source (kiosk, in include mode, which
// the products service offers nothing). A token without the claim, or one
// that does not verify, gets the default frontend.
func TestFrontendsByCaller(t *testing.T) {
	t.Parallel()
	idp := harness.NewIDP(t)
	const kioskKey = "sk-kiosk-0f9e8d7c6b5a49382716"
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(keys, []byte("- name: lobby\n  sha256: "+keyHash(kioskKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	be := harness.Services(t, []string{"products"}, nil)
	e := harness.Portico(t, func(c *app.Config) {
		withIDP(idp)(c)
		c.Policies.APIKeys = []policies.APIKeySource{{Name: "kiosks", File: keys}}
		c.Edge.Frontends = []edge.FrontendConfig{{Name: "web"}, {Name: "partner", Mode: "include", Claim: "client_type=partner"},
			{Name: "kiosk", Mode: "include", APIKeySource: "kiosks"}}
		c.Edge.DefaultFrontend = "web"
	}, be.Addr)
	c := harness.Client(t)
	get := func(hdr ...string) response {
		return do(t, c, "GET", e.URL+"/v1/products/p-1", "", hdr...)
	}
	partner := idp.Token("acme", map[string]any{"client_type": "partner"})
	if r := get(bearer(partner)...); r.code != 200 || len(jsonOf(t, r.body)) != 4 {
		t.Fatalf("a partner's token: %d %s", r.code, r.body)
	}
	for name, hdr := range map[string][]string{
		"no credential":      nil,
		"a token of another": bearer(idp.Token("alice", map[string]any{"client_type": "web"})),
		"a forged token":     bearer(partner[:len(partner)-4] + "AAAA"),
	} {
		if r := get(hdr...); r.code != 200 || jsonOf(t, r.body)["description"] == nil {
			t.Errorf("%s: %d %.200s; want web's answer", name, r.code, r.body)
		}
	}
	if r := get("X-API-Key", kioskKey); r.code != 404 {
		t.Fatalf("a kiosk's key: %d %s; want 404 (nothing is offered to kiosks)", r.code, r.body)
	}
}

// TestFrontendProviders: a frontend's routes accept the providers it names
// when their method names none: on the partner's host, the accounts
// methods take the partners' API keys and refuse the corporate JWT that
// web accepts. A provider no policy configures is refused at load.
func TestFrontendProviders(t *testing.T) {
	t.Parallel()
	idp := harness.NewIDP(t)
	const key = "sk-partner-5e4d3c2b1a0f9e8d7c6b"
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(keys, []byte("- name: acme\n  sha256: "+keyHash(key)+"\n  scopes: [accounts]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	be := harness.Services(t, []string{"accounts"}, nil)
	frontends := func(providers ...string) func(*app.Config) {
		return func(c *app.Config) {
			withIDP(idp)(c)
			c.Policies.APIKeys = []policies.APIKeySource{{Name: "partners", File: keys}}
			c.Edge.Frontends = []edge.FrontendConfig{{Name: "web"}, {Name: "partner", Hosts: []string{"partner.test"}, Providers: providers}}
			c.Edge.DefaultFrontend = "web"
		}
	}
	e := harness.Portico(t, frontends("partners"), be.Addr)
	c := harness.Client(t)
	whoami := func(host string, hdr ...string) response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), "GET", e.URL+"/v1/whoami", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
	}
	tok := idp.Token("alice", map[string]any{"scope": "accounts"})
	if r := whoami("shop.test", bearer(tok)...); r.code != 200 {
		t.Fatalf("web with the corporate JWT: %d %s", r.code, r.body)
	}
	if r := whoami("partner.test", bearer(tok)...); r.code != 401 || !strings.Contains(r.header.Get("Www-Authenticate"), "ApiKey") {
		t.Fatalf("the partner's host with the corporate JWT: %d %v %s", r.code, r.header.Get("Www-Authenticate"), r.body)
	}
	if r := whoami("partner.test", "X-API-Key", key); r.code != 200 {
		t.Fatalf("the partner's host with its API key: %d %s", r.code, r.body)
	}
	cfg := app.DefaultConfig()
	frontends("nope")(&cfg)
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `edge.frontends[1].providers: "nope" is not one of policies.jwt or policies.api_keys`) {
		t.Fatalf("an unknown provider: %v", err)
	}
}

const notesProto = `
syntax = "proto3";
package notes.v1;
import "google/api/annotations.proto";
import "google/protobuf/any.proto";
import "portico/v1/options.proto";

service Notes {
  rpc Post(Note) returns (Note) {
    option (google.api.http) = {post: "/v1/notes" body: "*"};
    option (portico.v1.method) = {frontends: ["partner"]};
  }
}

message Note {
  google.protobuf.Any payload = 1 [(portico.v1.field) = {frontends: ["partner"]}];
}

message Card {
  string title = 1 [(portico.v1.field) = {frontends: ["partner"]}];
  string margin = 2;
  string staff_note = 3 [(portico.v1.field) = {internal: true}];
}
`

// TestFrontendsAnyPayload: a message packed in a google.protobuf.Any is
// seen through the frontend's view like any other: the service's answer
// packs a Card with all its fields, web gets it without the internal
// field, the partner with only what is tagged for it; a request whose
// payload names a field the caller does not see is a 400.
func TestFrontendsAnyPayload(t *testing.T) {
	t.Parallel()
	var got atomic.Value // the last request's payload, as the service read it
	be := harness.Dynamic(t, "", notesProto, func(md protoreflect.MethodDescriptor, req *dynamicpb.Message) (proto.Message, error) {
		card := dynamicpb.NewMessage(md.ParentFile().Messages().ByName("Card"))
		for name, v := range map[string]string{"title": "Q3", "margin": "41%", "staff_note": "do not ship"} {
			card.Set(card.Descriptor().Fields().ByName(protoreflect.Name(name)), protoreflect.ValueOfString(v))
		}
		value, err := proto.Marshal(card)
		if err != nil {
			return nil, err
		}
		payloadField := md.Output().Fields().ByName("payload")
		if req.Has(payloadField) {
			in := req.Get(payloadField).Message()
			v := string(in.Get(in.Descriptor().Fields().ByName("value")).Bytes())
			got.Store(v)
			if strings.Contains(v, "fail") {
				// An error whose detail is the same Card.
				return nil, status.FromProto(&spb.Status{Code: int32(codes.FailedPrecondition), Message: "card refused",
					Details: []*anypb.Any{{TypeUrl: "type.googleapis.com/notes.v1.Card", Value: value}}}).Err()
			}
		}
		resp := dynamicpb.NewMessage(md.Output())
		anyMsg := resp.Mutable(payloadField).Message()
		anyMsg.Set(anyMsg.Descriptor().Fields().ByName("type_url"), protoreflect.ValueOfString("type.googleapis.com/notes.v1.Card"))
		anyMsg.Set(anyMsg.Descriptor().Fields().ByName("value"), protoreflect.ValueOfBytes(value))
		return resp, nil
	})
	e := harness.Portico(t, func(c *app.Config) {
		c.Edge.Frontends = []edge.FrontendConfig{{Name: "web"}, {Name: "partner", Mode: "include", Hosts: []string{"partner.test"}}}
		c.Edge.DefaultFrontend = "web"
	}, be.Addr)
	if rej := e.Tables.Load().Rejected; len(rej) > 0 {
		t.Fatal(rej)
	}
	const card = `"@type":"type.googleapis.com/notes.v1.Card"`
	web := sendHost(t, "POST", e.URL+"/v1/notes", "shop.test", `{"payload":{`+card+`,"title":"Q3","margin":"41%"}}`)
	if web.code != 200 || web.body != `{"payload":{`+card+`,"title":"Q3","margin":"41%"}}` {
		t.Fatalf("web: %d %s", web.code, web.body)
	}
	partner := sendHost(t, "POST", e.URL+"/v1/notes", "partner.test", `{"payload":{`+card+`,"title":"Q3"}}`)
	if partner.code != 200 || partner.body != `{"payload":{`+card+`,"title":"Q3"}}` {
		t.Fatalf("partner: %d %s", partner.code, partner.body)
	}
	if v, _ := got.Load().(string); !strings.Contains(v, "Q3") || strings.Contains(v, "41%") {
		t.Fatalf("the service read the partner's payload as %q", v)
	}
	// An error's details are rendered through the view as well.
	for host, want := range map[string]string{
		"shop.test":    `{"code":9,"message":"card refused","details":[{"@type":"type.googleapis.com/notes.v1.Card","title":"Q3","margin":"41%"}]}`,
		"partner.test": `{"code":9,"message":"card refused","details":[{"@type":"type.googleapis.com/notes.v1.Card","title":"Q3"}]}`,
	} {
		r := sendHost(t, "POST", e.URL+"/v1/notes", host, `{"payload":{`+card+`,"title":"fail"}}`)
		var compact bytes.Buffer
		_ = json.Compact(&compact, []byte(r.body)) // protojson spaces at random
		if r.code != 400 || compact.String() != want {
			t.Errorf("%s, an error with a Card detail: %d %s", host, r.code, r.body)
		}
	}
	for _, c := range []struct{ host, field string }{{"partner.test", "margin"}, {"partner.test", "staffNote"}, {"shop.test", "staffNote"}} {
		r := sendHost(t, "POST", e.URL+"/v1/notes", c.host, `{"payload":{`+card+`,"`+c.field+`":"x"}}`)
		if r.code != 400 || !strings.Contains(r.body, c.field) {
			t.Errorf("%s naming %s in the payload: %d %s", c.host, c.field, r.code, r.body)
		}
	}
}

const quotaProto = `
syntax = "proto3";
package quota.v1;
import "google/api/annotations.proto";
import "portico/v1/options.proto";

service Quota {
  rpc Ping(PingRequest) returns (PingRequest) {
    option (google.api.http) = {get: "/v1/ping"};
    option (portico.v1.method) = {
      frontends: ["partner"]
      rate_limit: {requests: 100 period: {seconds: 60} key: KEY_IP
                   tiers: [{value: "partner", requests: 5}]}
    };
  }
}

message PingRequest {}
`

// TestFrontendRateLimitTier: a frontend's rate_limit_tier picks the
// method's tier of that name for its callers (who carry no tier claim),
// in buckets of its own; another frontend's callers keep the base limit.
func TestFrontendRateLimitTier(t *testing.T) {
	t.Parallel()
	be := harness.Dynamic(t, "", quotaProto, func(md protoreflect.MethodDescriptor, _ *dynamicpb.Message) (proto.Message, error) {
		return dynamicpb.NewMessage(md.Output()), nil
	})
	e := harness.Portico(t, func(c *app.Config) {
		c.Edge.Frontends = []edge.FrontendConfig{{Name: "web"}, {Name: "partner", Mode: "include", Hosts: []string{"partner.test"}, RateLimitTier: "partner"}}
		c.Edge.DefaultFrontend = "web"
	}, be.Addr)
	if rej := e.Tables.Load().Rejected; len(rej) > 0 {
		t.Fatal(rej)
	}
	var codes []int
	var last response
	for range 6 {
		last = onHost(t, e.URL+"/v1/ping", "partner.test")
		codes = append(codes, last.code)
	}
	if want := []int{200, 200, 200, 200, 200, 429}; !slices.Equal(codes, want) {
		t.Fatalf("the partner's 6 calls: %v, want %v", codes, want)
	}
	if p := last.header.Get("RateLimit-Policy"); p != `"partner";q=5;w=60` {
		t.Errorf("the partner's RateLimit-Policy: %q", p)
	}
	// The same client through web: the base limit, a bucket of its own.
	for i := range 6 {
		r := onHost(t, e.URL+"/v1/ping", "shop.test")
		if r.code != 200 || r.header.Get("RateLimit-Policy") != `"default";q=100;w=60` {
			t.Fatalf("web's call %d: %d %q", i+1, r.code, r.header.Get("RateLimit-Policy"))
		}
	}
}

// TestFrontendsByListener: a frontend with a listener of its own serves
// every request that listener accepts, whatever its Host or credential;
// the public listener keeps choosing by its rules.
func TestFrontendsByListener(t *testing.T) {
	t.Parallel()
	idp := harness.NewIDP(t)
	be := harness.Services(t, []string{"products"}, nil)
	e := harness.Portico(t, func(c *app.Config) {
		withIDP(idp)(c)
		c.Edge.Frontends = []edge.FrontendConfig{{Name: "web", Hosts: []string{"shop.test"}},
			{Name: "partner", Mode: "include", Listen: "127.0.0.1:0", Claim: "client_type=partner"}}
		c.Edge.DefaultFrontend = "web"
	}, be.Addr)
	addr := e.Server.FrontendAddr("partner")
	if addr == nil {
		t.Fatal("the partner's listener has no address")
	}
	partnerURL := "http://" + addr.String()
	if e.Server.FrontendAddr("web") != nil {
		t.Fatal("web has a listener address without edge.frontends[].listen")
	}
	// web's Host and a web caller's token on the partner's listener: the
	// partner's answer (4 fields) and document.
	webToken := idp.Token("alice", map[string]any{"client_type": "web"})
	c := harness.Client(t)
	if r := do(t, c, "GET", partnerURL+"/v1/products/p-1", "", bearer(webToken)...); r.code != 200 || len(jsonOf(t, r.body)) != 4 {
		t.Fatalf("the partner's listener, a web caller's token: %d %s", r.code, r.body)
	}
	if r := onHost(t, partnerURL+"/v1/products/p-1", "shop.test"); r.code != 200 || len(jsonOf(t, r.body)) != 4 {
		t.Fatalf("the partner's listener, web's Host: %d %s", r.code, r.body)
	}
	if r := onHost(t, partnerURL+"/openapi.json", "shop.test"); r.code != 200 || strings.Contains(r.body, "/v1/assets") || !strings.Contains(r.body, "/v1/products/{id}") {
		t.Fatalf("the partner's listener's document: %d %.300s", r.code, r.body)
	}
	// The public listener: web by Host, the partner by its claim.
	if r := onHost(t, e.URL+"/v1/products/p-1", "shop.test"); r.code != 200 || jsonOf(t, r.body)["description"] == nil {
		t.Fatalf("the public listener, web's host: %d %s", r.code, r.body)
	}
	partner := idp.Token("acme", map[string]any{"client_type": "partner"})
	if r := do(t, c, "GET", e.URL+"/v1/products/p-1", "", bearer(partner)...); r.code != 200 || len(jsonOf(t, r.body)) != 4 {
		t.Fatalf("the public listener, a partner's token: %d %s", r.code, r.body)
	}
	// A method the partner does not see is a 404 on its listener.
	if r := onHost(t, partnerURL+"/v1/assets/logo.png", "shop.test"); r.code != 404 {
		t.Fatalf("a method hidden from the partner, on its listener: %d %s", r.code, r.body)
	}
}
