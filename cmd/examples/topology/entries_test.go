package topology_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/portico-dev/portico/cmd/examples/topology"
)

// withEntries writes a compose file whose consul service loads config
// files, and the files (name: content) beside it.
func withEntries(t *testing.T, compose string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "compose.yml")
	if err := os.WriteFile(path, []byte(compose), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const consulCompose = `name: t
services:
  consul:
    image: c
    command: [agent, -dev, -config-file, /etc/consul.d/a.json, -config-file=/etc/entries/b.json]
    volumes:
      - ./a.json:/etc/consul.d/a.json:ro
      - .:/etc/entries:ro
`

func TestConsulEntriesFollowTheMounts(t *testing.T) {
	path := withEntries(t, consulCompose, map[string]string{
		"a.json": `{"config_entries": {"bootstrap": [
			{"Kind": "service-defaults", "Name": "p", "Protocol": "grpc"},
			{"Kind": "service-resolver", "Name": "p", "DefaultSubset": "v1", "ConnectTimeout": "3s",
			 "Subsets": {"v1": {"Filter": "Service.Meta.version == \"1\"", "OnlyPassing": false}, "v2": {"Filter": "Service.Meta.version == \"2\""}}}
		]}}`,
		"b.json": `{"config_entries": {"bootstrap": [
			{"Kind": "service-splitter", "Name": "p", "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]}
		]}}`,
	})
	got, err := topology.EntriesFromFile(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	want := []api.ConfigEntry{
		&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "p", Protocol: "grpc"},
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "p", DefaultSubset: "v1", ConnectTimeout: 3 * time.Second, Subsets: map[string]api.ServiceResolverSubset{
			"v1": {Filter: `Service.Meta.version == "1"`}, "v2": {Filter: `Service.Meta.version == "2"`},
		}},
		&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "p", Splits: []api.ServiceSplit{{Weight: 90, ServiceSubset: "v1"}, {Weight: 10, ServiceSubset: "v2"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("entries\n%#v\nwant\n%#v", got, want)
	}
}

func TestConsulEntriesNone(t *testing.T) {
	for _, compose := range []string{
		"name: t\nservices:\n  s: {image: x}\n",
		"name: t\nservices:\n  consul: {image: c, command: [agent, -dev]}\n",
	} {
		got, err := topology.EntriesFromFile(t.Context(), write(t, compose))
		if err != nil || got != nil {
			t.Errorf("%q: %v, %v; want none", compose, got, err)
		}
	}
}

func TestConsulEntriesErrors(t *testing.T) {
	ok := `{"Kind": "service-defaults", "Name": "p", "Protocol": "grpc"}`
	for _, tc := range []struct{ name, compose, a, want string }{
		{"unknown key", consulCompose, `{"Kind": "service-splitter", "Name": "p", "Splits": [{"Weight": 100, "Subset": "v1"}]}`,
			"a.json: config_entries.bootstrap[0] (service-splitter p): unknown key .Splits[0].Subset"},
		{"unknown key of a type with its own decoder", consulCompose, `{"Kind": "service-resolver", "Name": "p", "DefaultSubet": "v1"}`,
			"unknown key .DefaultSubet"},
		{"unknown kind", consulCompose, `{"Kind": "service-sliter", "Name": "p"}`, "service-sliter"},
		{"no name", consulCompose, `{"Kind": "service-defaults"}`, "bootstrap[0]: no Name"},
		{"another agent setting", consulCompose, ok + `]}, "log_level": "debug", "x": {"y": [`, "want only config_entries.bootstrap"},
		{"not mounted", strings.Replace(consulCompose, "./a.json:/etc/consul.d/a.json:ro", "./a.json:/etc/consul.d/other.json:ro", 1), ok,
			"-config-file /etc/consul.d/a.json: no bind mount"},
		{"HCL", strings.ReplaceAll(consulCompose, "a.json", "a.hcl"), ok, "only JSON agent configs are read"},
		{"config dir", strings.Replace(consulCompose, "-dev,", "-dev, -config-dir, /etc/entries,", 1), ok, "-config-dir is not read here"},
	} {
		a := `{"config_entries": {"bootstrap": [` + tc.a + `]}}`
		path := withEntries(t, tc.compose, map[string]string{"a.json": a, "a.hcl": a, "b.json": `{"config_entries": {"bootstrap": []}}`})
		if _, err := topology.EntriesFromFile(t.Context(), path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
}
