package integration

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
)

const parallelFrontend = `
syntax = "proto3";
package portico.frontend.bench.v1;
import "examples/orders/v1/orders.proto";
import "examples/products/v1/products.proto";
import "examples/users/v1/users.proto";
import "google/api/annotations.proto";
import "portico/v1/options.proto";

service Bench {
  rpc Three(Req) returns (Resp) {
    option (google.api.http) = {get: "/api/bench/three"};
    option (portico.v1.compose) = {
      timeout: {seconds: 5}
      calls: {name: "user" method: "portico.examples.users.v1.UserService/GetUser" request: {field: "name" from: "request.name"} target: "user"}
      calls: {name: "orders" method: "portico.examples.orders.v1.OrderService/ListOrders" request: {field: "user_id" from: "request.user"} target: "orders"}
      calls: {name: "product" method: "portico.examples.products.v1.ProductService/GetProduct" request: {field: "id" from: "request.id"} target: "product"}
    };
  }
  rpc Chain(Req) returns (Resp) {
    option (google.api.http) = {get: "/api/bench/chain"};
    option (portico.v1.compose) = {
      timeout: {seconds: 5}
      calls: {name: "user" method: "portico.examples.users.v1.UserService/GetUser" request: {field: "name" from: "request.name"} target: "user"}
      calls: {name: "again" method: "portico.examples.users.v1.UserService/GetUser" request: {field: "name" from: "user.name"} target: "again"}
    };
  }
}

message Req {
  string name = 1;
  string user = 2;
  string id = 3;
}

message Resp {
  portico.examples.users.v1.User user = 1;
  portico.examples.orders.v1.ListOrdersResponse orders = 2;
  portico.examples.products.v1.Product product = 3;
  portico.examples.users.v1.User again = 4;
}
`

// benchFrontend writes parallelFrontend into a directory of its own.
func benchFrontend(b *testing.B) string { return writeFrontend(b, "bench.proto", parallelFrontend) }

// delayed makes every call of a backend take d.
func delayed(d time.Duration) grpc.ServerOption {
	return grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
		return h(ctx, req)
	})
}

// BenchmarkComposeLatency: one GET answered by three calls of 100, 200 and
// 300 ms made in parallel, 200 requests (8 at a time) per iteration; the
// latency tracks the slowest call, not the sum (600 ms). Reported: p50 and
// p99 in ms. Run it with -benchtime 1x.
func BenchmarkComposeLatency(b *testing.B) {
	users := harness.Services(b, []string{"users"}, nil, delayed(100*time.Millisecond))
	orders := harness.Services(b, []string{"orders"}, nil, delayed(200*time.Millisecond))
	products := harness.Services(b, []string{"products"}, nil, delayed(300*time.Millisecond))
	e := harness.Portico(b, func(c *app.Config) { c.Edge.Compose.ProtosDir = benchFrontend(b) }, users.Addr, orders.Addr, products.Addr)
	url := e.URL + "/api/bench/three?name=users/alice&user=alice&id=p-1"
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer c.CloseIdleConnections()
	// The 8 client connections (and Portico's upstream ones) are opened
	// before the clock starts: what is measured is the steady state.
	var warm sync.WaitGroup
	for range 8 {
		warm.Go(func() {
			if resp, err := c.Get(url); err == nil {
				resp.Body.Close()
			}
		})
	}
	warm.Wait()
	for b.Loop() {
		var (
			mu   sync.Mutex
			lats []time.Duration
			wg   sync.WaitGroup
		)
		work := make(chan struct{}, 200)
		for range 200 {
			work <- struct{}{}
		}
		close(work)
		for range 8 {
			wg.Go(func() {
				for range work {
					start := time.Now()
					resp, err := c.Get(url)
					if err != nil || resp.StatusCode != 200 {
						b.Errorf("GET: %v %v", err, resp)
						return
					}
					resp.Body.Close()
					mu.Lock()
					lats = append(lats, time.Since(start))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		slices.Sort(lats)
		b.ReportMetric(float64(lats[len(lats)/2])/1e6, "p50-ms")
		b.ReportMetric(float64(lats[len(lats)*99/100])/1e6, "p99-ms")
	}
}

// BenchmarkComposeGap: a call that depends on another starts right after
// that one's answer; reported is the median gap between the first call's
// handler returning and the second's starting, in µs.
func BenchmarkComposeGap(b *testing.B) {
	var (
		mu    sync.Mutex
		ends  []time.Time
		gaps  []time.Duration
		calls int
	)
	mark := grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		mu.Lock()
		if calls%2 == 1 && len(ends) > 0 {
			gaps = append(gaps, time.Since(ends[len(ends)-1]))
		}
		calls++
		mu.Unlock()
		resp, err := h(ctx, req)
		mu.Lock()
		ends = append(ends, time.Now())
		mu.Unlock()
		return resp, err
	})
	users := harness.Services(b, []string{"users"}, nil, mark)
	e := harness.Portico(b, func(c *app.Config) { c.Edge.Compose.ProtosDir = benchFrontend(b) }, users.Addr)
	c := &http.Client{}
	defer c.CloseIdleConnections()
	for b.Loop() {
		resp, err := c.Get(e.URL + "/api/bench/chain?name=users/alice")
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("GET: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	slices.Sort(gaps)
	if len(gaps) > 0 {
		b.ReportMetric(float64(gaps[len(gaps)/2].Microseconds()), "gap-µs")
	}
}

// BenchmarkComposeCost: the handler's time and allocations for one
// composite GET of three calls against the same three calls made as
// direct routes, one after another, through Portico.
func BenchmarkComposeCost(b *testing.B) {
	be := harness.Services(b, []string{"users", "orders", "products"}, nil)
	e := harness.Portico(b, func(c *app.Config) { c.Edge.Compose.ProtosDir = benchFrontend(b) }, be.Addr)
	serve := func(b *testing.B, path string) {
		rec := httptest.NewRecorder()
		e.Handler.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 {
			b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
	}
	b.Run("composed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			serve(b, "/api/bench/three?name=users/alice&user=alice&id=p-1")
		}
	})
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, p := range []string{"/v1/users/alice", "/v1/orders?user_id=alice", "/v1/products/p-1"} {
				serve(b, p)
			}
		}
	})
}
