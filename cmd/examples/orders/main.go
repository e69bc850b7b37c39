// Command orders runs the orders example service on its own until SIGINT or
// SIGTERM: plaintext gRPC with health and reflection, or, with -consul, as a
// mesh-native Consul service (mTLS with its Connect leaf certificate,
// intentions checked per call, registered with the portico tag and a gRPC
// health check on a separate plaintext port).
//
// Usage:
//
//	orders [-listen 127.0.0.1:9002] [-grace 5s] [-consul 127.0.0.1:8500 [-health-listen ADDR] [-id ID]]
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/portico-dev/portico/cmd/examples/internal/serve"
)

func main() {
	o := serve.Options{Name: "orders"}
	flag.StringVar(&o.Listen, "listen", "127.0.0.1:9002", "gRPC listen address")
	flag.DurationVar(&o.Grace, "grace", serve.DefaultGrace, "how long in-flight calls may run on after SIGINT/SIGTERM")
	flag.StringVar(&o.Consul, "consul", "", "Consul agent address: run mesh-native and register there")
	flag.StringVar(&o.HealthListen, "health-listen", "", "plaintext gRPC health address for Consul's check (mesh mode; default: listen host, any port)")
	flag.StringVar(&o.ID, "id", "", "Consul instance id (mesh mode; default orders-host:port)")
	flag.Parse()

	log, err := zap.NewProduction()
	if err != nil {
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve.Run(ctx, log, o); err != nil {
		log.Error("orders example service failed", zap.Error(err))
		stop()
		os.Exit(1)
	}
}
