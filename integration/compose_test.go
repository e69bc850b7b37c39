package integration

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/edge/compose"
	"github.com/portico-dev/portico/integration/harness"
)

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
	e := harness.Portico(t, func(c *app.Config) { c.Edge.Compose.ProtosDir = "testdata/frontends" }, people.Addr, catalog.Addr)
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
	} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("no rejection with %q in:\n%s", want, strings.Join(got, "\n"))
		}
	}
	if r := do(t, &http.Client{}, "GET", e.URL+"/api/broken/cycle", ""); r.code != 404 {
		t.Fatalf("a rejected composition answered %d", r.code)
	}
}
