package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/portico-dev/portico/cmd/portico/app"
	"github.com/portico-dev/portico/integration/harness"
	"github.com/portico-dev/portico/policies"
)

func TestAPIKeysFromFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "keys.yaml")
	write := func(name, key string) {
		body := "- name: " + name + "\n  sha256: " + keyHash(key) + "\n  scopes: [accounts]\n"
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("acme", "first-secret")
	env := newPolicyEnv(t, func(cfg *app.Config) {
		cfg.Policies.APIKeys = []policies.APIKeySource{{Name: "partners", File: file}}
	})
	r := do(t, env.client, "GET", env.edge.URL+"/v1/whoami", "", "X-API-Key", "first-secret")
	if r.code != 200 {
		t.Fatalf("valid key: %d %s", r.code, r.body)
	}
	md := jsonOf(t, r.body)["metadata"].(map[string]any)
	if md["x-portico-subject"] != "acme" || md["x-portico-provider"] != "partners" {
		t.Fatalf("identity: %v", md)
	}
	r = do(t, env.client, "GET", env.edge.URL+"/v1/whoami", "", "X-API-Key", "guess")
	if r.code != 401 || r.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("wrong key: %d %v %s", r.code, r.header, r.body)
	}
	// Rotation: the file is rewritten; the old key stops working and the
	// new one starts, without a restart.
	write("acme", "second-secret")
	eventually(t, 10*time.Second, "new key accepted", func() bool {
		return do(t, env.client, "GET", env.edge.URL+"/v1/whoami", "", "X-API-Key", "second-secret").code == 200
	})
	if r := do(t, env.client, "GET", env.edge.URL+"/v1/whoami", "", "X-API-Key", "first-secret"); r.code != 401 {
		t.Fatalf("revoked key: %d", r.code)
	}
}

func TestAPIKeysFromConsulKV(t *testing.T) {
	t.Parallel()
	agent := harness.Consul(t)
	harness.Native(t, agent, "accounts", harness.NativeOptions{})
	put := func(name, key string) {
		v, _ := json.Marshal(map[string]any{"name": name, "sha256": keyHash(key), "scopes": []string{"accounts"}})
		if _, err := agent.Client().KV().Put(&api.KVPair{Key: "portico/api-keys/" + name, Value: v}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("globex", "kv-secret")
	e := harness.Portico(t, func(cfg *app.Config) {
		harness.ConsulConfig(agent)(cfg)
		cfg.Policies.APIKeys = []policies.APIKeySource{{Name: "kv", ConsulPrefix: "portico/api-keys/"}}
	})
	c := harness.Client(t)
	eventually(t, 20*time.Second, "key from Consul KV accepted", func() bool {
		return do(t, c, "GET", e.URL+"/v1/whoami", "", "X-API-Key", "kv-secret").code == 200
	})
	if _, err := agent.Client().KV().Delete("portico/api-keys/globex", nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "deleted key refused", func() bool {
		return do(t, c, "GET", e.URL+"/v1/whoami", "", "X-API-Key", "kv-secret").code == 401
	})
}
