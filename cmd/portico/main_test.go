package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
	"github.com/portico-dev/portico/mesh"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestOpenAPICommand: portico openapi prints the document serve would
// answer at /openapi.json, in JSON or YAML.
func TestOpenAPICommand(t *testing.T) {
	b := harness.Services(t, []string{"users", "products"}, nil)
	var out, errOut bytes.Buffer
	if code := run([]string{"openapi", "--upstream", b.Addr, "--plaintext-upstream"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" || doc.Paths["/v1/users/{name}"]["get"] == nil || doc.Paths["/v1/products/{id}"]["put"] == nil {
		t.Fatalf("document: %s", out.String()[:min(out.Len(), 2000)])
	}
	out.Reset()
	if code := run([]string{"openapi", "--format", "yaml", "--upstream", b.Addr, "--plaintext-upstream"}, &out, &errOut); code != 0 ||
		!strings.HasPrefix(out.String(), "openapi: 3.1.0") {
		t.Fatalf("yaml: exit %d: %.200s", code, out.String())
	}
	if code := run([]string{"openapi", "--format", "xml", "--upstream", b.Addr}, &out, &errOut); code != 2 {
		t.Fatalf("--format xml: exit %d", code)
	}
	// One frontend's document: the include-mode partner gets the products
	// methods offered to it, and nothing of users.
	cfg := filepath.Join(t.TempDir(), "portico.yaml")
	if err := os.WriteFile(cfg, []byte("edge:\n  frontends:\n    - name: partner\n      mode: include\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"openapi", "--config", cfg, "--frontend", "partner", "--upstream", b.Addr, "--plaintext-upstream"}, &out, &errOut); code != 0 {
		t.Fatalf("--frontend partner: exit %d: %s", code, errOut.String())
	}
	doc.Paths = nil
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Paths) != 2 || doc.Paths["/v1/products/{id}"]["get"] == nil || doc.Paths["/v1/users/{name}"] != nil {
		t.Fatalf("the partner's document: %v", doc.Paths)
	}
	if code := run([]string{"openapi", "--config", cfg, "--frontend", "nope", "--upstream", b.Addr}, &out, &errOut); code != 2 {
		t.Fatalf("--frontend nope: exit %d", code)
	}
}

// TestOpenAPIFromProtos: portico openapi reads the services from their
// .proto files, no service running, with the config's frontends and
// frontend protos: each frontend's document is the one a running edge
// serves (integration's goldens, from TestOpenAPIDocument), and more: the
// protos' comments describe. A frontend proto among the PATHs is not
// taken for a service.
func TestOpenAPIFromProtos(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "portico.yaml")
	if err := os.WriteFile(cfg, []byte(`edge:
  compose: {protos_dir: ../examples/demo/frontends}
  frontends:
    - name: web
    - name: partner
      mode: include
      hosts: [partner.localhost]
  default_frontend: web
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, fe := range []string{"web", "partner"} {
		var out, errOut bytes.Buffer
		args := []string{"openapi", "--config", cfg, "--frontend", fe, "-I", "../../protos", "-I", "../examples/demo/frontends",
			"../../protos/examples", "../examples/demo/frontends"}
		if code := run(args, &out, &errOut); code != 0 {
			t.Fatalf("%s: exit %d: %s", fe, code, errOut.String())
		}
		served, err := os.ReadFile("../../integration/testdata/demo." + fe + ".openapi.json")
		if err != nil {
			t.Fatal(err)
		}
		var got, want any
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(served, &want); err != nil {
			t.Fatal(err)
		}
		// Reflected example services carry no comments: their
		// descriptions are the difference.
		described := dropServiceDescriptions(got)
		dropServiceDescriptions(want)
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if !bytes.Equal(g, w) {
			t.Errorf("%s: the document from protos is not the one served (beyond descriptions)", fe)
		}
		if fe == "partner" {
			// Overlapping PATHs (a directory and a file in it) read the
			// file once: the same document.
			var again bytes.Buffer
			overlap := append(slices.Clone(args), "../../protos/examples/products/v1/products.proto")
			if code := run(overlap, &again, &errOut); code != 0 || !bytes.Equal(again.Bytes(), out.Bytes()) {
				t.Errorf("overlapping PATHs: exit %d (%s), same document: %v", code, errOut.String(), bytes.Equal(again.Bytes(), out.Bytes()))
			}
		}
		if fe == "web" && !slices.Contains(described, "CreateAccount validates its input at the edge (buf.validate) and never\nlets a client set the risk score.") {
			t.Errorf("web: the protos' comments do not describe: %q", described)
		}
	}
}

// TestOpenAPIFromProtosErrors: a proto that does not compile is a
// problem (exit 1, its position on stderr); PATHs beside upstreams are a
// usage error (2).
func TestOpenAPIFromProtosErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.proto"), []byte("syntax = \"proto3\";\nmessage M { strin x = 1; }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"openapi", "-I", dir, filepath.Join(dir, "bad.proto")}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "bad.proto:2:") {
		t.Errorf("a broken proto: exit %d, %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"openapi", "--upstream", "127.0.0.1:1", "-I", dir, filepath.Join(dir, "bad.proto")}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "give one source of services") {
		t.Errorf("PATHs and --upstream: exit %d, %q", code, errOut.String())
	}
}

// dropServiceDescriptions removes from a document the descriptions that
// come from the example services' comments (operations' and schemas'
// of portico.examples.*), returning them.
func dropServiceDescriptions(doc any) []string {
	var out []string
	m := doc.(map[string]any)
	for _, item := range m["paths"].(map[string]any) {
		for _, op := range item.(map[string]any) {
			o, ok := op.(map[string]any)
			if !ok || !strings.HasPrefix(o["tags"].([]any)[0].(string), "portico.examples.") {
				continue
			}
			if d, ok := o["description"].(string); ok {
				out = append(out, d)
				delete(o, "description")
			}
			params, _ := o["parameters"].([]any)
			for _, p := range params {
				delete(p.(map[string]any), "description")
			}
		}
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if d, ok := v["description"].(string); ok {
				out = append(out, d)
				delete(v, "description")
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	for name, schema := range m["components"].(map[string]any)["schemas"].(map[string]any) {
		if strings.HasPrefix(name, "portico.examples.") {
			walk(schema)
		}
	}
	return out
}

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
		{"transcode:\n  codec: fastest\n", `transcode.codec must be "fast" or "protojson", got "fastest"`},
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
	cfg, err := loadFlags(t, "--config", path, "--listen", "127.0.0.1:2222", "--upstream", "127.0.0.1:10", "--plaintext-upstream")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Edge.Listen != "127.0.0.1:2222" || cfg.Edge.UpstreamTimeout.String() != "5s" || len(cfg.Mesh.Upstreams) != 2 {
		t.Fatalf("%+v", cfg)
	}
}

// loadFlags is the configuration serve would run with.
func loadFlags(t *testing.T, args ...string) (app.Config, error) {
	t.Helper()
	f := newEdgeFlags("serve", serveUsage)
	if code, ok := parseFlags(f.fs, args, io.Discard, io.Discard); !ok {
		t.Fatalf("flags %q: exit %d", args, code)
	}
	cfg, _, err := f.config()
	return cfg, err
}

// TestHelpAndBadFlags: every command answers -h with its usage on stdout
// and exit 0, and a bad flag with the error and the usage on stderr and
// exit 2.
func TestHelpAndBadFlags(t *testing.T) {
	for _, cmd := range []string{"serve", "routes", "openapi", "lint", "probe"} {
		for _, h := range []string{"-h", "--help"} {
			var out, errOut bytes.Buffer
			code := run([]string{cmd, h}, &out, &errOut)
			if code != 0 || !strings.HasPrefix(out.String(), "usage: portico "+cmd+" ") || !strings.Contains(out.String(), "flags:\n") || errOut.Len() > 0 {
				t.Errorf("%s %s: exit %d\nstdout: %q\nstderr: %q\nwant 0, the usage on stdout, nothing on stderr", cmd, h, code, out.String(), errOut.String())
			}
		}
		var out, errOut bytes.Buffer
		code := run([]string{cmd, "--bogus"}, &out, &errOut)
		if code != 2 || out.Len() > 0 || !strings.HasPrefix(errOut.String(), "flag provided but not defined: -bogus\nusage: portico "+cmd+" ") {
			t.Errorf("%s --bogus: exit %d\nstdout: %q\nstderr: %q\nwant 2, nothing on stdout, the error and the usage on stderr", cmd, code, out.String(), errOut.String())
		}
	}
	for _, tc := range []struct {
		args     []string
		code     int
		toStdout bool
	}{
		{[]string{"-h"}, 0, true},
		{[]string{"help"}, 0, true},
		{nil, 2, false},
		{[]string{"frobnicate"}, 2, false},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		got := errOut.String()
		if tc.toStdout {
			got = out.String()
		}
		if code != tc.code || !strings.Contains(got, "usage: portico <command>") {
			t.Errorf("portico %q: exit %d, stdout %q, stderr %q", tc.args, code, out.String(), errOut.String())
		}
	}
}

// TestPlaintextUpstreamFlag: --plaintext-upstream applies to every
// upstream given on the command line, Consul included, and is refused when
// there is none rather than ignored.
func TestPlaintextUpstreamFlag(t *testing.T) {
	dir := t.TempDir()
	file := func(name, yaml string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	consulFiles := file("consul.yaml", "mesh:\n  consul:\n    address: 127.0.0.1:8500\n  tls:\n    mode: files\n    cert_file: c\n    key_file: k\n    ca_file: a\n    trust_domains: [td.consul]\n")
	consulOnly := file("consul-only.yaml", "mesh:\n  consul:\n    address: 127.0.0.1:8500\n")
	static := file("static.yaml", "mesh:\n  upstreams:\n    - address: 127.0.0.1:9001\n")
	for _, tc := range []struct {
		args      []string
		mode      string // mesh.tls.mode in effect
		plaintext []bool // per upstream
		err       string
	}{
		{args: []string{"--consul", "127.0.0.1:8500"}, mode: mesh.TLSModeConsul},
		{args: []string{"--consul", "127.0.0.1:8500", "--plaintext-upstream"}, mode: mesh.TLSModePlaintext},
		{args: []string{"--config", consulFiles, "--consul", "127.0.0.1:8501", "--plaintext-upstream"}, mode: mesh.TLSModePlaintext},
		// Consul from the file keeps the file's mode; the flag is for --upstream.
		{args: []string{"--config", consulOnly, "--upstream", "127.0.0.1:9002", "--plaintext-upstream"}, mode: mesh.TLSModeConsul, plaintext: []bool{true}},
		{args: []string{"--config", static, "--upstream", "127.0.0.1:9002", "--plaintext-upstream"}, plaintext: []bool{false, true}},
		{args: []string{"--config", static, "--plaintext-upstream"}, err: "--plaintext-upstream applies to --upstream and --consul, and neither is given"},
		{args: []string{"--config", consulOnly, "--plaintext-upstream"}, err: "mesh.tls.mode: plaintext"},
	} {
		cfg, err := loadFlags(t, tc.args...)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %v, want an error with %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		var plain []bool
		for _, u := range cfg.Mesh.Upstreams {
			plain = append(plain, u.Plaintext)
		}
		if cfg.Mesh.TLSMode() != tc.mode || !slices.Equal(plain, tc.plaintext) {
			t.Errorf("%q: mode %q, plaintext %v; want %q, %v", tc.args, cfg.Mesh.TLSMode(), plain, tc.mode, tc.plaintext)
		}
	}
}

// TestRoutesConsulRefused: routes is a one-shot; a Consul that refuses
// connections fails it at once, in a line.
func TestRoutesConsulRefused(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now: connection refused
	var out, errOut bytes.Buffer
	start := time.Now()
	code := run([]string{"routes", "--consul", addr}, &out, &errOut)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s; want at once", took)
	}
	if want := "portico routes: consul at " + addr + ": connection refused\n"; code != 1 || errOut.String() != want {
		t.Fatalf("exit %d, stderr %q; want 1, %q", code, errOut.String(), want)
	}
}

// TestRoutesConsulTLSMismatch runs routes against a real Consul agent with
// a plaintext orders instance and a mesh-native (mTLS) users instance:
// each mode serves the one it fits and says in words why not the other.
func TestRoutesConsulTLSMismatch(t *testing.T) {
	agent := harness.Consul(t)
	plain := harness.Services(t, []string{"orders"}, nil)
	host, port, _ := net.SplitHostPort(plain.Addr)
	p, _ := strconv.Atoi(port)
	if err := agent.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "orders-plain", Name: "orders", Tags: []string{"portico"}, Address: host, Port: p}); err != nil {
		t.Fatal(err)
	}
	users := harness.Native(t, agent, "users", harness.NativeOptions{})
	harness.WaitInstance(t, agent, "orders", "orders-plain", true)

	routes := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"routes", "--consul", agent.HTTPAddr}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, errOut := routes("--plaintext-upstream")
	if code != 1 || !strings.Contains(out, "OrderService/GetOrder") || strings.Contains(out, "UserService") {
		t.Fatalf("plaintext: exit %d, want 1 with the orders routes only\n%s%s", code, out, errOut)
	}
	want := "portico routes: consul service users: instance " + users.Server.Addr() + " closed the connection before speaking HTTP/2; does it require TLS? " +
		"Calls to it are plaintext (mesh.tls.mode: plaintext, or --plaintext-upstream)\n"
	if errOut != want {
		t.Fatalf("plaintext: stderr\n%s\nwant\n%s", errOut, want)
	}

	code, out, errOut = routes()
	if code != 1 || !strings.Contains(out, "UserService/GetUser") || strings.Contains(out, "OrderService") {
		t.Fatalf("mTLS: exit %d, want 1 with the users routes only\n%s%s", code, out, errOut)
	}
	want = "portico routes: consul service orders: instance " + plain.Addr + " does not speak TLS (it answered with a plaintext HTTP/2 SETTINGS frame, as a gRPC server without TLS does); " +
		"to call Consul services without TLS set mesh.tls.mode: plaintext (--plaintext-upstream)\n"
	if errOut != want {
		t.Fatalf("mTLS: stderr\n%s\nwant\n%s", errOut, want)
	}
}
