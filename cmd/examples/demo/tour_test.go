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
