package harness

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/portico-dev/portico/mesh/meshtest"
)

// Answer answers one call of a Dynamic service.
type Answer func(md protoreflect.MethodDescriptor, req *dynamicpb.Message) (proto.Message, error)

// Dynamic serves the services of a .proto source compiled at test time
// ("test.proto", importing what Portico links): every unary call is
// answered by answer, and reflection serves that file, with its comments.
// addr "" listens on a free loopback port; a test that redeploys passes
// the previous Backend's Addr after stopping it.
func Dynamic(tb testing.TB, addr, src string, answer Answer) *Backend {
	tb.Helper()
	// Compiled with its source info, so that reflection serves comments.
	fd := meshtest.CompileProtoWithComments(tb, src)
	files := new(protoregistry.Files)
	var register func(protoreflect.FileDescriptor)
	register = func(f protoreflect.FileDescriptor) {
		if _, err := files.FindFileByPath(f.Path()); err == nil {
			return
		}
		for i := 0; i < f.Imports().Len(); i++ {
			register(f.Imports().Get(i).FileDescriptor)
		}
		if err := files.RegisterFile(f); err != nil {
			tb.Fatal(err)
		}
	}
	register(fd)
	info := map[string]grpc.ServiceInfo{}
	for i := 0; i < fd.Services().Len(); i++ {
		info[string(fd.Services().Get(i).FullName())] = grpc.ServiceInfo{}
	}
	handler := func(_ any, stream grpc.ServerStream) error {
		full, _ := grpc.MethodFromServerStream(stream)
		d, err := files.FindDescriptorByName(protoreflect.FullName(methodName(full)))
		md, ok := d.(protoreflect.MethodDescriptor)
		if err != nil || !ok {
			return status.Errorf(codes.Unimplemented, "no method %s", full)
		}
		req := dynamicpb.NewMessage(md.Input())
		if err := stream.RecvMsg(req); err != nil {
			return err
		}
		resp, err := answer(md, req)
		if err != nil {
			return err
		}
		return stream.SendMsg(resp)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnknownServiceHandler(handler))
	opts := reflection.ServerOptions{Services: serviceInfo(info), DescriptorResolver: files, ExtensionResolver: protoregistry.GlobalTypes}
	reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(opts))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	b := &Backend{Addr: lis.Addr().String(), Server: s}
	tb.Cleanup(func() {
		s.Stop()
		<-done
	})
	return b
}

// methodName turns "/pkg.Service/Method" into "pkg.Service.Method".
func methodName(full string) string {
	b := []byte(full)
	if len(b) > 0 && b[0] == '/' {
		b = b[1:]
	}
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '/' {
			b[i] = '.'
			break
		}
	}
	return string(b)
}

type serviceInfo map[string]grpc.ServiceInfo

func (s serviceInfo) GetServiceInfo() map[string]grpc.ServiceInfo { return s }
