// Command gateway is grpc-gateway v2 with its default options in front of
// the example services, generated from the same protos Portico reflects.
// The benchmark driver runs it beside Portico.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	ordersv1 "github.com/portico-dev/portico/protos/examples/orders/v1"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
	usersv1 "github.com/portico-dev/portico/protos/examples/users/v1"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "HTTP listen address")
	backend := flag.String("backend", "127.0.0.1:9001", "gRPC backend address")
	flag.Parse()
	if err := run(*listen, *backend); err != nil {
		slog.Error("gateway", "err", err)
		os.Exit(1)
	}
}

func run(listen, backend string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	conn, err := grpc.NewClient(backend, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	mux := runtime.NewServeMux()
	for _, reg := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		usersv1.RegisterUserServiceHandler, ordersv1.RegisterOrderServiceHandler, productsv1.RegisterProductServiceHandler,
	} {
		if err := reg(ctx, mux, conn); err != nil {
			return err
		}
	}
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
