package integration

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge/compose"
	"github.com/portico-dev/portico/integration/harness"
	"github.com/portico-dev/portico/policies"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
	usersv1 "github.com/portico-dev/portico/protos/examples/users/v1"
)

// writeFrontend writes one frontend proto into a directory of its own.
func writeFrontend(tb testing.TB, name, src string) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// composeEdge is Portico over the example services with the frontend
// protos of testdata/frontends.
func composeEdge(t *testing.T) *harness.Edge {
	be := harness.Services(t, []string{"users", "orders", "products"}, nil)
	return harness.Portico(t, func(c *app.Config) { c.Edge.Compose.ProtosDir = "testdata/frontends" }, be.Addr)
}

// TestComposeHome: one GET answered by five calls (one after another's
// answer, one a fan-out), each answer in its field of the typed response.
func TestComposeHome(t *testing.T) {
	e := composeEdge(t)
	c := &http.Client{}
	r := do(t, c, "GET", e.URL+"/api/home/alice?user_name=users/alice&product_ids=p-1&product_ids=p-2&featured=p-3", "")
	if r.code != 200 || r.header.Get("Portico-Partial") != "" {
		t.Fatalf("%d %v %s", r.code, r.header, r.body)
	}
	home := jsonOf(t, r.body)
	profile, _ := home["profile"].(map[string]any)
	again, _ := home["again"].(map[string]any)
	products, _ := home["products"].([]any)
	orders, _ := home["orders"].(map[string]any)
	featured, _ := home["featured"].(map[string]any)
	if profile["name"] != "users/alice" || again["name"] != "users/alice" || len(products) != 2 ||
		products[1].(map[string]any)["id"] != "p-2" || featured["id"] != "p-3" || len(home["partial"].([]any)) != 0 {
		t.Fatalf("home %s", r.body)
	}
	if list, _ := orders["orders"].([]any); len(list) == 0 || list[0].(map[string]any)["userId"] != "alice" {
		t.Fatalf("orders %v", orders)
	}
}

// TestComposeDegraded: optional calls that fail leave a 200 with their
// fallbacks (the last good answer, a literal, or nothing), the
// Portico-Partial header and an entry each in the response's partial list.
func TestComposeDegraded(t *testing.T) {
	people := harness.Services(t, []string{"users", "orders"}, nil)
	catalog := harness.Services(t, []string{"products"}, nil)
	e, logs := harness.PorticoLogged(t, func(c *app.Config) { c.Edge.Compose.ProtosDir = "testdata/frontends" }, people.Addr, catalog.Addr)
	c := &http.Client{}
	const first = "/api/home/alice?user_name=users/alice&product_ids=p-1&featured=p-3"
	if r := do(t, c, "GET", e.URL+first, ""); r.code != 200 || r.header.Get("Portico-Partial") != "" {
		t.Fatalf("%d %q %s", r.code, r.header.Get("Portico-Partial"), r.body)
	}
	r := do(t, c, "GET", e.URL+"/api/home/alice?user_name=users/alice&product_ids=nope&featured=gone", "")
	if r.code != 200 || r.header.Get("Portico-Partial") != "products, featured" {
		t.Fatalf("%d Portico-Partial %q %s", r.code, r.header.Get("Portico-Partial"), r.body)
	}
	home := jsonOf(t, r.body)
	if f := home["featured"].(map[string]any); f["name"] != "Nothing featured today" || home["products"] != nil && len(home["products"].([]any)) != 0 {
		t.Fatalf("home %s", r.body)
	}
	partial := home["partial"].([]any)
	p0, p1 := partial[0].(map[string]any), partial[1].(map[string]any)
	if len(partial) != 2 || p0["call"] != "products" || p0["code"] != "NOT_FOUND" || p0["fallback"] != "none" ||
		p0["message"] != `call products: element 0: product "nope" not found` ||
		p1["call"] != "featured" || p1["fallback"] != "literal" || !strings.Contains(p1["message"].(string), "gone") {
		t.Fatalf("partial %v", partial)
	}
	degraded := 0
	for _, en := range logs.FilterMessage("request").All() {
		if en.ContextMap()["degraded"] == "products, featured" {
			degraded++
		}
	}
	if degraded != 1 {
		t.Fatalf("%d access log lines name the degraded calls, want 1", degraded)
	}
	fams := scrape(t, e.AdminURL)
	if v := value(fams, "portico_compose_calls_total", map[string]string{"route": "/api/home/{user}", "call": "featured", "grpc_code": "NotFound", "fallback": "literal"}); v != 1 {
		t.Fatalf("portico_compose_calls_total for the degraded featured call: %v", v)
	}
	if v := value(fams, "portico_compose_calls_total", map[string]string{"route": "/api/home/{user}", "call": "profile", "grpc_code": "OK", "fallback": ""}); v != 2 {
		t.Fatalf("portico_compose_calls_total for profile: %v", v)
	}
	// With the products service gone, the first request's products come
	// from its last good answer.
	catalog.Server.Stop()
	r = do(t, c, "GET", e.URL+first, "")
	if r.code != 200 || r.header.Get("Portico-Partial") != "products, featured" {
		t.Fatalf("%d %q %s", r.code, r.header.Get("Portico-Partial"), r.body)
	}
	home = jsonOf(t, r.body)
	products, _ := home["products"].([]any)
	partial = home["partial"].([]any)
	if len(products) != 1 || products[0].(map[string]any)["id"] != "p-1" || partial[0].(map[string]any)["fallback"] != "last_good" ||
		partial[0].(map[string]any)["code"] != "UNAVAILABLE" || home["profile"].(map[string]any)["name"] != "users/alice" {
		t.Fatalf("home %s", r.body)
	}
}

// TestComposeRequiredFails: a required call's status is the answer, named
// after the call.
func TestComposeRequiredFails(t *testing.T) {
	e := composeEdge(t)
	r := do(t, &http.Client{}, "GET", e.URL+"/api/home/zed?user_name=users/zed", "")
	wantStatus(t, r, 404, 5, `call profile: user "users/zed" not found`)
}

// TestComposeRejected: each broken composition is rejected alone with its
// position, and the others are served.
func TestComposeRejected(t *testing.T) {
	e := composeEdge(t)
	var got []string
	for _, err := range e.Tables.Load().Rejected {
		if ce := (*compose.Error)(nil); errors.As(err, &ce) {
			got = append(got, err.Error())
		}
	}
	for _, want := range []string{
		`home/v1/broken.proto:14:`, `calls[0].method: "portico.examples.users.v1.UserService/GetUsr": no service the edge serves has this method`,
		`Broken.Cycle: option (portico.v1.compose).calls: the calls depend on each other in a cycle: a → b → a`,
		`Broken.WrongType: option (portico.v1.compose).calls[0]: request[0]: request.n does not fit name: n (int32) and name (string) are different types`,
		`Broken.Overlap: option (portico.v1.compose).calls[1].target: "user" overlaps the target of another call`,
		`home/v1/broken.proto:41:39: method portico.frontend.broken.v1.Broken.BadExpr: option (portico.v1.compose).calls[0].request[0].expr: <input>:1:11: found no matching overload`,
		`Broken.TwoWrites: option (portico.v1.compose).calls[1].method: "portico.examples.users.v1.UserService/DeleteUser" is not idempotent (no GET binding, no idempotency_level), nor is call a's "portico.examples.users.v1.UserService/CreateUser": a composition makes at most one such call`,
	} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("no rejection with %q in:\n%s", want, strings.Join(got, "\n"))
		}
	}
	if r := do(t, &http.Client{}, "GET", e.URL+"/api/broken/cycle", ""); r.code != 404 {
		t.Fatalf("a rejected composition answered %d", r.code)
	}
}

const slowFrontend = `
syntax = "proto3";
package portico.frontend.slow.v1;
import "examples/products/v1/products.proto";
import "examples/users/v1/users.proto";
import "google/api/annotations.proto";
import "portico/v1/options.proto";

service Slow {
  rpc Optional(Req) returns (Resp) {
    option (google.api.http) = {get: "/api/slow/optional"};
    option (portico.v1.compose) = {
      timeout: {seconds: 3}
      calls: {name: "fast" method: "portico.examples.products.v1.ProductService/GetProduct" request: {field: "id" from: "request.id"} target: "product"}
      calls: {name: "slow" method: "portico.examples.users.v1.UserService/GetUser" request: {field: "name" from: "request.name"}
              target: "user" optional: true timeout: {nanos: 200000000}}
    };
  }
  rpc Budget(Req) returns (Resp) {
    option (google.api.http) = {get: "/api/slow/budget"};
    // The composition's budget wins over the method's policy timeout.
    option (portico.v1.method) = {timeout: {seconds: 3}};
    option (portico.v1.compose) = {
      timeout: {nanos: 500000000}
      calls: {name: "slow" method: "portico.examples.users.v1.UserService/GetUser" request: {field: "name" from: "request.name"} target: "user"}
    };
  }
  rpc Required(Req) returns (Resp) {
    option (google.api.http) = {get: "/api/slow/required"};
    option (portico.v1.compose) = {
      timeout: {seconds: 3}
      calls: {name: "slow" method: "portico.examples.users.v1.UserService/GetUser" request: {field: "name" from: "request.name"} target: "user"}
      calls: {name: "missing" method: "portico.examples.products.v1.ProductService/GetProduct" request: {field: "id" from: "request.id"} target: "product"}
    };
  }
}

message Req {
  string id = 1;
  string name = 2;
}

message Resp {
  portico.examples.products.v1.Product product = 1;
  portico.examples.users.v1.User user = 2;
  repeated portico.v1.PartialResult partial = 3;
}
`

// seen is what a slow service saw of one call: the deadline it was given
// and whether the call was cancelled before its 5 s were up.
type seen struct {
	deadline  time.Duration
	cancelled bool
}

// TestComposeTimeouts: an optional call past its own timeout degrades
// (its service sees the cancellation); a required one past the
// composition's budget is a 504 and its service was given no more than
// the budget; a required call's NOT_FOUND is a 404 and cancels the others.
func TestComposeTimeouts(t *testing.T) {
	calls := make(chan seen, 8)
	// The required case's failing call waits until its slow sibling has
	// reached its service: only a call in flight can be seen cancelled.
	siblingArrived := make(chan struct{})
	slow := grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if r, ok := req.(*usersv1.GetUserRequest); ok && r.GetName() == "users/sibling" {
			close(siblingArrived)
		}
		d, _ := ctx.Deadline()
		s := seen{deadline: time.Until(d)}
		select {
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
			s.cancelled = true
		}
		calls <- s
		if s.cancelled {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return h(ctx, req)
	})
	afterSibling := grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if r, ok := req.(*productsv1.GetProductRequest); ok && r.GetId() == "nope" {
			select {
			case <-siblingArrived:
			case <-ctx.Done():
			}
		}
		return h(ctx, req)
	})
	next := func() seen {
		t.Helper()
		select {
		case s := <-calls:
			return s
		case <-time.After(20 * time.Second):
			t.Fatal("the slow service saw no call")
			return seen{}
		}
	}
	people := harness.Services(t, []string{"users"}, nil, slow)
	catalog := harness.Services(t, []string{"products"}, nil, afterSibling)
	dir := writeFrontend(t, "slow.proto", slowFrontend)
	e := harness.Portico(t, func(c *app.Config) { c.Edge.Compose.ProtosDir = dir }, people.Addr, catalog.Addr)
	if rej := e.Tables.Load().Rejected; len(rej) > 0 {
		t.Fatal(rej)
	}
	c := &http.Client{}

	start := time.Now()
	r := do(t, c, "GET", e.URL+"/api/slow/optional?id=p-1&name=users/alice", "")
	t.Logf("FIGURE an optional call of 5 s with a 200 ms timeout: answered in %v", time.Since(start).Round(time.Millisecond))
	if r.code != 200 || r.header.Get("Portico-Partial") != "slow" {
		t.Fatalf("%d %q %s", r.code, r.header.Get("Portico-Partial"), r.body)
	}
	resp := jsonOf(t, r.body)
	entry := resp["partial"].([]any)[0].(map[string]any)
	if resp["product"].(map[string]any)["id"] != "p-1" || entry["code"] != "DEADLINE_EXCEEDED" ||
		entry["message"] != "call slow: no answer within its timeout of 200ms" {
		t.Fatalf("%s", r.body)
	}
	if s := next(); !s.cancelled || s.deadline > 200*time.Millisecond {
		t.Fatalf("the slow service saw deadline %v, cancelled %v", s.deadline, s.cancelled)
	}

	start = time.Now()
	r = do(t, c, "GET", e.URL+"/api/slow/budget?name=users/alice", "")
	t.Logf("FIGURE a 500 ms budget over a 5 s call: %d in %v", r.code, time.Since(start).Round(time.Millisecond))
	wantStatus(t, r, 504, 4, "call slow: the composite request's deadline passed")
	s := next()
	if !s.cancelled || s.deadline > 500*time.Millisecond {
		t.Fatalf("the slow service saw deadline %v, cancelled %v", s.deadline, s.cancelled)
	}
	t.Logf("FIGURE the slow service was given a deadline of %v", s.deadline.Round(time.Millisecond))

	r = do(t, c, "GET", e.URL+"/api/slow/required?id=nope&name=users/sibling", "")
	wantStatus(t, r, 404, 5, `call missing: product "nope" not found`)
	if s := next(); !s.cancelled {
		t.Fatal("the sibling of a failed required call was not cancelled")
	}
}

// TestDemoHome runs the demo's home screen (its frontend proto, the tour's
// curl lines) against the example services, one of them slow on request
// as the demo's Grpc-Metadata-X-Demo-Slow header makes it.
func TestDemoHome(t *testing.T) {
	slowOnRequest := grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("x-demo-slow")) > 0 {
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		return h(ctx, req)
	})
	people := harness.Services(t, []string{"users", "products", "accounts"}, nil)
	orders := harness.Services(t, []string{"orders"}, nil, slowOnRequest)
	e := harness.Portico(t, func(c *app.Config) { c.Edge.Compose.ProtosDir = "../cmd/examples/demo/frontends" }, people.Addr, orders.Addr)
	if rej := e.Tables.Load().Rejected; len(rej) > 0 {
		t.Fatal(rej)
	}
	c := &http.Client{}
	r := do(t, c, "GET", e.URL+"/api/home/alice?productIds=p-1&productIds=p-2", "")
	home := jsonOf(t, r.body)
	if r.code != 200 || home["profile"].(map[string]any)["name"] != "users/alice" || len(home["recommended"].([]any)) != 2 ||
		len(home["recentOrders"].(map[string]any)["orders"].([]any)) == 0 || len(home["partial"].([]any)) != 0 ||
		len(home["plans"].(map[string]any)["plans"].([]any)) < 2 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	r = do(t, c, "GET", e.URL+"/api/home/alice?productIds=p-1", "", "Grpc-Metadata-X-Demo-Slow", "orders")
	home = jsonOf(t, r.body)
	if r.code != 200 || r.header.Get("Portico-Partial") != "orders" || home["partial"].([]any)[0].(map[string]any)["code"] != "DEADLINE_EXCEEDED" ||
		home["partial"].([]any)[0].(map[string]any)["fallback"] != "empty" || home["recentOrders"] == nil {
		t.Fatalf("%d %v %s", r.code, r.header, r.body)
	}
	wantStatus(t, do(t, c, "GET", e.URL+"/api/home/zed", ""), 404, 5, `call profile: user "users/zed" not found`)
}

const guardedFrontend = `
syntax = "proto3";
package portico.frontend.guard.v1;
import "examples/accounts/v1/accounts.proto";
import "google/api/annotations.proto";
import "portico/v1/options.proto";

service Guard {
  rpc Open(Req) returns (Resp) {
    option (google.api.http) = {get: "/api/guard/open"};
    option (portico.v1.compose) = {
      calls: {name: "acct" method: "portico.examples.accounts.v1.AccountService/GetAccount" request: {field: "id" from: "request.id"} target: "account"}
    };
  }
  rpc Plans(Req) returns (Resp) {
    option (google.api.http) = {get: "/api/guard/plans"};
    option (portico.v1.compose) = {
      calls: {name: "plans" method: "portico.examples.accounts.v1.AccountService/ListPlans" target: "plans"}
    };
  }
  rpc Hidden(Req) returns (Resp) {
    option (google.api.http) = {post: "/api/guard/hidden" body: "*"};
    option (portico.v1.method) = {auth: {scopes: ["accounts"]}};
    option (portico.v1.compose) = {
      calls: {name: "acct" method: "portico.examples.accounts.v1.AccountService/CreateAccount" request: {field: "risk_score" from: "request.id"} target: "account"}
    };
  }
}

message Req {
  string id = 1;
}

message Resp {
  portico.examples.accounts.v1.Account account = 1;
  portico.examples.accounts.v1.ListPlansResponse plans = 2;
}
`

// TestComposeGuards: a composition cannot call a method more openly than
// the method's own route allows (its chain does not run for the call), and
// sees the services without their internal fields.
func TestComposeGuards(t *testing.T) {
	idp := harness.NewIDP(t)
	be := harness.Services(t, []string{"accounts"}, nil)
	dir := writeFrontend(t, "guard.proto", guardedFrontend)
	e := harness.Portico(t, func(c *app.Config) {
		c.Edge.Compose.ProtosDir = dir
		c.Policies.JWT = []policies.JWTProvider{{Name: "corp", Issuer: idp.Issuer, Audiences: []string{"portico"}, JWKSURL: idp.URL}}
	}, be.Addr)
	var got []string
	for _, err := range e.Tables.Load().Rejected {
		got = append(got, err.Error())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		`Guard.Open rejected: guard.proto:9:3: option (portico.v1.compose).calls[0]: calls portico.examples.accounts.v1.AccountService/GetAccount, but it has an allow_if rule`,
		`Guard.Hidden: option (portico.v1.compose).calls[0]: request[0]: field "risk_score": no field "risk_score" in portico.examples.accounts.v1.CreateAccountRequest`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no rejection with %q in:\n%s", want, all)
		}
	}
	// ListPlans is public: composing it needs no credential.
	if strings.Contains(all, "Guard.Plans") {
		t.Errorf("the public method's composition was rejected:\n%s", all)
	}
	r := do(t, &http.Client{}, "GET", e.URL+"/api/guard/plans", "")
	if plans, _ := jsonOf(t, r.body)["plans"].(map[string]any); r.code != 200 || len(plans) == 0 {
		t.Fatalf("%d %s", r.code, r.body)
	}
}

// TestComposeTraced: with spans exported, each call of a composition is a
// span under the request's server span and over its client spans (a
// fan-out's one per element), and a dependent call's span starts after
// its dependency's ended.
func TestComposeTraced(t *testing.T) {
	recv := startOTLP(t)
	be := harness.Services(t, []string{"users", "orders", "products"}, nil)
	e := harness.Portico(t, func(c *app.Config) {
		c.Edge.Compose.ProtosDir = "testdata/frontends"
		c.Edge.Tracing.Exporter, c.Edge.Tracing.Endpoint, c.Edge.Tracing.Insecure = "otlp", recv.addr, true
		c.Edge.Tracing.TrustIncoming = []string{"private"}
	}, be.Addr)
	const traceID = "5bf92f3577b34da6a3ce929d0e0e4736"
	r := do(t, &http.Client{}, "GET", e.URL+"/api/home/alice?user_name=users/alice&product_ids=p-1&product_ids=p-2&featured=p-3", "",
		"Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	calls := map[string]int{"profile": 1, "again": 1, "orders": 1, "products": 2, "featured": 1}
	var spans []*tracepb.Span
	eventually(t, 10*time.Second, "every span of the composed request at the collector", func() bool {
		spans = recv.trace(traceID)
		return len(spans) == 1+len(calls)+6
	})
	var server *tracepb.Span
	byName := map[string]*tracepb.Span{}
	for _, s := range spans {
		switch s.Kind {
		case tracepb.Span_SPAN_KIND_SERVER:
			server = s
		case tracepb.Span_SPAN_KIND_INTERNAL:
			byName[strings.TrimPrefix(s.Name, "compose ")] = s
		}
	}
	if server == nil {
		t.Fatal("no server span")
	}
	for call, clients := range calls {
		cs := byName[call]
		if cs == nil || !hexEq(cs.ParentSpanId, server.SpanId) {
			t.Fatalf("call %s: span %v, want a child of the server span", call, cs)
		}
		n := 0
		for _, s := range spans {
			if s.Kind == tracepb.Span_SPAN_KIND_CLIENT && hexEq(s.ParentSpanId, cs.SpanId) {
				n++
			}
		}
		if n != clients {
			t.Errorf("call %s: %d client spans under its span, want %d", call, n, clients)
		}
	}
	if byName["again"].StartTimeUnixNano < byName["profile"].EndTimeUnixNano {
		t.Errorf("call again started before profile, which it reads, ended")
	}
}

const retryFrontend = `
syntax = "proto3";
package portico.frontend.retry.v1;
import "examples/products/v1/products.proto";
import "google/api/annotations.proto";
import "portico/v1/options.proto";

service Retry {
  rpc Get(Req) returns (Resp) {
    option (google.api.http) = {get: "/api/retry/{id}"};
    option (portico.v1.compose) = {
      calls: {name: "product" method: "portico.examples.products.v1.ProductService/GetProduct" request: {field: "id" from: "request.id"} target: "product"}
      calls: {name: "create" method: "portico.examples.products.v1.ProductService/CreateProduct" target: "created" optional: true}
    };
  }
}

message Req {
  string id = 1;
}

message Resp {
  portico.examples.products.v1.Product product = 1;
  portico.examples.products.v1.Product created = 2;
  repeated portico.v1.PartialResult partial = 3;
}
`

// TestComposeRetries: a call of an idempotent method (a GET) that fails
// with UNAVAILABLE is retried, within its method's budget; the one call
// of a method that is not idempotent is made once and degrades.
func TestComposeRetries(t *testing.T) {
	var mu sync.Mutex
	attempts := map[string]int{}
	flaky := grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		mu.Lock()
		attempts[info.FullMethod]++
		n := attempts[info.FullMethod]
		mu.Unlock()
		if n == 1 {
			return nil, status.Error(codes.Unavailable, "not yet")
		}
		return h(ctx, req)
	})
	be := harness.Services(t, []string{"products"}, nil, flaky)
	dir := writeFrontend(t, "retry.proto", retryFrontend)
	e := harness.Portico(t, func(c *app.Config) { c.Edge.Compose.ProtosDir = dir }, be.Addr)
	if rej := e.Tables.Load().Rejected; len(rej) > 0 {
		t.Fatal(rej)
	}
	r := do(t, &http.Client{}, "GET", e.URL+"/api/retry/p-1", "")
	resp := jsonOf(t, r.body)
	if r.code != 200 || r.header.Get("Portico-Partial") != "create" || resp["product"].(map[string]any)["id"] != "p-1" ||
		resp["partial"].([]any)[0].(map[string]any)["code"] != "UNAVAILABLE" {
		t.Fatalf("%d %q %s", r.code, r.header.Get("Portico-Partial"), r.body)
	}
	mu.Lock()
	get, create := attempts["/portico.examples.products.v1.ProductService/GetProduct"], attempts["/portico.examples.products.v1.ProductService/CreateProduct"]
	mu.Unlock()
	if get != 2 || create != 1 {
		t.Fatalf("GetProduct was tried %d times (want 2: retried), CreateProduct %d (want 1: never retried)", get, create)
	}
	if v := value(scrape(t, e.AdminURL), "portico_upstream_retries_total", map[string]string{"outcome": "retried"}); v != 1 {
		t.Fatalf("portico_upstream_retries_total{outcome=retried} %v, want 1", v)
	}
}

const helloFrontend = `
syntax = "proto3";
package portico.frontend.hello.v1;
import "examples/users/v1/users.proto";
import "google/api/annotations.proto";
import "portico/v1/options.proto";

service Hello {
  rpc Hello(Req) returns (Resp) {
    option (google.api.http) = {get: "/api/hello/{user}"};
    option (portico.v1.compose) = {
      calls: {name: "user" method: "portico.examples.users.v1.UserService/GetUser" request: {field: "name" expr: "'users/' + request.user"} target: "user"}
    };
  }
}

message Req {
  string user = 1;
}

message Resp {
  portico.examples.users.v1.User user = 1;
}
`

// TestFrontendsReload: portico serve reads the frontend protos again on
// SIGHUP (here its poll would take an hour): a new file's composition is
// served, and a broken one is rejected with its position while the
// services' routes keep serving.
func TestFrontendsReload(t *testing.T) {
	t.Parallel()
	bin := harness.BuildPortico(t)
	b := harness.Services(t, []string{"users"}, nil)
	dir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "portico.yaml")
	if err := os.WriteFile(cfg, []byte("edge:\n  drain_delay: 0s\n  compose:\n    protos_dir: "+dir+"\n    poll_interval: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, adm := harness.FreePort(t), harness.FreePort(t)
	p := harness.StartProcess(t, bin, "serve", "--config", cfg, "--listen", pub, "--admin-listen", adm, "--upstream", b.Addr, "--plaintext-upstream")
	c := harness.Client(t)
	eventually(t, 20*time.Second, "serving the users service", func() bool {
		resp, err := c.Get("http://" + pub + "/v1/users/alice")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if r := do(t, c, "GET", "http://"+pub+"/api/hello/alice", ""); r.code != 404 {
		t.Fatalf("before the file: %d", r.code)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello.proto"), []byte(helloFrontend), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !p.WaitOutput("frontend protos reloaded", 10*time.Second) {
		t.Fatalf("no reload logged:\n%s", p.Output())
	}
	r := do(t, c, "GET", "http://"+pub+"/api/hello/alice", "")
	if user, _ := jsonOf(t, r.body)["user"].(map[string]any); r.code != 200 || user["name"] != "users/alice" {
		t.Fatalf("after SIGHUP: %d %s", r.code, r.body)
	}
	broken := strings.Replace(helloFrontend, `'users/' + request.user`, `'users/' + request.usr`, 1)
	if err := os.WriteFile(filepath.Join(dir, "hello.proto"), []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.Signal(syscall.SIGHUP)
	if !p.WaitOutput(`hello.proto:12:108: method portico.frontend.hello.v1.Hello.Hello: option (portico.v1.compose).calls[0].request[0].expr: <input>:1:19: undefined field 'usr'`, 10*time.Second) {
		t.Fatalf("the broken expression was not rejected with its position:\n%s", p.Output())
	}
	// The rejection is logged while the table is built; it serves once
	// swapped in, which the next line says.
	if !p.WaitOutput(`"msg":"route table built","routes":8,"rejected":1`, 10*time.Second) {
		t.Fatalf("no table without the broken composition:\n%s", p.Output())
	}
	if r := do(t, c, "GET", "http://"+pub+"/api/hello/alice", ""); r.code != 404 {
		t.Fatalf("the broken composition answered %d", r.code)
	}
	if r := do(t, c, "GET", "http://"+pub+"/v1/users/alice", ""); r.code != 200 {
		t.Fatalf("the service's own route after the broken reload: %d", r.code)
	}
}

const meFrontend = `
syntax = "proto3";
package portico.frontend.me.v1;
import "examples/accounts/v1/accounts.proto";
import "google/api/annotations.proto";
import "portico/v1/options.proto";

service Me {
  rpc Me(Req) returns (Resp) {
    option (google.api.http) = {get: "/api/me"};
    option (portico.v1.method) = {auth: {scopes: ["accounts"]}};
    option (portico.v1.compose) = {
      calls: {name: "who" method: "portico.examples.accounts.v1.AccountService/WhoAmI" target: "who"}
    };
  }
}

message Req {}

message Resp {
  portico.examples.accounts.v1.WhoAmIResponse who = 1;
}
`

// TestComposeThroughMesh: the demo's home screen over mesh-native services
// found through Consul, every call over mTLS as Portico's identity; the
// composed method's own auth runs and its calls carry the caller's
// identity (never a client's forged one); an intention that denies Portico
// the orders service degrades that call with PERMISSION_DENIED.
func TestComposeThroughMesh(t *testing.T) {
	t.Parallel()
	agent := harness.Consul(t)
	for _, s := range []string{"users", "orders", "products", "accounts"} {
		harness.Native(t, agent, s, harness.NativeOptions{})
	}
	home, err := os.ReadFile("../cmd/examples/demo/frontends/home/v1/home.proto")
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFrontend(t, "me.proto", meFrontend)
	if err := os.WriteFile(filepath.Join(dir, "home.proto"), home, 0o600); err != nil {
		t.Fatal(err)
	}
	idp := harness.NewIDP(t)
	e := harness.Portico(t, func(c *app.Config) {
		harness.ConsulConfig(agent)(c)
		withIDP(idp)(c)
		c.Edge.Compose.ProtosDir = dir
	})
	c := harness.Client(t)
	var r response
	eventually(t, 20*time.Second, "the home screen, whole, over the mesh", func() bool {
		r = do(t, c, "GET", e.URL+"/api/home/alice?productIds=p-1&productIds=p-2", "")
		return r.code == 200 && r.header.Get("Portico-Partial") == ""
	})
	h := jsonOf(t, r.body)
	if h["profile"].(map[string]any)["name"] != "users/alice" || len(h["recommended"].([]any)) != 2 ||
		len(h["recentOrders"].(map[string]any)["orders"].([]any)) == 0 || len(h["plans"].(map[string]any)["plans"].([]any)) < 2 {
		t.Fatalf("home %s", r.body)
	}

	if r := do(t, c, "GET", e.URL+"/api/me", ""); r.code != 401 {
		t.Fatalf("without a credential: %d %s", r.code, r.body)
	}
	tok := idp.Token("alice", map[string]any{"scope": "accounts"})
	r = do(t, c, "GET", e.URL+"/api/me", "", append(bearer(tok), "Grpc-Metadata-X-Portico-Subject", "mallory")...)
	who, _ := jsonOf(t, r.body)["who"].(map[string]any)
	md, _ := who["metadata"].(map[string]any)
	if r.code != 200 || md["x-portico-subject"] != "alice" || md["x-portico-provider"] != "corp" {
		t.Fatalf("the call's identity: %d %s", r.code, r.body)
	}

	if _, err := agent.Client().Connect().IntentionUpsert(&api.Intention{
		SourceName: "portico", DestinationName: "orders", Action: api.IntentionActionDeny,
	}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the orders call denied and degraded", func() bool {
		r = do(t, c, "GET", e.URL+"/api/home/alice", "")
		return r.code == 200 && r.header.Get("Portico-Partial") == "orders"
	})
	p := jsonOf(t, r.body)["partial"].([]any)[0].(map[string]any)
	if p["code"] != "PERMISSION_DENIED" || !strings.Contains(p["message"].(string), "intentions deny portico → orders") {
		t.Fatalf("partial %v", p)
	}
}

// TestComposeLastGoodShared: with the cache store in Redis, a call's last
// good answer kept by one Portico instance is the fallback of another.
func TestComposeLastGoodShared(t *testing.T) {
	t.Parallel()
	redis := harness.StartRedis(t)
	people := harness.Services(t, []string{"users", "orders"}, nil)
	catalog := harness.Services(t, []string{"products"}, nil)
	shared := func(c *app.Config) {
		c.Edge.Compose.ProtosDir = "testdata/frontends"
		c.Policies.Redis.Address = redis.Addr
		c.Policies.Cache.Store = "redis"
	}
	a := harness.Portico(t, shared, people.Addr, catalog.Addr)
	b := harness.Portico(t, shared, people.Addr, catalog.Addr)
	c := &http.Client{}
	const home = "/api/home/alice?user_name=users/alice&product_ids=p-2&featured=p-3"
	if r := do(t, c, "GET", a.URL+home, ""); r.code != 200 || r.header.Get("Portico-Partial") != "" {
		t.Fatalf("instance a: %d %q %s", r.code, r.header.Get("Portico-Partial"), r.body)
	}
	catalog.Server.Stop()
	r := do(t, c, "GET", b.URL+home, "")
	resp := jsonOf(t, r.body)
	products, _ := resp["products"].([]any)
	partial, _ := resp["partial"].([]any)
	if r.code != 200 || r.header.Get("Portico-Partial") != "products, featured" || len(products) != 1 ||
		products[0].(map[string]any)["id"] != "p-2" || partial[0].(map[string]any)["fallback"] != "last_good" {
		t.Fatalf("instance b, products down: %d %q %s", r.code, r.header.Get("Portico-Partial"), r.body)
	}
}
