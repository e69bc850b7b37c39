// Command orders runs the orders example service on its own until SIGINT or
// SIGTERM: plaintext gRPC with health and reflection, or, with -consul, as a
// mesh-native Consul service (mTLS with its Connect leaf certificate,
// intentions checked per call, registered with the portico tag and a gRPC
// health check on a separate plaintext port).
//
// Usage:
//
//	orders [-listen 127.0.0.1:9002] [-grace 5s] [-meta KEY=VALUE]... [-consul 127.0.0.1:8500 [-health-listen ADDR] [-advertise HOST:PORT] [-id ID]]
package main

import "github.com/portico-dev/portico/cmd/examples/internal/serve"

func main() { serve.Main("orders", "127.0.0.1:9002") }
