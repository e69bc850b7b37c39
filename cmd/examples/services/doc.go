// Package services implements the example backends (users, orders,
// products) that the demo, the benchmarks and the end-to-end tests put
// behind Portico. They are plain gRPC services with in-memory state; their
// protos under protos/examples say what each method does.
package services
