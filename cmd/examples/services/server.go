package services

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	ordersv1 "github.com/portico-dev/portico/protos/examples/orders/v1"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
	usersv1 "github.com/portico-dev/portico/protos/examples/users/v1"
)

// Names lists the example services Register knows.
func Names() []string { return []string{"users", "orders", "products"} }

// Register adds the named example services to s, plus grpc.health.v1 (all
// SERVING) and server reflection (v1 and v1alpha). With no names it adds
// only health and reflection.
func Register(s *grpc.Server, names ...string) error {
	hs := health.NewServer()
	for _, name := range names {
		var full string
		switch name {
		case "users":
			usersv1.RegisterUserServiceServer(s, NewUsers())
			full = usersv1.UserService_ServiceDesc.ServiceName
		case "orders":
			ordersv1.RegisterOrderServiceServer(s, NewOrders())
			ordersv1.RegisterOrderAdminServer(s, ordersv1.UnimplementedOrderAdminServer{})
			full = ordersv1.OrderService_ServiceDesc.ServiceName
		case "products":
			productsv1.RegisterProductServiceServer(s, NewProducts())
			full = productsv1.ProductService_ServiceDesc.ServiceName
		default:
			return fmt.Errorf("unknown example service %q (have %v)", name, Names())
		}
		hs.SetServingStatus(full, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
