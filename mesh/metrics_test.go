package mesh

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// TestCollectors: a mesh with Consul and a files identity reports the
// watches, the service grace and the certificate's expiry.
func TestCollectors(t *testing.T) {
	ca := newTestCA(t, "td.consul")
	files := ca.WriteFiles(t, t.TempDir(), "dc1", "portico")
	cfg := DefaultConfig()
	cfg.Consul.Address = "127.0.0.1:1" // never contacted: nothing is started
	cfg.TLS = TLSConfig{Mode: TLSModeFiles, CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CA, TrustDomains: []string{"td.consul"}, ReloadInterval: time.Minute}
	m, err := New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	want := []string{
		"portico_consul_services_in_grace", "portico_consul_services_removed_total",
		"portico_consul_watch_errors_total", "portico_consul_watch_healthy",
		"portico_mesh_certificate_expiry_timestamp_seconds",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("metrics %v, want %v", names, want)
	}

	static, err := New(DefaultConfig(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer static.Close()
	if c := static.Collectors(); len(c) != 0 {
		t.Fatalf("a static mesh has no metrics of its own, got %d", len(c))
	}
}
