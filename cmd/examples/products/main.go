// Command products runs the products example service on its own: plaintext gRPC with
// health checking and server reflection, until SIGINT or SIGTERM.
//
// Usage:
//
//	products [-listen 127.0.0.1:9003] [-grace 5s]
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/portico-dev/portico/cmd/examples/internal/serve"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9003", "gRPC listen address")
	grace := flag.Duration("grace", serve.DefaultGrace, "how long in-flight calls may run on after SIGINT/SIGTERM")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve.Run(ctx, log, "products", *listen, *grace); err != nil {
		log.Error("products example service failed", "err", err)
		stop()
		os.Exit(1)
	}
}
