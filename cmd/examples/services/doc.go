// Package services implements the example backends (users, orders,
// products) that the demo, the benchmarks and the end-to-end tests put
// behind Portico. They are plain gRPC services with in-memory,
// concurrency-safe state; the comments in protos/examples say what each
// method does.
//
// NewUsers, NewOrders and NewProducts each return a fresh, seeded store:
// nothing is shared between instances. Register adds named examples to a
// *grpc.Server together with health checking and server reflection, which
// is what Portico needs to discover them:
//
//	s := grpc.NewServer()
//	if err := services.Register(s, services.Names()...); err != nil {
//		return err
//	}
//	return s.Serve(lis)
//
// Failures are gRPC statuses with messages that name the offending field or
// resource, e.g. NotFound `user "users/zed" not found`.
package services
