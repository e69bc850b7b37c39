// Package serve runs one example service as a standalone gRPC server; it is
// the body of the users, orders and products commands.
package serve

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"

	"github.com/portico-dev/portico/cmd/examples/services"
)

// DefaultGrace is how long Run lets in-flight calls finish after ctx ends
// before it closes what is left (long streams such as WatchUsers).
const DefaultGrace = 5 * time.Second

// Run serves the named example service (with health and reflection) on
// addr, plaintext, until ctx ends; it then stops gracefully, waiting at most
// grace for in-flight calls. It returns nil after a requested stop.
func Run(ctx context.Context, log *slog.Logger, name, addr string, grace time.Duration) error {
	s := grpc.NewServer()
	if err := services.Register(s, name); err != nil {
		return err
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("example service listening", "service", name, "addr", lis.Addr().String())

	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}

	log.Info("stopping", "service", name, "grace", grace)
	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		log.Warn("grace period over, closing remaining calls", "service", name)
		s.Stop()
		<-stopped
	}
	// Serve returns nil once Stop or GracefulStop was called.
	return <-served
}
