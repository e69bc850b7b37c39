package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRoutesCommand(t *testing.T) {
	b := harness.Services(t, []string{"users", "orders", "products"}, nil)
	var out, errOut bytes.Buffer
	if code := run([]string{"routes", "--upstream", b.Addr, "--plaintext-upstream"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if !strings.HasPrefix(lines[0], "METHOD") {
		t.Fatalf("header: %q", lines[0])
	}
	want := []string{
		"GET  /v1/{name=users/*}  portico.examples.users.v1.UserService/GetUser  -  -",
		"PATCH  /v1/{user.name=users/*}  portico.examples.users.v1.UserService/UpdateUser  user  -",
		"GET  /v1/orders/{order_id}/status  portico.examples.orders.v1.OrderService/GetOrderStatus  -  status",
		"PURGE  /v1/orders/{order_id}  portico.examples.orders.v1.OrderService/PurgeOrder  -  -",
		"GET  /v1/users/{user_id}/orders/{order_id}  portico.examples.orders.v1.OrderService/GetOrder  -  -",
	}
	norm := map[string]bool{}
	for _, l := range lines[1:] {
		norm[strings.Join(strings.Fields(l), "  ")] = true
		if strings.Contains(l, "Ping") || strings.Contains(l, "OrderAdmin") {
			t.Errorf("unannotated method listed: %q", l)
		}
	}
	for _, w := range want {
		if !norm[w] {
			t.Errorf("missing route line %q in:\n%s", w, out.String())
		}
	}
}

func TestRoutesCommandUnreachable(t *testing.T) {
	var out, errOut bytes.Buffer
	cfg := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(cfg, []byte("mesh:\n  reflect_timeout: 300ms\n"), 0o600)
	if code := run([]string{"routes", "--config", cfg, "--upstream", "127.0.0.1:1", "--plaintext-upstream"}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), "127.0.0.1:1") {
		t.Fatalf("stderr does not name the upstream: %s", errOut.String())
	}
}

func TestConfigStrict(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"edge:\n  listen: 127.0.0.1:1\n  lisen: x\n", "line 3: field lisen not found"},
		{"transcode:\n  max_body_bytes: -1\n", "transcode.max_body_bytes must be > 0"},
		{"edge:\n  read_timeout: soon\n", "line 2"},
		{"mesh:\n  upstreams:\n    - address: nohost\n", `mesh.upstreams[0].address "nohost"`},
		{"log:\n  level: loud\n", "log.level"},
	}
	for _, tt := range tests {
		cfg := app.DefaultConfig()
		err := app.LoadConfig(strings.NewReader(tt.yaml), &cfg)
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want %q", tt.yaml, err, tt.want)
		}
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(path, []byte("edge:\n  listen: 127.0.0.1:1111\n  upstream_timeout: 5s\nmesh:\n  upstreams:\n    - address: 127.0.0.1:9\n      plaintext: true\n"), 0o600)
	cfg, err := loadFlags("serve", []string{"--config", path, "--listen", "127.0.0.1:2222", "--upstream", "127.0.0.1:10", "--plaintext-upstream"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Edge.Listen != "127.0.0.1:2222" || cfg.Edge.UpstreamTimeout.String() != "5s" || len(cfg.Mesh.Upstreams) != 2 {
		t.Fatalf("%+v", cfg)
	}
}
