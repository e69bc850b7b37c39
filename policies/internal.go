package policies

import (
	"fmt"

	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// PublicView returns sd as clients see it: every field marked
// `(portico.v1.field).internal` removed from every message type the service
// uses. Transcoding against this view makes internal fields unknown to the
// edge: a client that sends one gets the same 400 as for any unknown field
// (or has it dropped with transcode.allow_unknown_fields), a path or query
// binding cannot reach one, and the upstream's value arrives as an unknown
// field on the wire that is never rendered. Nothing is copied per request.
//
// A service whose types have no internal field is returned as is.
func PublicView(sd protoreflect.ServiceDescriptor) (protoreflect.ServiceDescriptor, error) {
	files := map[string]protoreflect.FileDescriptor{}
	var order []protoreflect.FileDescriptor
	var walk func(fd protoreflect.FileDescriptor)
	walk = func(fd protoreflect.FileDescriptor) {
		if _, ok := files[fd.Path()]; ok {
			return
		}
		files[fd.Path()] = fd
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			walk(imports.Get(i).FileDescriptor)
		}
		order = append(order, fd)
	}
	walk(sd.ParentFile())

	set := &descriptorpb.FileDescriptorSet{}
	hidden := 0
	for _, fd := range order {
		fdp := protodesc.ToFileDescriptorProto(fd)
		msgs := fd.Messages()
		for i := 0; i < msgs.Len(); i++ {
			hidden += stripInternal(msgs.Get(i), fdp.MessageType[i])
		}
		set.File = append(set.File, fdp)
	}
	if hidden == 0 {
		return sd, nil
	}
	reg, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("building the public view without internal fields: %w", err)
	}
	d, err := reg.FindDescriptorByName(sd.FullName())
	if err != nil {
		return nil, err
	}
	return d.(protoreflect.ServiceDescriptor), nil
}

// stripInternal removes internal fields from mp (the proto of md) and its
// nested messages, returning how many it removed.
func stripInternal(md protoreflect.MessageDescriptor, mp *descriptorpb.DescriptorProto) int {
	n := 0
	fields := md.Fields()
	keep := mp.Field[:0]
	for i := 0; i < fields.Len(); i++ {
		if fp := fieldPolicy(fields.Get(i)); fp.GetInternal() {
			n++
			continue
		}
		keep = append(keep, mp.Field[i])
	}
	mp.Field = keep
	nested := md.Messages()
	for i := 0; i < nested.Len(); i++ {
		n += stripInternal(nested.Get(i), mp.NestedType[i])
	}
	return n
}
