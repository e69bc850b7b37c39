// Package compose checks the integration environment's docker-compose.yml
// without Docker: the file loads and validates as `docker compose` would
// load it (compose-go, the Compose Specification's reference loader, with
// schema validation and consistency checks on), and its parts agree with
// each other — Portico's inline config, the published ports, the examples'
// Consul and advertise addresses, health checks, the Dockerfile's user, and
// the topology the demo derives from it. It is its own package so that it
// needs none of package integration's Consul setup.
package compose

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portico-dev/portico/cmd/examples/topology"
	"github.com/portico-dev/portico/cmd/portico/app"
)

const composeFile = "../../docker-compose.yml"

func TestComposeFile(t *testing.T) {
	for _, err := range check(t.Context(), composeFile, nil) {
		t.Error(err)
	}
}

// TestComposeSharedRateLimits: with PORTICO_RATE_LIMIT_STORE=redis (and
// --profile shared) the edge's config switches to the Redis store and
// stays valid.
func TestComposeSharedRateLimits(t *testing.T) {
	shared := map[string]string{"PORTICO_RATE_LIMIT_STORE": "redis"}
	for _, err := range check(t.Context(), composeFile, shared) {
		t.Error(err)
	}
	for store, env := range map[string]map[string]string{"memory": nil, "redis": shared} {
		p, err := topology.Load(t.Context(), composeFile, env, "shared")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := p.Services["redis"]; !ok {
			t.Errorf("service redis: profiles: not enabled by --profile shared")
		}
		cfg := app.DefaultConfig()
		if err := app.LoadConfig(strings.NewReader(p.Configs[edgeService].Content), &cfg); err != nil {
			t.Fatal(err)
		}
		if got := cfg.Policies.RateLimit.Store; got != store {
			t.Errorf("service %s: config policies.rate_limit.store = %q with env %v, want %q", edgeService, got, env, store)
		}
	}
}

// TestComposeDefaultProfile: a plain `docker compose up` starts no Redis,
// and that is consistent (Portico's dependency on it is optional).
func TestComposeDefaultProfile(t *testing.T) {
	p, err := topology.Load(t.Context(), composeFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Services["redis"]; ok {
		t.Error("service redis: profiles: enabled without --profile shared")
	}
	if d := p.Services[edgeService].DependsOn["redis"]; d.Required {
		t.Errorf("service %s: depends_on redis: required without --profile shared", edgeService)
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
		{Service: "products", Instances: 2},
		{Service: "users", Instances: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("topology %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("topology[%d] = %v, want %v", i, got[i], want[i])
		}
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
	for _, tc := range []struct {
		name       string
		file       string // "compose" or "Dockerfile"
		old, new   string
		n          int    // occurrences to replace
		wantInErrs string // every one of these ;-separated parts in one error
	}{
		{"depends on a missing service", "compose",
			"required: false # only with --profile shared", "required: false\n      vault:\n        condition: service_healthy", 1,
			`"portico";"vault"`},
		{"schema: unknown attribute", "compose",
			"stop_grace_period: 25s", "stop_grace_period: 25s\n    restart_policy: always", 1,
			"restart_policy"},
		{"service without a healthcheck", "compose",
			"    profiles: [shared]\n    healthcheck:\n      <<: *health\n      test: [\"CMD\", \"redis-cli\", \"ping\"]\n", "    profiles: [shared]\n", 1,
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
		{"edge config points at another Consul", "compose",
			"address: consul:8500", "address: 127.0.0.1:8500", 1,
			"service portico;mesh.consul.address"},
		{"frontend protos not in the image", "Dockerfile",
			"/etc/portico/frontends", "/etc/portico/front", 1,
			"service portico;edge.compose.protos_dir /etc/portico/frontends: the Dockerfile copies nothing there"},
		{"admin listener on loopback", "compose",
			"admin_listen: 0.0.0.0:9901", "admin_listen: 127.0.0.1:9901", 1,
			"service portico;edge.admin_listen"},
		{"admin port not published", "compose",
			`ports: ["8080:8080", "9901:9901"]`, `ports: ["8080:8080"]`, 1,
			"service portico;ports;9901"},
		{"register address is not the service", "compose",
			"address: portico:8080", "address: edge:8080", 1,
			"service portico;register.address"},
		{"redis address names no service", "compose",
			"address: redis:6379", "address: cache:6379", 1,
			"service portico;policies.redis.address"},
		{"variable without a default", "compose",
			"${PORTICO_RATE_LIMIT_STORE:-memory}", "${PORTICO_RATE_LIMIT_STORE}", 1,
			"${PORTICO_RATE_LIMIT_STORE}"},
		{"one products instance for the demo", "compose",
			`"-advertise", "products-2:9003", "-consul", "consul:8500"]`, `"-advertise", "products-2:9003", "-consul", "consul:8500"]` + "\n    profiles: [extra]", 1,
			"topology;products:1"},
		{"image runs as root", "Dockerfile",
			"USER 65532:65532", "USER root", 1,
			"service portico;USER"},
		{"example binary not built", "Dockerfile",
			"./cmd/examples/accounts", "./cmd/examples/users", 1,
			"service accounts;./cmd/examples/accounts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c, d := string(compose), string(dockerfile)
			target := &c
			if tc.file == "Dockerfile" {
				target = &d
			}
			if !strings.Contains(*target, tc.old) {
				t.Fatalf("the %s no longer contains %q: update this variant", tc.file, tc.old)
			}
			*target = strings.Replace(*target, tc.old, tc.new, tc.n)
			write(t, filepath.Join(dir, "docker-compose.yml"), c)
			write(t, filepath.Join(dir, "Dockerfile"), d)

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
