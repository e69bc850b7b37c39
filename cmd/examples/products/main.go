// Command products runs the products example service on its own, plaintext gRPC with
// health and reflection, until SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"

	"github.com/portico-dev/portico/cmd/examples/services"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9003", "gRPC listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		slog.Error("listen", "addr", *listen, "err", err)
		os.Exit(1)
	}
	s := grpc.NewServer()
	if err := services.Register(s, "products"); err != nil {
		slog.Error("register", "err", err)
		os.Exit(1)
	}
	go func() {
		<-ctx.Done()
		s.GracefulStop()
	}()
	slog.Info("products example service listening", "addr", lis.Addr().String())
	if err := s.Serve(lis); err != nil {
		slog.Error("serve", "err", err)
		os.Exit(1)
	}
}
