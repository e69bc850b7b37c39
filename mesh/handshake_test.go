package mesh

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/portico-dev/portico/mesh/meshtest"
)

// tlsServer is productsServer speaking only TLS with cfg.
func tlsServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	return productsServer(t, grpc.Creds(credentials.NewTLS(cfg)))
}

// TestStaticUpstreamTLSMismatch: a static upstream whose TLS setting does
// not match the server fails reflection with words naming it and the
// setting, not with crypto/tls's or grpc-go's bare message.
func TestStaticUpstreamTLSMismatch(t *testing.T) {
	plain := productsServer(t)
	certFile, keyFile, _ := meshtest.SelfSigned(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	secure := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	for _, tc := range []struct {
		name string
		up   Upstream
		want []string
	}{
		{"TLS to a plaintext server", Upstream{Address: plain}, []string{
			"upstream " + plain + " does not speak TLS (it answered with a plaintext HTTP/2 SETTINGS frame, as a gRPC server without TLS does)",
			"to call it without TLS set plaintext: true on it in mesh.upstreams (--plaintext-upstream)",
		}},
		{"plaintext to a TLS server", Upstream{Address: secure, Plaintext: true}, []string{
			"upstream " + secure + " closed the connection before speaking HTTP/2; does it require TLS?",
			"Calls to it are plaintext (plaintext: true in mesh.upstreams, or --plaintext-upstream)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ReflectTimeout = 5 * time.Second
			cfg.Upstreams = []Upstream{tc.up}
			u, err := NewUpstreams(cfg, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			// The words alone, without grpc-go's wrapping around them.
			err = u.Reflect(t.Context(), true)[0].Err
			if err == nil || !strings.HasPrefix(err.Error(), tc.want[0]) {
				t.Fatalf("error does not start with %q:\n%v", tc.want[0], err)
			}
			for _, w := range tc.want[1:] {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestConsulTLSMismatch: the credentials New gives the catalog explain an
// instance whose TLS does not match mesh.tls.mode, naming the service, the
// instance and the setting.
func TestConsulTLSMismatch(t *testing.T) {
	ca := newTestCA(t, "td.consul")
	plain := productsServer(t)
	secure := tlsServer(t, ServerTLSConfig(staticSource{ca.identity(t, "orders")}))
	files := ca.WriteFiles(t, t.TempDir(), "dc1", "portico")
	for _, tc := range []struct {
		name string
		tls  TLSConfig
		addr string
		want []string
	}{
		{"mTLS to a plaintext instance", TLSConfig{Mode: TLSModeFiles, CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CA, TrustDomains: []string{"td.consul"}, ReloadInterval: time.Minute}, plain, []string{
			"consul service orders: instance " + plain + " does not speak TLS (it answered with a plaintext HTTP/2 SETTINGS frame",
			"to call Consul services without TLS set mesh.tls.mode: plaintext (--plaintext-upstream)",
		}},
		{"plaintext to an mTLS instance", TLSConfig{Mode: TLSModePlaintext}, secure, []string{
			"consul service orders: instance " + secure + " closed the connection before speaking HTTP/2; does it require TLS?",
			"Calls to it are plaintext (mesh.tls.mode: plaintext, or --plaintext-upstream)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Consul.Address = "127.0.0.1:1" // never contacted: nothing is started
			cfg.TLS = tc.tls
			m, err := New(cfg, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			// An address as the catalog's resolver makes it.
			r := manual.NewBuilderWithScheme("test")
			addr := WithExpectedIdentity(resolver.Address{Addr: tc.addr, ServerName: "orders"}, ServiceID("", "", "dc1", "orders"))
			r.InitialState(resolver.State{Addresses: []resolver.Address{addr}})
			cc, err := grpc.NewClient("test:///orders", grpc.WithResolvers(r), grpc.WithTransportCredentials(m.Catalog.conns.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			_, err = healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{})
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestDescribeFirstBytes(t *testing.T) {
	for in, want := range map[string]string{
		"\x00\x00\x06\x04\x00": "plaintext HTTP/2 SETTINGS frame",
		"HTTP/":                "plaintext HTTP/1",
		"SSH-2":                `its first bytes "SSH-2" are not a TLS record`,
	} {
		if got := describeFirstBytes([]byte(in)); !strings.Contains(got, want) {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}
