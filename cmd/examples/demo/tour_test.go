package main

import (
	"strings"
	"testing"
)

func TestTourUsesTheBuiltBinary(t *testing.T) {
	var b strings.Builder
	if err := tourText.Execute(&b, tour{Base: "http://127.0.0.1:8080", Admin: "http://127.0.0.1:9901", Consul: "127.0.0.1:8500", KeyFile: "k.pem", Lifetime: "30 days"}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"bin/portico routes --consul 127.0.0.1:8500", "(make portico builds bin/portico)", "in k.pem, so these tokens keep working in later runs for 30 days"} {
		if !strings.Contains(out, want) {
			t.Errorf("tour lacks %q", want)
		}
	}
	if strings.Contains(out, "go run ./cmd/portico") {
		t.Error("tour says go run ./cmd/portico; the Makefile builds bin/portico")
	}
}

// TestTourShowsTheSplit: products answers from two versions 90/10 (Consul's
// service-splitter), not round-robin across its instances.
func TestTourShowsTheSplit(t *testing.T) {
	var b strings.Builder
	if err := tourText.Execute(&b, tour{Base: "http://127.0.0.1:8080", Admin: "http://127.0.0.1:9901", Consul: "127.0.0.1:8500"}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"curl -s -o /dev/null -D - http://127.0.0.1:8080/v1/products/p-1 | grep -i served-version; done | sort | uniq -c",
		"about 18 × 1, 2 × 2 (a 90/10 split",
		"curl -s 'http://127.0.0.1:9901/traffic?service=products&method=/portico.examples.products.v1.ProductService/GetProduct&subject=alice'",
		`"chain": "configured"`,
		`grep '^portico_traffic_requests_total{service="products"'`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("tour lacks %q", want)
		}
	}
	if strings.Contains(out, "round-robin") {
		t.Error("tour still promises round-robin across the products instances; Consul's splitter decides")
	}
}
