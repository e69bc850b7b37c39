// Command users runs the users example service on its own until SIGINT or
// SIGTERM: plaintext gRPC with health and reflection, or, with -consul, as a
// mesh-native Consul service (mTLS with its Connect leaf certificate,
// intentions checked per call, registered with the portico tag and a gRPC
// health check on a separate plaintext port).
//
// Usage:
//
//	users [-listen 127.0.0.1:9001] [-grace 5s] [-meta KEY=VALUE]... [-consul 127.0.0.1:8500 [-health-listen ADDR] [-advertise HOST:PORT] [-id ID]]
package main

import "github.com/portico-dev/portico/cmd/examples/internal/serve"

func main() { serve.Main("users", "127.0.0.1:9001") }
