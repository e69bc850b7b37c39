package meshtest

import (
	"testing"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// CompileProto compiles one in-memory .proto file, as `portico lint` does:
// its imports (google/api, portico/v1, the well-known types) resolve
// against the descriptors linked into the test binary.
func CompileProto(tb testing.TB, src string) protoreflect.FileDescriptor {
	tb.Helper()
	return compileProto(tb, src, protocompile.SourceInfoNone)
}

// CompileProtoWithComments is CompileProto keeping the source info: its
// comments and positions, as a service that reflects them serves them.
func CompileProtoWithComments(tb testing.TB, src string) protoreflect.FileDescriptor {
	tb.Helper()
	return compileProto(tb, src, protocompile.SourceInfoStandard)
}

func compileProto(tb testing.TB, src string, mode protocompile.SourceInfoMode) protoreflect.FileDescriptor {
	tb.Helper()
	c := protocompile.Compiler{SourceInfoMode: mode, Resolver: protocompile.WithStandardImports(protocompile.CompositeResolver{
		&protocompile.SourceResolver{Accessor: protocompile.SourceAccessorFromMap(map[string]string{"test.proto": src})},
		protocompile.ResolverFunc(func(path string) (protocompile.SearchResult, error) {
			fd, err := protoregistry.GlobalFiles.FindFileByPath(path)
			if err != nil {
				return protocompile.SearchResult{}, err
			}
			return protocompile.SearchResult{Desc: fd}, nil
		}),
	})}
	files, err := c.Compile(tb.Context(), "test.proto")
	if err != nil {
		tb.Fatalf("compiling test.proto: %v", err)
	}
	return files[0]
}
