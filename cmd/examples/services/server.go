package services

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	accountsv1 "github.com/portico-dev/portico/protos/examples/accounts/v1"
	ordersv1 "github.com/portico-dev/portico/protos/examples/orders/v1"
	productsv1 "github.com/portico-dev/portico/protos/examples/products/v1"
	usersv1 "github.com/portico-dev/portico/protos/examples/users/v1"
)

// Names lists the example services Register knows, in the order the demo
// gives them ports.
func Names() []string { return []string{"users", "orders", "products", "accounts"} }

// example is one registrable example: its gRPC services and how to add them.
type example struct {
	services []string // full names, the first one reported by health
	register func(*grpc.Server)
}

func lookup(name string) (example, bool) {
	switch name {
	case "users":
		return example{
			services: []string{usersv1.UserService_ServiceDesc.ServiceName},
			register: func(s *grpc.Server) { usersv1.RegisterUserServiceServer(s, NewUsers()) },
		}, true
	case "orders":
		return example{
			services: []string{ordersv1.OrderService_ServiceDesc.ServiceName, ordersv1.OrderAdmin_ServiceDesc.ServiceName},
			register: func(s *grpc.Server) {
				ordersv1.RegisterOrderServiceServer(s, NewOrders())
				ordersv1.RegisterOrderAdminServer(s, ordersv1.UnimplementedOrderAdminServer{})
			},
		}, true
	case "accounts":
		return example{
			services: []string{accountsv1.AccountService_ServiceDesc.ServiceName},
			register: func(s *grpc.Server) { accountsv1.RegisterAccountServiceServer(s, NewAccounts()) },
		}, true
	case "products":
		return example{
			services: []string{productsv1.ProductService_ServiceDesc.ServiceName},
			register: func(s *grpc.Server) { productsv1.RegisterProductServiceServer(s, NewProducts()) },
		}, true
	}
	return example{}, false
}

// Register adds the named example services (see Names) to s, each with a
// fresh store, plus grpc.health.v1 (every added service and "" SERVING) and
// server reflection (v1 and v1alpha). The "orders" example also brings the
// OrderAdmin service, which has no HTTP bindings. With no names it adds only
// health and reflection.
//
// Register must be called before s serves, once per server: an unknown or
// repeated name, or a service s already has, is an error and then nothing
// is registered.
func Register(s *grpc.Server, names ...string) error {
	examples, err := plan(s, names, []string{
		healthpb.Health_ServiceDesc.ServiceName,
		reflectionv1.ServerReflection_ServiceDesc.ServiceName,
		reflectionv1alpha.ServerReflection_ServiceDesc.ServiceName,
	})
	if err != nil {
		return err
	}
	hs := health.NewServer() // "" starts SERVING
	for _, ex := range examples {
		ex.register(s)
		for _, svc := range ex.services {
			hs.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
		}
	}
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return nil
}

// RegisterServices adds only the named example services, for a server that
// brings its own health and reflection (a mesh-native server). The same
// rules as Register apply.
func RegisterServices(s *grpc.Server, names ...string) error {
	examples, err := plan(s, names, nil)
	if err != nil {
		return err
	}
	for _, ex := range examples {
		ex.register(s)
	}
	return nil
}

// plan checks names and that s has none of the services about to be added.
func plan(s *grpc.Server, names, infra []string) ([]example, error) {
	examples := make([]example, 0, len(names))
	want := slices.Clone(infra)
	for i, name := range names {
		ex, ok := lookup(name)
		if !ok {
			return nil, fmt.Errorf("unknown example service %q (known: %v)", name, Names())
		}
		if slices.Contains(names[:i], name) {
			return nil, fmt.Errorf("example service %q named twice", name)
		}
		examples = append(examples, ex)
		want = append(want, ex.services...)
	}
	have := s.GetServiceInfo()
	for _, svc := range want {
		if _, ok := have[svc]; ok {
			return nil, fmt.Errorf("gRPC service %s is already registered on this server", svc)
		}
	}
	return examples, nil
}

// sleep waits d or until ctx ends, returning ctx.Err() in that case.
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
