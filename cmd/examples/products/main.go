// Command products runs the products example service on its own until SIGINT or
// SIGTERM: plaintext gRPC with health and reflection, or, with -consul, as a
// mesh-native Consul service (mTLS with its Connect leaf certificate,
// intentions checked per call, registered with the portico tag and a gRPC
// health check on a separate plaintext port). -meta version=2 registers
// that meta in Consul, where a service-resolver subset can select it, and
// every answer carries the response header x-served-version: 2
// (docker-compose.yml runs products-1 as version 1, products-2 as 2).
//
// Usage:
//
//	products [-listen 127.0.0.1:9003] [-grace 5s] [-meta KEY=VALUE]... [-consul 127.0.0.1:8500 [-health-listen ADDR] [-advertise HOST:PORT] [-id ID]]
package main

import "github.com/portico-dev/portico/cmd/examples/internal/serve"

func main() { serve.Main("products", "127.0.0.1:9003") }
