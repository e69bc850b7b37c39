package services

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// SlowDelay is how long a call that asks an example to be slow waits.
const SlowDelay = 2 * time.Second

// Slow makes a call of the example service sleep SlowDelay (or until it
// is cancelled) when its request carries the metadata x-demo-slow naming
// the service: a client sends the header Grpc-Metadata-X-Demo-Slow:
// orders, and a composition shows what a slow optional call does to its
// answer. Every example command and the demo run with it.
func Slow(service string) grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		if slices.Contains(md.Get("x-demo-slow"), service) {
			t := time.NewTimer(SlowDelay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		return h(ctx, req)
	})
}
