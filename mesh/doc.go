// Package mesh is Portico's side of the upstream network: where services
// are, how to connect to them, and what they look like.
//
// # Where it sits
//
// On the control path, [Upstreams.Reflect] asks every configured upstream
// for its services over gRPC server reflection (v1, falling back to
// v1alpha) and returns a [Snapshot]: each [Service] with its descriptor, the
// connection calls go through, and a type resolver built from the files the
// upstream sent (for google.protobuf.Any and error details).
//
// On the data path, the edge calls Invoke / NewStream on a Service's Conn:
// one grpc.ClientConn per upstream, created once and shared by every route
// table built from it.
//
// Upstreams are static in this version; Consul discovery and mTLS identities
// plug in behind the same Snapshot.
package mesh
