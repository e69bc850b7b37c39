// Package compose checks the integration environment's docker-compose.yml
// without Docker: the file loads and validates as `docker compose` would
// load it (compose-go, the Compose Specification's reference loader, with
// schema validation and consistency checks on), and its parts agree with
// each other — the edges' bind-mounted config, the published ports, the
// examples' Consul and advertise addresses, health checks, the Dockerfile's
// user, and the topology the demo derives from it. With the build tag
// compose (make compose-test) it also runs the file on a Docker engine
// (env_test.go). It is its own package so that it needs none of package
// integration's Consul setup.
package compose

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/portico-dev/portico/cmd/examples/topology"
)

const composeFile = "../../docker-compose.yml"

// configFile is the edges' config, bind-mounted from the repository.
const configFile = "cmd/examples/compose/portico.yaml"

// entriesFile is the config entries Consul loads (and the demo writes),
// bind-mounted from the repository too.
const entriesFile = "cmd/examples/compose/consul-entries.json"

func TestComposeFile(t *testing.T) {
	for _, err := range check(t.Context(), composeFile, nil) {
		t.Error(err)
	}
}

// TestComposeSharedStore: a plain `docker compose up` starts Redis and
// both Portico instances count their rate limits and keep their cache in
// it, so a limit holds across them.
func TestComposeSharedStore(t *testing.T) {
	p, err := topology.Load(t.Context(), composeFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Services[redisService]; !ok {
		t.Fatalf("service %s: not started by default", redisService)
	}
	edges := edgeServices(p)
	if len(edges) != 2 {
		t.Fatalf("%d Portico instances, want 2", len(edges))
	}
	c := &checker{}
	for _, s := range edges {
		c.dockerfile(p.Services[edges[0].Name])
		cfg, ok := c.edgeConfig(p, s)
		if !ok {
			t.Fatal(c.errs)
		}
		if cfg.Policies.RateLimit.Store != "redis" || cfg.Policies.Cache.Store != "redis" {
			t.Errorf("service %s: rate-limit store %q, cache store %q; want both redis", s.Name, cfg.Policies.RateLimit.Store, cfg.Policies.Cache.Store)
		}
	}
}

// TestComposeTopology is what `make demo` starts.
func TestComposeTopology(t *testing.T) {
	got, err := topology.FromFile(t.Context(), composeFile)
	if err != nil {
		t.Fatal(err)
	}
	want := []topology.Example{
		{Service: "accounts", Instances: 1},
		{Service: "orders", Instances: 1},
		{Service: "products", Instances: 2, Meta: []map[string]string{{"version": "1"}, {"version": "2"}}},
		{Service: "users", Instances: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("topology %v, want %v", got, want)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("topology[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	// The entries the demo writes are the ones the file's Consul loads.
	entries, err := topology.EntriesFromFile(t.Context(), composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range entries {
		kinds = append(kinds, e.GetKind()+" "+e.GetName())
	}
	if k := strings.Join(kinds, ", "); k != "service-defaults products, service-resolver products, service-splitter products" {
		t.Errorf("config entries: %s", k)
	}
}

// TestBrokenVariantsAreReported edits one thing in a copy of the file (or
// of the Dockerfile) and expects the check to report it by name, so a
// passing TestComposeFile means something.
func TestBrokenVariantsAreReported(t *testing.T) {
	compose, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	config, err := os.ReadFile("../../" + configFile)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadFile("../../" + entriesFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		file       string // "compose", "Dockerfile", "config" or "entries"
		old, new   string
		n          int    // occurrences to replace
		wantInErrs string // every one of these ;-separated parts in one error
	}{
		{"depends on a missing service", "compose",
			"    redis:\n      condition: service_healthy\n  healthcheck:", "    redis:\n      condition: service_healthy\n    vault:\n      condition: service_healthy\n  healthcheck:", 1,
			`depends on undefined service "vault"`},
		{"schema: unknown attribute", "compose",
			`"portico-2:8080"]`, `"portico-2:8080"]` + "\n    restart_policy: always", 1,
			"restart_policy"},
		{"service without a healthcheck", "compose",
			"    healthcheck:\n      <<: *health\n      test: [\"CMD\", \"redis-cli\", \"ping\"]\n", "", 1,
			"service redis;healthcheck"},
		{"advertises another instance's name", "compose",
			`"-advertise", "products-2:9003"`, `"-advertise", "products-1:9003"`, 1,
			"service products-2;-advertise"},
		{"example registers in another Consul", "compose",
			`"-consul", "consul:8500"`, `"-consul", "127.0.0.1:8500"`, 1,
			"service users;-consul"},
		{"health check probes the wrong port", "compose",
			`"grpc://127.0.0.1:9102"`, `"grpc://127.0.0.1:9002"`, 1,
			"service orders;healthcheck"},
		{"edge config points at another Consul", "config",
			"address: consul:8500", "address: 127.0.0.1:8500", 1,
			"service portico-1;mesh.consul.address"},
		{"frontend protos not in the image", "Dockerfile",
			"/etc/portico/frontends", "/etc/portico/front", 1,
			"service portico-1;edge.compose.protos_dir /etc/portico/frontends: the Dockerfile copies nothing there"},
		{"admin listener on loopback", "config",
			"admin_listen: 0.0.0.0:9901", "admin_listen: 127.0.0.1:9901", 1,
			"service portico-2;edge.admin_listen"},
		{"admin port not published", "compose",
			`ports: ["8080:8080", "9901:9901"]`, `ports: ["8080:8080"]`, 1,
			"service portico-1;ports;9901"},
		{"two instances publish one port", "compose",
			`ports: ["8081:8080", "9902:9901"]`, `ports: ["8081:8080", "9901:9901"]`, 1,
			"service portico-2;ports;9901 is portico-1's"},
		{"register address is not the service", "compose",
			`"--advertise", "portico-2:8080"`, `"--advertise", "portico-1:8080"`, 1,
			"service portico-2;--advertise"},
		{"redis address names no service", "config",
			"address: redis:6379", "address: cache:6379", 1,
			"service portico-1;policies.redis.address"},
		{"rate limits not shared", "config",
			"rate_limit:\n    store: redis", "rate_limit:\n    store: memory", 1,
			"service portico-2;rate_limit.store"},
		{"one Portico instance", "compose",
			"  portico-2:\n    <<: *edge\n    command: [\"portico\", \"serve\", \"--config\", \"/etc/portico/portico.yaml\", \"--advertise\", \"portico-2:8080\"]\n    ports: [\"8081:8080\", \"9902:9901\"]\n", "", 1,
			"1 Portico instances"},
		{"variable without a default", "compose",
			"${PORTICO_REDIS_IMAGE:-redis:7-alpine}", "${PORTICO_REDIS_IMAGE}", 1,
			"${PORTICO_REDIS_IMAGE}"},
		{"one products instance for the demo", "compose",
			`"-consul", "consul:8500", "-meta", "version=2"]`, `"-consul", "consul:8500", "-meta", "version=2"]` + "\n    profiles: [extra]", 1,
			"topology;products:1"},
		{"products-2 not in its subset", "compose",
			`"-meta", "version=2"`, `"-meta", "version=3"`, 1,
			"service consul;service-resolver products: subset v2;no example instance of products runs with -meta version=2"},
		{"malformed meta", "compose",
			`"-meta", "version=2"`, `"-meta", "version"`, 1,
			"service products-2;-meta \"version\": want key=value"},
		{"entries not mounted", "compose",
			"    volumes:\n      - ./cmd/examples/compose/consul-entries.json:/etc/consul.d/consul-entries.json:ro\n", "", 1,
			"service consul;-config-file /etc/consul.d/consul-entries.json: no bind mount"},
		{"entry with a misspelt key", "entries",
			`"DefaultSubset"`, `"DefaultSubnet"`, 1,
			"consul-entries.json;service-resolver products;unknown key .DefaultSubnet"},
		{"splitter before the protocol", "entries",
			`"Protocol": "grpc"`, `"Protocol": "tcp"`, 1,
			"service consul;service-splitter products: no service-defaults with Protocol grpc"},
		{"another split", "entries",
			`{"Weight": 90, "ServiceSubset": "v1"}`, `{"Weight": 50, "ServiceSubset": "v1"}`, 1,
			"service consul;products split map[v1:50 v2:10]"},
		{"image runs as root", "Dockerfile",
			"USER 65532:65532", "USER root", 1,
			"service portico-1;USER"},
		{"example binary not built", "Dockerfile",
			"./cmd/examples/accounts", "./cmd/examples/users", 1,
			"service accounts;./cmd/examples/accounts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c, d, cf, ce := string(compose), string(dockerfile), string(config), string(entries)
			target := &c
			switch tc.file {
			case "Dockerfile":
				target = &d
			case "config":
				target = &cf
			case "entries":
				target = &ce
			}
			if !strings.Contains(*target, tc.old) {
				t.Fatalf("the %s no longer contains %q: update this variant", tc.file, tc.old)
			}
			*target = strings.Replace(*target, tc.old, tc.new, tc.n)
			write(t, filepath.Join(dir, "docker-compose.yml"), c)
			write(t, filepath.Join(dir, "Dockerfile"), d)
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(configFile)), 0o755); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dir, configFile), cf)
			write(t, filepath.Join(dir, entriesFile), ce)

			errs := check(t.Context(), filepath.Join(dir, "docker-compose.yml"), nil)
			for _, err := range errs {
				if containsAll(err.Error(), strings.Split(tc.wantInErrs, ";")) {
					t.Logf("reported: %v", err)
					return
				}
			}
			t.Errorf("no error mentions %q; got %d:", tc.wantInErrs, len(errs))
			for _, err := range errs {
				t.Log(err)
			}
		})
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
