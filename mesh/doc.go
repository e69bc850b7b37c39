// Package mesh is Portico's side of the upstream network: where services
// are, how to reach them securely, and what they serve.
//
// # Where it sits
//
// On the control path, the edge's builder asks each [Discovery] source to
// reflect its targets: [Upstreams] for the servers the configuration lists
// and, with Consul, the [Catalog] of services carrying the expose tag. Each
// target is asked over gRPC server reflection (v1, falling back to v1alpha)
// and yields a [Result]: a [Reflection] whose every [Service] carries its
// descriptor, the connection calls go through, and a type resolver built
// from the files the upstream sent (for google.protobuf.Any and error
// details).
//
// On the data path, the edge calls Invoke / NewStream on a Service's Conn:
// one grpc.ClientConn per upstream or Consul service, created once and
// shared by every route table built from it. A Consul service's connection
// learns its passing instances from the catalog's blocking queries through
// its own resolver, and its calls use mTLS with Portico's identity (an
// [IdentitySource]: the Consul Connect CA, or files), each instance proving
// the SPIFFE ID of its service.
//
// # Lifecycle
//
// [New] builds a [Mesh] and contacts nothing. [Mesh.Start] starts the
// identity's and the catalog's watches; [Mesh.Close] stops them, waits for
// them and closes every connection. [Mesh.Register] and [Mesh.Leave] put
// Portico itself in Consul and take it out, when the edge's start and drain
// say. [Module] does this under fx and registers [Mesh.Collectors].
//
// Package native (mesh/native) makes a Go gRPC server a mesh-native Consul
// service; package meshtest makes test certificates.
package mesh
