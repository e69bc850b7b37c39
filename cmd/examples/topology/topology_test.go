package topology_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/portico-dev/portico/cmd/examples/topology"
)

// write puts a compose file in a temporary directory and returns its path.
func write(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "compose.yml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFromFileCountsLabelledServices(t *testing.T) {
	path := write(t, `name: t
services:
  a-1: {image: x, labels: {dev.portico.example: a}}
  a-2: {image: x, labels: {dev.portico.example: a}}
  b: {image: x, labels: {dev.portico.example: b}, scale: 3}
  c: {image: x, labels: {dev.portico.example: c}, profiles: [extra]}
  infra: {image: "${IMAGE:-y}"}
`)
	got, err := topology.FromFile(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	want := []topology.Example{{Service: "a", Instances: 2}, {Service: "b", Instances: 3}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("topology %v, want %v (services under a profile left out)", got, want)
	}
}

func TestFromFileReadsEachInstancesMeta(t *testing.T) {
	path := write(t, `name: t
services:
  a-2: {image: x, labels: {dev.portico.example: a}, command: [a, -listen, ":1", -meta=version=2, --meta, team=x=y]}
  a-1: {image: x, labels: {dev.portico.example: a}, command: [a, -meta, version=1]}
  a-3: {image: x, labels: {dev.portico.example: a}, command: [a]}
  b: {image: x, labels: {dev.portico.example: b}, scale: 2, command: [b, -meta, "zone="]}
  c: {image: x, labels: {dev.portico.example: c}, command: [c, -listen, ":1"]}
`)
	got, err := topology.FromFile(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	want := []topology.Example{
		{Service: "a", Instances: 3, Meta: []map[string]string{{"version": "1"}, {"version": "2", "team": "x=y"}, nil}},
		{Service: "b", Instances: 2, Meta: []map[string]string{{"zone": ""}, {"zone": ""}}},
		{Service: "c", Instances: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("topology %v, want %v (instances in service name order)", got, want)
	}
}

func TestLoadIgnoresTheShellEnvironment(t *testing.T) {
	t.Setenv("IMAGE", "from-the-shell")
	path := write(t, "name: t\nservices:\n  s: {image: \"${IMAGE:-default}\"}\n")
	p, err := topology.Load(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img := p.Services["s"].Image; img != "default" {
		t.Fatalf("image %q, want the file's default", img)
	}
	p, err = topology.Load(t.Context(), path, map[string]string{"IMAGE": "given"})
	if err != nil {
		t.Fatal(err)
	}
	if img := p.Services["s"].Image; img != "given" {
		t.Fatalf("image %q, want the env given to Load", img)
	}
}

func TestFromFileErrors(t *testing.T) {
	for _, tc := range []struct{ name, content, want string }{
		{"no example", "name: t\nservices:\n  s: {image: x}\n", "no service has the label"},
		{"invalid", "name: t\nservices:\n  s: {image: x, helthcheck: {}}\n", "helthcheck"},
		{"meta without =", "name: t\nservices:\n  s: {image: x, labels: {dev.portico.example: s}, command: [s, -meta, version]}\n", `service s: command: -meta "version": want key=value`},
		{"meta key twice", "name: t\nservices:\n  s: {image: x, labels: {dev.portico.example: s}, command: [s, -meta, v=1, -meta=v=2]}\n", "v is given twice"},
		{"meta without a value", "name: t\nservices:\n  s: {image: x, labels: {dev.portico.example: s}, command: [s, -meta]}\n", "-meta without a value"},
	} {
		if _, err := topology.FromFile(t.Context(), write(t, tc.content)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	if _, err := topology.FromFile(t.Context(), filepath.Join(t.TempDir(), "missing.yml")); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing file: %v", err)
	}
}
