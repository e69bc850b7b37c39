package transcode

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/portico-dev/portico/policies/chain"
)

// Resolver finds message and extension types for Any payloads and JSON.
type Resolver = chain.Resolver

func invalidArgf(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func withGlobal(r Resolver) Resolver { return chain.WithGlobal(r) }
