package integration

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	refv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"github.com/portico-dev/portico/cmd/examples/services"
	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
)

// TestReflectionV1AlphaFallback: an upstream that only serves the v1alpha
// reflection service is still reflected and routed.
func TestReflectionV1AlphaFallback(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	productsv1.RegisterProductServiceServer(s, services.NewProducts())
	refv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(reflection.ServerOptions{Services: s}))
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })

	e := harness.Portico(t, nil, lis.Addr().String())
	r := do(t, harness.Client(t), "GET", e.URL+"/v1/products/p-2", "")
	if r.code != 200 || jsonOf(t, r.body)["id"] != "p-2" {
		t.Fatalf("%d %s", r.code, r.body)
	}
}

// TestNoUpstreamYet: before any upstream has been reflected there is no
// table, and requests are 503, not 404.
func TestNoUpstreamYet(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there
	e := harness.Portico(t, func(c *app.Config) { c.Mesh.ReflectTimeout = 300 * time.Millisecond }, addr)
	wantStatus(t, do(t, harness.Client(t), "GET", e.URL+"/v1/products/p-1", ""), 503, 14, "no route table yet")
}

// TestH2C: the cleartext listener also speaks HTTP/2 with prior knowledge.
func TestH2C(t *testing.T) {
	t.Parallel()
	b := harness.Services(t, []string{"products"}, nil)
	e := harness.Portico(t, nil, b.Addr)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p, TLSClientConfig: &tls.Config{}}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.URL+"/v1/products/p-1", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("%d over %s", resp.StatusCode, resp.Proto)
	}
}
