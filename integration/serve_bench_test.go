package integration

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portico-dev/portico/integration/harness"
)

// BenchmarkServeHTTP measures Portico's handler end to end against a real
// backend on loopback: route match, decode, gRPC call, encode.
func BenchmarkServeHTTP(b *testing.B) {
	be := harness.Services(b, []string{"products"}, nil)
	e := harness.Portico(b, nil, be.Addr)
	body := `{"name":"Benchmark product","description":"` + strings.Repeat("d", 600) + `","priceCents":"1999","currency":"EUR","tags":["a","b","c"],"attributes":{"color":"blue","size":"M"},"stock":12,"rating":4.5,"available":true}`
	for _, c := range []struct{ name, method, path, body string }{
		{"get1k", "GET", "/v1/products/p-1", ""},
		{"post1k", "POST", "/v1/products", body},
		{"list20k", "GET", "/v1/products?page_size=20", ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
				if c.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				rec := httptest.NewRecorder()
				e.Handler.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
