package main

import (
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/portico-dev/portico/cmd/examples/topology"
)

func TestPlanPortsIsTheDocumentedTable(t *testing.T) {
	// The topology as topology.FromFile reads docker-compose.yml: sorted
	// by name, which is not the order of the ports.
	topo := []topology.Example{{Service: "accounts", Instances: 1}, {Service: "orders", Instances: 1},
		{Service: "products", Instances: 2, Meta: []map[string]string{{"version": "1"}, {"version": "2"}}}, {Service: "users", Instances: 1}}
	want := []instance{
		{"users", 1, 9001, nil}, {"orders", 1, 9002, nil}, {"products", 1, 9003, map[string]string{"version": "1"}}, {"accounts", 1, 9004, nil},
		{"products", 2, 9005, map[string]string{"version": "2"}},
	}
	if got := planPorts(topo); !reflect.DeepEqual(got, want) {
		t.Fatalf("planPorts = %v, want %v (the README's table)", got, want)
	}
}

func TestPlanPortsGivesSparePortsInTopologyOrder(t *testing.T) {
	topo := []topology.Example{{Service: "extra", Instances: 1}, {Service: "users", Instances: 2}}
	want := []instance{{"users", 1, 9001, nil}, {"extra", 1, 9006, nil}, {"users", 2, 9007, nil}}
	if got := planPorts(topo); !reflect.DeepEqual(got, want) {
		t.Fatalf("planPorts = %v, want %v", got, want)
	}
	if id := want[2].ID(); id != "users-2" {
		t.Fatalf("ID = %q", id)
	}
}

func TestOrFreeFallsBackWithALine(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taken := l.Addr().String()
	got, note, err := orFree(taken, "users-1")
	if err != nil {
		t.Fatal(err)
	}
	if got == taken || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("orFree(%s) = %s, want another loopback port", taken, got)
	}
	if _, port, _ := net.SplitHostPort(taken); !strings.Contains(note, "port "+port+" is in use: users-1 listens on "+got+" instead") {
		t.Fatalf("note %q", note)
	}
	l.Close()
	if got, note, err := orFree(taken, "users-1"); err != nil || got != taken || note != "" {
		t.Fatalf("orFree(%s) on a free port = %s, %q, %v", taken, got, note, err)
	}
	if _, _, err := orFree("127.0.0.1", "users-1"); err == nil {
		t.Fatal("an address without a port was accepted")
	}
}
