// Command demo runs the local demo environment on loopback: the users,
// orders and products example services (each its own gRPC server) and
// Portico in front of them, composed exactly as `portico serve` composes it.
// It prints curl lines that work, and stops everything on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/fx"
	"google.golang.org/grpc"

	"github.com/portico-dev/portico/cmd/examples/services"
	"github.com/portico-dev/portico/cmd/portico/app"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8080", "Portico's public address")
	host := flag.String("host", "127.0.0.1", "address the example services listen on")
	firstPort := flag.Int("first-port", 9001, "port of the first example service (users); orders and products follow")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := app.DefaultConfig()
	cfg.Edge.Listen = *listen
	cfg.Log.Format = "console"
	for i, name := range services.Names() {
		addr := net.JoinHostPort(*host, fmt.Sprint(*firstPort+i))
		s, err := serve(addr, name)
		if err != nil {
			return err
		}
		defer s.GracefulStop()
		fmt.Printf("example service %-8s gRPC on %s\n", name, addr)
		cfg.Mesh.Upstreams = append(cfg.Mesh.Upstreams, app.PlaintextUpstream(addr))
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := cfg.Log.NewLogger()
	if err != nil {
		return err
	}
	a := fx.New(app.Options(cfg, log))
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.Start(startCtx); err != nil {
		return err
	}
	printTour("http://" + *listen)
	<-ctx.Done()
	fmt.Println("\nstopping…")
	stopCtx, cancelStop := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelStop()
	return a.Stop(stopCtx)
}

func serve(addr, name string) (*grpc.Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (is another demo running? try -first-port)", name, err)
	}
	s := grpc.NewServer()
	if err := services.Register(s, name); err != nil {
		_ = lis.Close()
		return nil, err
	}
	go func() { _ = s.Serve(lis) }()
	return s, nil
}

func printTour(base string) {
	fmt.Printf(`
Portico is serving on %[1]s. Try:

  curl -s %[1]s/v1/users/alice
  curl -s '%[1]s/v1/users?states=STATE_ACTIVE&pageSize=5'
  curl -s -X POST %[1]s/v1/users -H 'Content-Type: application/json' -d '{"displayName":"Carol","email":"carol@example.com"}'
  curl -s -X PATCH '%[1]s/v1/users/alice?updateMask=display_name' -H 'Content-Type: application/json' -d '{"displayName":"Alice A."}'
  curl -s %[1]s/v1/users/alice/orders/o-1001
  curl -s -X POST %[1]s/v1/orders/o-1001:cancel -H 'Content-Type: application/json' -d '{"reason":"demo"}'
  curl -s %[1]s/v1/orders/o-1001/status
  curl -sN '%[1]s/v1/orders:stream?count=5&intervalMs=300'
  curl -sN -H 'Accept: text/event-stream' '%[1]s/v1/users:watch?count=3&intervalMs=500'
  curl -s %[1]s/v1/products/p-1
  curl -s '%[1]s/v1/assets/img/logo%%2Fv2.png'
  curl -s -o /dev/null -D - %[1]s/v1/users/alice/avatar
  curl -s %[1]s/v1/debug/fail/5?message=gone
  curl -s -X POST %[1]s/v1/users -H 'Content-Type: application/json' -d '{"bogus":1}'

The route table:  go run ./cmd/portico routes --upstream 127.0.0.1:9001 --upstream 127.0.0.1:9002 --upstream 127.0.0.1:9003 --plaintext-upstream
Ctrl-C stops everything.
`, base)
}
