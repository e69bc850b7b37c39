package mesh

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/jhump/protoreflect/v2/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Service is one gRPC service found on an upstream.
type Service struct {
	Name     protoreflect.FullName
	Desc     protoreflect.ServiceDescriptor
	Upstream string
	// Conn carries calls to the service.
	Conn grpc.ClientConnInterface
	// Types resolves messages and extensions from the upstream's files.
	Types *dynamicpb.Types
}

// Reflection describes what one upstream serves.
type Reflection struct {
	Upstream string
	Services []*Service
	// Hash identifies the descriptor set; equal hashes mean nothing changed.
	Hash string
}

// infrastructure services are never exposed.
func infrastructure(name string) bool {
	return strings.HasPrefix(name, "grpc.reflection.") || name == "grpc.health.v1.Health" ||
		strings.HasPrefix(name, "grpc.channelz.")
}

// reflect lists and resolves every service of one upstream.
func reflectUpstream(ctx context.Context, addr string, conn grpc.ClientConnInterface) (*Reflection, error) {
	client := grpcreflect.NewClientAuto(ctx, conn)
	defer client.Reset()
	names, err := client.ListServices()
	if err != nil {
		if e := explained(err); e != nil {
			return nil, e // names the upstream, the instance and the setting
		}
		return nil, fmt.Errorf("reflection on %s: listing services: %w", addr, err)
	}
	slices.Sort(names)
	files := map[string]protoreflect.FileDescriptor{}
	var sds []protoreflect.ServiceDescriptor
	for _, name := range names {
		if infrastructure(string(name)) {
			continue
		}
		sd, err := resolveService(client, name)
		if err != nil {
			return nil, fmt.Errorf("reflection on %s: resolving %s: %w", addr, name, err)
		}
		sds = append(sds, sd)
		collectFiles(sd.ParentFile(), files)
	}
	reg := new(protoregistry.Files)
	h := sha256.New()
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fd := files[k]
		if err := reg.RegisterFile(fd); err != nil {
			return nil, fmt.Errorf("reflection on %s: file %s: %w", addr, k, err)
		}
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(protodesc.ToFileDescriptorProto(fd))
		if err != nil {
			return nil, err
		}
		h.Write([]byte(k))
		h.Write(raw)
	}
	types := dynamicpb.NewTypes(reg)
	out := &Reflection{Upstream: addr, Hash: hex.EncodeToString(h.Sum(nil))}
	for _, sd := range sds {
		out.Services = append(out.Services, &Service{
			Name:     sd.FullName(),
			Desc:     sd,
			Upstream: addr,
			Conn:     conn,
			Types:    types,
		})
	}
	return out, nil
}

// resolveService fetches the file that declares name and returns the
// service in it.
func resolveService(client *grpcreflect.Client, name protoreflect.FullName) (protoreflect.ServiceDescriptor, error) {
	fd, err := client.FileContainingSymbol(name)
	if err != nil {
		return nil, err
	}
	sd, ok := findService(fd, name)
	if !ok {
		return nil, fmt.Errorf("service not found: %s is not a service in %s", name, fd.Path())
	}
	return sd, nil
}

func findService(fd protoreflect.FileDescriptor, name protoreflect.FullName) (protoreflect.ServiceDescriptor, bool) {
	if fd.Package() != name.Parent() {
		return nil, false
	}
	sd := fd.Services().ByName(name.Name())
	return sd, sd != nil
}

func collectFiles(fd protoreflect.FileDescriptor, into map[string]protoreflect.FileDescriptor) {
	if _, ok := into[fd.Path()]; ok {
		return
	}
	into[fd.Path()] = fd
	imports := fd.Imports()
	for i := range imports.Len() {
		collectFiles(imports.Get(i).FileDescriptor, into)
	}
}
