package main

import (
	"fmt"
	"net"
	"sort"
	"strconv"

	"github.com/portico-dev/portico/cmd/examples/topology"
)

// The demo's fixed ports, which the README documents. Each falls back to a
// free port, with a line saying so, when it is taken.
const (
	consulHTTPPort = 8500 // Consul's own default
	firstSparePort = 9006 // instances examplePorts does not list, in topology order
)

// examplePorts is where each example instance listens, instance 1 first:
// the ports docker-compose.yml and the example commands (cmd/examples/users
// …) use, with the second products instance on 9005, since on one host it
// cannot share 9003 with the first.
var examplePorts = map[string][]int{
	"users":    {9001},
	"orders":   {9002},
	"products": {9003, 9005},
	"accounts": {9004},
}

// instance is one example instance the demo starts.
type instance struct {
	Service string
	N       int // 1-based
	Port    int
	Meta    map[string]string // Consul service meta, from the compose command's -meta flags
}

// ID is the instance's Consul id, also what it answers in x-served-by.
func (i instance) ID() string { return fmt.Sprintf("%s-%d", i.Service, i.N) }

// planPorts gives every instance of topo its port from examplePorts, and
// its meta; the instances the table does not list get firstSparePort and
// up, in topology order. The result is sorted by port.
func planPorts(topo []topology.Example) []instance {
	var out []instance
	spare := firstSparePort
	for _, t := range topo {
		for n := 1; n <= t.Instances; n++ {
			port := 0
			if ports := examplePorts[t.Service]; n <= len(ports) {
				port = ports[n-1]
			} else {
				port, spare = spare, spare+1
			}
			var meta map[string]string
			if n <= len(t.Meta) {
				meta = t.Meta[n-1]
			}
			out = append(out, instance{Service: t.Service, N: n, Port: port, Meta: meta})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out
}

// available reports whether host:port can be listened on now.
func available(host string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// orFree returns addr if it can be listened on now, else a free port on the
// same host, and a line saying what happened ("" when addr was free). what
// names the listener in that line.
func orFree(addr, what string) (string, string, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", "", fmt.Errorf("%s: port %q: %w", what, p, err)
	}
	if available(host, port) {
		return addr, "", nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	free := l.Addr().String()
	l.Close()
	return free, fmt.Sprintf("port %d is in use: %s listens on %s instead", port, what, free), nil
}
