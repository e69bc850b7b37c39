package integration

import (
	"testing"
	"time"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
)

func TestDeadline(t *testing.T) {
	t.Parallel()
	b := harness.Services(t, []string{"orders"}, nil)
	e := harness.Portico(t, func(c *app.Config) { c.Edge.UpstreamTimeout = 300 * time.Millisecond }, b.Addr)
	c := harness.Client(t)
	wantStatus(t, do(t, c, "GET", e.URL+"/v1/debug/fail/0?sleepMs=3000", ""), 504, 4, "deadline")
	// A client's Grpc-Timeout shortens the deadline.
	start := time.Now()
	wantStatus(t, do(t, c, "GET", e.URL+"/v1/debug/fail/0?sleepMs=3000", "", "Grpc-Timeout", "50m"), 504, 4, "deadline")
	if time.Since(start) > 250*time.Millisecond {
		t.Logf("note: Grpc-Timeout 50m answered after %s", time.Since(start))
	}
	wantStatus(t, do(t, c, "GET", e.URL+"/v1/debug/fail/0", "", "Grpc-Timeout", "soon"), 400, 3, "Grpc-Timeout")
}

func TestUpstreamUnreachable(t *testing.T) {
	t.Parallel()
	b := harness.Services(t, []string{"products"}, nil)
	e := harness.Portico(t, nil, b.Addr)
	c := harness.Client(t)
	if r := do(t, c, "GET", e.URL+"/v1/products/p-1", ""); r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	b.Server.Stop()
	// The table keeps the routes; calls fail fast with 503.
	wantStatus(t, do(t, c, "GET", e.URL+"/v1/products/p-1", ""), 503, 14, "")
}

func TestUnannotatedNotExposed(t *testing.T) {
	t.Parallel()
	b := harness.Services(t, []string{"orders"}, nil)
	e := harness.Portico(t, nil, b.Addr)
	for _, r := range e.Tables.Load().Routes() {
		if r.FullMethod == "/portico.examples.orders.v1.OrderService/Ping" || r.FullMethod == "/portico.examples.orders.v1.OrderAdmin/Reindex" {
			t.Fatalf("%s has no google.api.http and must not be routed", r.FullMethod)
		}
	}
	c := harness.Client(t)
	wantStatus(t, do(t, c, "POST", e.URL+"/portico.examples.orders.v1.OrderAdmin/Reindex", "{}"), 404, 5, "no route")

	// With expose_unannotated, every method gets POST /pkg.Svc/Method.
	e2 := harness.Portico(t, func(c *app.Config) { c.Transcode.ExposeUnannotated = true }, b.Addr)
	if r := do(t, c, "POST", e2.URL+"/portico.examples.orders.v1.OrderAdmin/Reindex", "{}"); r.code != 501 && r.code != 200 {
		t.Fatalf("exposed unannotated: %d %s", r.code, r.body)
	}
}
