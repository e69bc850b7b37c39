package integration

import (
	"encoding/base64"
	"regexp"
	"testing"
)

func TestMetadataForwarding(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := do(t, e.c, "GET", e.url+"/v1/orders/o-1001", "",
		"X-Request-Id", "req-123",
		"Authorization", "Bearer tok",
		"Grpc-Metadata-Tenant", "acme",
		"Grpc-Metadata-Blob-Bin", base64.StdEncoding.EncodeToString([]byte{0, 1, 2}),
		"Grpc-Metadata-Grpc-Timeout", "1n", // reserved: must not reach gRPC
		"X-Not-Listed", "secret",
		"Connection", "X-Hop",
		"X-Hop", "1",
		"Grpc-Metadata-X-Forwarded-For", "6.6.6.6",
	)
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	if r.header.Get("X-Request-Id") != "req-123" {
		t.Fatalf("request id not kept: %q", r.header.Get("X-Request-Id"))
	}
	md := e.md.get("req-123")
	if md == nil {
		t.Fatal("upstream saw no call with x-request-id req-123")
	}
	want := map[string]string{
		"authorization":     "Bearer tok",
		"tenant":            "acme",
		"blob-bin":          "\x00\x01\x02",
		"x-forwarded-for":   "127.0.0.1",
		"x-forwarded-proto": "http",
	}
	for k, v := range want {
		if got := md.Get(k); len(got) != 1 || got[0] != v {
			t.Errorf("metadata %s = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"x-not-listed", "x-hop", "connection", "grpc-metadata-tenant"} {
		if got := md.Get(k); len(got) > 0 {
			t.Errorf("metadata %s = %q must not be forwarded", k, got)
		}
	}
	// Upstream header and trailer metadata come back as Grpc-Metadata-*.
	if r.header.Get("Grpc-Metadata-X-Example-Service") != "orders" || r.header.Get("Grpc-Metadata-X-Example-Trailer") != "done" {
		t.Fatalf("response metadata: %v", r.header)
	}

	// No id given: one is generated, returned and forwarded.
	r = do(t, e.c, "GET", e.url+"/v1/orders/o-1001", "")
	id := r.header.Get("X-Request-Id")
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) || e.md.get(id) == nil {
		t.Fatalf("generated request id %q not forwarded", id)
	}
}
