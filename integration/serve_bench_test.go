package integration

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
	"github.com/portico-dev/portico/policies"
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

// BenchmarkPolicies measures the policy chain in the handler: a public
// route without policy work against the same route class with JWT auth
// (ES256), a scope, a CEL allow_if, a global rate limit and a cache hit.
func BenchmarkPolicies(b *testing.B) {
	idp := harness.NewIDP(b)
	be := harness.Services(b, []string{"accounts"}, nil)
	e := harness.Portico(b, func(cfg *app.Config) {
		cfg.Policies.JWT = []policies.JWTProvider{{Name: "corp", Issuer: idp.Issuer, Audiences: []string{"portico"}, JWKSURL: idp.URL}}
		cfg.Policies.RateLimit.Global = &policies.GlobalLimit{Requests: 1_000_000, Period: time.Second}
	}, be.Addr)
	tok := "Bearer " + idp.Token("alice", map[string]any{"scope": "accounts"})
	for _, c := range []struct {
		name, path, auth, cache string
	}{
		{"public-upstream", "/v1/echo/hi", "", ""},
		{"auth+ratelimit+upstream", "/v1/whoami", tok, ""},
		{"auth+ratelimit+allow_if+cachehit", "/v1/accounts/alice", tok, "HIT"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				req := httptest.NewRequest("GET", c.path, nil)
				if c.auth != "" {
					req.Header.Set("Authorization", c.auth)
				}
				rec := httptest.NewRecorder()
				e.Handler.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
				if c.cache != "" && i > 0 && rec.Header().Get(policies.CacheStatusHeader) != c.cache {
					b.Fatalf("cache %q", rec.Header().Get(policies.CacheStatusHeader))
				}
			}
		})
	}
}
