package mesh

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"

	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) {}, ""},
		{func(c *Config) { c.ReflectTimeout = 0 }, "mesh.reflect_timeout must be > 0"},
		{func(c *Config) { c.RefreshInterval = -time.Second }, "mesh.refresh_interval must be > 0"},
		{func(c *Config) { c.MaxRecvMessageBytes = 0 }, "max_recv_message_bytes"},
		{func(c *Config) { c.Upstreams = []Upstream{{Address: "nohost"}} }, `mesh.upstreams[0].address "nohost"`},
		{func(c *Config) { c.Upstreams = []Upstream{{Address: "a:1"}, {Address: "a:1"}} }, "listed twice"},
		{func(c *Config) { c.Upstreams = []Upstream{{Address: "a:1", Plaintext: true, CAFile: "x"}} }, "need TLS"},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		tt.mut(&c)
		err := c.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("got %v, want %q", err, tt.want)
		}
	}
}

// productsServer is a real gRPC server with the products service, health
// and reflection on a loopback port; opts configure it (credentials).
func productsServer(t *testing.T, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	productsv1.RegisterProductServiceServer(s, productsv1.UnimplementedProductServiceServer{})
	healthpb.RegisterHealthServer(s, health.NewServer())
	reflection.Register(s)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}

func TestReflect(t *testing.T) {
	addr := productsServer(t)
	cfg := DefaultConfig()
	cfg.Upstreams = []Upstream{{Address: addr, Plaintext: true}}
	u, err := NewUpstreams(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	res := u.Reflect(ctx, true)
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	r1 := []*Reflection{res[0].Reflection}
	// Health and reflection are infrastructure: only the products service.
	if len(r1[0].Services) != 1 || r1[0].Services[0].Name != "portico.examples.products.v1.ProductService" {
		t.Fatalf("services: %v", r1[0].Services)
	}
	svc := r1[0].Services[0]
	if svc.Desc.Methods().ByName("GetProduct") == nil {
		t.Fatal("descriptor lacks GetProduct")
	}
	if _, err := svc.Types.FindMessageByName("google.protobuf.Timestamp"); err != nil {
		t.Fatalf("types do not hold dependencies: %v", err)
	}
	r2 := u.Reflect(ctx, false)[0].Reflection
	if r1[0].Hash == "" || r1[0].Hash != r2.Hash {
		t.Fatalf("descriptor hash not stable: %q vs %q", r1[0].Hash, r2.Hash)
	}
}

func TestReflectUnreachable(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ReflectTimeout = 500 * time.Millisecond
	cfg.Upstreams = []Upstream{{Address: "127.0.0.1:1", Plaintext: true}}
	u, err := NewUpstreams(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	res := u.Reflect(t.Context(), true)
	if res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "127.0.0.1:1") {
		t.Fatalf("got %v", res[0].Err)
	}
}

func TestDynamicCodecRoundTrip(t *testing.T) {
	in := &productsv1.Product{Id: "p-1", Name: "n", Tags: []string{"a"}, PriceCents: 5}
	data, err := bindingCodec{}.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Free()
	out := dynamicpb.NewMessage(in.ProtoReflect().Descriptor())
	if err := (bindingCodec{}).Unmarshal(data, out); err != nil {
		t.Fatal(err)
	}
	back := &productsv1.Product{}
	raw, _ := proto.Marshal(out)
	if err := proto.Unmarshal(raw, back); err != nil || !proto.Equal(in, back) {
		t.Fatalf("round trip: %v %v", back, err)
	}
	if _, err := (bindingCodec{}).Marshal("not a message"); err == nil {
		t.Fatal("want error for non-proto value")
	}
}

func TestConsulConfigValidation(t *testing.T) {
	base := func() Config {
		c := DefaultConfig()
		c.Consul.Address = "127.0.0.1:8500"
		return c
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("defaults with consul: %v", err)
	}
	if base().TLSMode() != TLSModeConsul {
		t.Fatalf("mode with consul defaults to %q", base().TLSMode())
	}
	for name, tc := range map[string]struct {
		mutate func(*Config)
		err    string
	}{
		"bad address":        {func(c *Config) { c.Consul.Address = "nohost" }, "mesh.consul.address"},
		"bad scheme":         {func(c *Config) { c.Consul.Scheme = "ftp" }, "mesh.consul.scheme"},
		"token twice":        {func(c *Config) { c.Consul.Token, c.Consul.TokenFile = "a", "b" }, "token or token_file"},
		"expose own tag":     {func(c *Config) { c.Consul.Register.Tags = []string{"portico"} }, "expose itself"},
		"short wait":         {func(c *Config) { c.Consul.WaitTime = time.Millisecond }, "wait_time"},
		"unknown mode":       {func(c *Config) { c.TLS.Mode = "magic" }, "mesh.tls.mode"},
		"files without keys": {func(c *Config) { c.TLS.Mode = TLSModeFiles }, "cert_file, key_file and ca_file"},
		"files without td": {func(c *Config) {
			c.TLS = TLSConfig{Mode: TLSModeFiles, CertFile: "c", KeyFile: "k", CAFile: "a", ReloadInterval: time.Second}
		}, "trust_domains"},
		"consul mode without consul": {func(c *Config) { c.Consul.Address = ""; c.TLS.Mode = TLSModeConsul }, "needs mesh.consul.address"},
		"unknown balancer":           {func(c *Config) { c.LoadBalancing.Services = map[string]string{"orders": "random"} }, "load_balancing.services.orders"},
	} {
		c := base()
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: got %v, want %q", name, err, tc.err)
		}
	}
	lb := LoadBalancing{Default: BalancerRoundRobin, Services: map[string]string{"orders": BalancerLeastRequest}}
	if lb.For("orders") != BalancerLeastRequest || lb.For("users") != BalancerRoundRobin {
		t.Fatal("LoadBalancing.For")
	}
}
