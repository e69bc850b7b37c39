package services

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Header makes every answer of a server carry md as response header
// metadata, which Portico forwards as Grpc-Metadata-* HTTP headers: the
// demo names the instance (x-served-by) and every example with a version
// in its Consul meta its version (x-served-version), so a split across
// instances shows in `curl -si`.
func Header(md metadata.MD) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			_ = grpc.SetHeader(ctx, md) // fails only once headers are sent, which they are not yet
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			_ = ss.SetHeader(md)
			return h(srv, ss)
		}),
	}
}

// VersionHeader is the response header metadata that names the version of
// the example that answered: the value of its Consul meta "version".
const VersionHeader = "x-served-version"
