package mesh

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/portico-dev/portico/mesh/meshtest"
)

// testCA wraps meshtest.CA with the identity helper these tests need.
type testCA struct{ *meshtest.CA }

func newTestCA(t *testing.T, trustDomain string) *testCA {
	return &testCA{meshtest.NewCA(t, trustDomain)}
}

func (ca *testCA) leaf(t *testing.T, uri string) (certPEM, keyPEM []byte) { return ca.Leaf(t, uri) }

func (ca *testCA) identity(t *testing.T, service string) *Identity {
	t.Helper()
	c, k := ca.leaf(t, ca.ServiceURI("dc1", service))
	id, err := newIdentity(c, k, [][]byte{ca.PEM}, []string{ca.TrustDomain})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestParseSPIFFEID(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "spiffe://TD.consul/ns/default/dc/dc1/svc/orders", want: "spiffe://td.consul/ns/default/dc/dc1/svc/orders"},
		{in: "https://td.consul/ns/default/dc/dc1/svc/orders", err: "not a spiffe://"},
		{in: "spiffe://td.consul/ns/default/dc/dc1/agent/client", err: "not a service identity"},
		{in: "spiffe://td.consul/ns//dc/dc1/svc/orders", err: "not a service identity"},
		{in: "spiffe://td.consul", err: "not a service identity"},
	} {
		u, _ := url.Parse(tc.in)
		got, err := ParseSPIFFEID(u)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: got %v, want error %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("%s: got %s, %v", tc.in, got, err)
		}
	}
}

func TestPeerIdentity(t *testing.T) {
	ca := newTestCA(t, "td.consul")
	other := newTestCA(t, "td.consul")
	local := ca.identity(t, "portico")
	parse := func(certPEM []byte) []*x509.Certificate {
		b, _ := pem.Decode(certPEM)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return []*x509.Certificate{c}
	}
	good, _ := ca.leaf(t, "spiffe://td.consul/ns/default/dc/dc1/svc/orders")
	if id, err := PeerIdentity(parse(good), local); err != nil || id.Service != "orders" {
		t.Fatalf("good peer: %v %v", id, err)
	}
	for name, tc := range map[string]struct {
		cert []byte
		err  string
	}{
		"untrusted CA":     {first(other.leaf(t, "spiffe://td.consul/ns/default/dc/dc1/svc/orders")), "unknown authority"},
		"foreign domain":   {first(ca.leaf(t, "spiffe://evil.consul/ns/default/dc/dc1/svc/orders")), "outside the trusted trust domains"},
		"no URI SAN":       {first(ca.leaf(t, "")), "0 URI SANs"},
		"not a service ID": {first(ca.leaf(t, "spiffe://td.consul/agent/client/dc/dc1/id/x")), "not a service identity"},
		"not a SPIFFE URI": {first(ca.leaf(t, "https://orders.example.com/")), "not a spiffe://"},
	} {
		if _, err := PeerIdentity(parse(tc.cert), local); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: got %v, want %q", name, err, tc.err)
		}
	}
	if _, err := PeerIdentity(nil, local); err == nil {
		t.Error("empty chain accepted")
	}
}

func first(a, _ []byte) []byte { return a }

func TestFileIdentityReloads(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "td.consul")
	files := ca.WriteFiles(t, dir, "dc1", "portico")
	tc := TLSConfig{CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CA, TrustDomains: []string{"td.consul"}, ReloadInterval: 10 * time.Millisecond}
	f, err := NewFileIdentity(tc, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	f.Start()
	defer f.Close()
	if !strings.HasSuffix(f.Identity().ID, "/svc/portico") {
		t.Fatalf("id %s", f.Identity().ID)
	}
	ca.WriteFiles(t, dir, "dc1", "portico2")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.HasSuffix(f.Identity().ID, "/svc/portico2") {
		if time.Now().After(deadline) {
			t.Fatalf("not reloaded: %s", f.Identity().ID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A broken file keeps the previous identity.
	if err := os.WriteFile(files.Key, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if !strings.HasSuffix(f.Identity().ID, "/svc/portico2") {
		t.Fatalf("a broken reload replaced the identity: %s", f.Identity().ID)
	}
	tc.ReloadInterval = time.Second
	if _, err := NewFileIdentity(tc, zap.NewNop()); err == nil {
		t.Fatal("a broken key at start must fail")
	}
}

type staticSource struct{ id *Identity }

func (s staticSource) Identity() *Identity { return s.id }
func (s staticSource) Ready() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// TestMTLSHandshakes runs real gRPC handshakes: the client accepts only the
// exact expected SPIFFE ID, the server only clients of a trusted CA.
func TestMTLSHandshakes(t *testing.T) {
	ca := newTestCA(t, "td.consul")
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ServerTLSConfig(staticSource{ca.identity(t, "orders")}))))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	call := func(client *Identity, expect string) error {
		r := manual.NewBuilderWithScheme("test")
		addr := resolver.Address{Addr: lis.Addr().String()}
		if expect != "" {
			addr = WithExpectedIdentity(addr, ServiceID("", "", "dc1", expect))
		}
		r.InitialState(resolver.State{Addresses: []resolver.Address{addr}})
		cc, err := grpc.NewClient("test:///x", grpc.WithResolvers(r), grpc.WithTransportCredentials(ClientCredentials(staticSource{client})))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{})
		return err
	}
	if err := call(ca.identity(t, "portico"), "orders"); err != nil {
		t.Fatalf("good handshake: %v", err)
	}
	if err := call(ca.identity(t, "portico"), "users"); err == nil || !strings.Contains(err.Error(), "presented spiffe://td.consul/ns/default/dc/dc1/svc/orders, expected spiffe://td.consul/ns/default/dc/dc1/svc/users") {
		t.Fatalf("wrong identity accepted or badly reported: %v", err)
	}
	if err := call(ca.identity(t, "portico"), ""); err == nil || !strings.Contains(err.Error(), "no expected identity") {
		t.Fatalf("address without an expected identity: %v", err)
	}
	// A client from another CA is refused by the server.
	stranger := newTestCA(t, "td.consul").identity(t, "portico")
	stranger.Roots = ca.identity(t, "x").Roots // trusts the server, but is not trusted
	if err := call(stranger, "orders"); err == nil {
		t.Fatal("server accepted a client certificate from an unknown CA")
	}
}
